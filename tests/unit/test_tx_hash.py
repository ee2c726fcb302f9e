"""`normalize_tx_hash`: one name for a transfer however it was typed (daemons/core/tx_hash.py),
as liquidity-manager and inventory-sync both match the POA bridge's deposits with it."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.core.tx_hash import normalize_tx_hash


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("0xABCDEF", "0xabcdef"),
        ("0xABCdef", "0xabcdef"),
        ("0XAbC", "0xabc"),
        ("  ab12  ", "ab12"),
        ("  ABCDEF01 ", "abcdef01"),
        ("AB12", "ab12"),
        ("5x9Zq", "5x9Zq"),  # not hex (a base58 hash): as typed
        ("NearTxBase58Zz", "NearTxBase58Zz"),
        ("0xZZ", "0xZZ"),
        ("0xnothex", "0xnothex"),
        ("0x", "0x"),
        ("", ""),
    ],
)
def test_tx_hashes_normalise(typed: str, normal: str) -> None:
    assert normalize_tx_hash(typed) == normal


@given(st.text(max_size=80))
def test_normalising_twice_changes_nothing(typed: str) -> None:
    once = normalize_tx_hash(typed)
    assert normalize_tx_hash(once) == once


@given(st.text(alphabet=string.hexdigits, min_size=1, max_size=66), st.sampled_from(["", "0x", "0X"]))
def test_a_hex_hash_is_one_name_whatever_its_case_and_prefix_case(body: str, prefix: str) -> None:
    typed = f" {prefix}{body}\t"
    assert normalize_tx_hash(typed) == ("0x" if prefix else "") + body.lower()
    assert normalize_tx_hash(typed.upper()) == normalize_tx_hash(typed.lower())
