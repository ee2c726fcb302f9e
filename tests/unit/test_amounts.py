"""`parse_u128`: the one reading of a u128 amount (daemons/core/amounts.py)."""

from __future__ import annotations

import string
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.core.amounts import U128_MAX, parse_u128


def test_the_bounds() -> None:
    assert U128_MAX == 2**128 - 1
    assert parse_u128("0") == 0
    assert parse_u128(str(U128_MAX)) == U128_MAX
    with pytest.raises(ValueError, match="range"):
        parse_u128(str(U128_MAX + 1))
    with pytest.raises(ValueError, match="range"):
        parse_u128("9" * 5000)  # refused before int() is asked (its own limit is 4300 digits)


def test_leading_zeros_are_allowed() -> None:
    assert parse_u128("007") == 7
    assert parse_u128("0" * 60 + str(U128_MAX)) == U128_MAX
    assert parse_u128("0" * 60) == 0


@pytest.mark.parametrize(
    "bad",
    ["", " 1", "1 ", "\t1", "+1", "-1", "-0", "1_000", "1e3", "1E3", "1.0", "1.", "0x10", "١٢", "²", "１", "NaN"],
)
def test_refuses_every_other_string(bad: str) -> None:
    with pytest.raises(ValueError, match="decimal digits"):
        parse_u128(bad)


def test_zero_only_when_allowed() -> None:
    assert parse_u128("0") == 0
    assert parse_u128("1", positive=True) == 1
    with pytest.raises(ValueError, match="positive"):
        parse_u128("0", positive=True)
    with pytest.raises(ValueError, match="positive"):
        parse_u128("000", positive=True)
    with pytest.raises(ValueError, match="positive"):
        parse_u128(0, positive=True, allow_int=True)


def test_a_json_integer_only_when_allowed() -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_u128(5)
    assert parse_u128(5, allow_int=True) == 5
    assert parse_u128(U128_MAX, allow_int=True) == U128_MAX
    with pytest.raises(ValueError, match="range"):
        parse_u128(U128_MAX + 1, allow_int=True)
    with pytest.raises(ValueError, match="negative"):
        parse_u128(-1, allow_int=True)


@pytest.mark.parametrize("bad", [True, False, 1.0, 1.5, float("nan"), None, Decimal(1), b"1", [1], {"a": 1}])
@pytest.mark.parametrize("allow_int", [False, True])
def test_refuses_other_types_with_a_value_error(bad: object, allow_int: bool) -> None:
    with pytest.raises(ValueError):  # never TypeError: a pydantic validator must see ValueError
        parse_u128(bad, allow_int=allow_int)


@given(st.integers(min_value=0, max_value=U128_MAX), st.integers(min_value=0, max_value=5))
def test_round_trips_every_u128(n: int, zeros: int) -> None:
    text = "0" * zeros + str(n)
    assert parse_u128(text) == n
    assert parse_u128(n, allow_int=True) == n
    if n:
        assert parse_u128(text, positive=True) == n


@given(st.integers().filter(lambda n: not 0 <= n <= U128_MAX))
def test_refuses_every_integer_outside_u128(n: int) -> None:
    with pytest.raises(ValueError):
        parse_u128(n, allow_int=True)
    with pytest.raises(ValueError):
        parse_u128(str(n))


@given(st.one_of(st.text(max_size=45), st.text(alphabet=string.digits + " +-_.e", max_size=45)))
def test_any_text_is_digits_read_exactly_or_refused(text: str) -> None:
    digits = text != "" and all(c in string.digits for c in text)
    try:
        n = parse_u128(text)
    except ValueError:
        assert not digits or int(text) > U128_MAX
    else:
        assert digits and n == int(text) <= U128_MAX
