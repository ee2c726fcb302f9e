"""The ceilings file: only a root-owned file nobody else may write is read, on one descriptor,
and every asset of the pair must be bounded."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, ActivePair
from daemons.core.ceilings import CeilingsError, load_ceilings
from tests.conftest import REPO

PAIR = ActivePair()
LOCAL = (REPO / "config" / "ceilings.local.toml").read_text()


def _file(tmp_path: Path, text: str = LOCAL, mode: int = 0o644) -> Path:
    path = tmp_path / "ceilings.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_local_file_reads_in_base_units(tmp_path: Path) -> None:
    c = load_ceilings(_file(tmp_path), PAIR)
    assert c.min_edge_pct == Decimal("1.0") and c.max_notional_eure_per_answer == Decimal("500")
    assert c.give_per_answer(PAIR, NBTC_ID) == 1_000_000  # 0.01 BTC
    assert c.give_per_answer(PAIR, EURE_ID) == 500 * 10**18
    assert c.live_exposure(PAIR, NBTC_ID) == 5 * 10**8


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another owner")
def test_a_file_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(CeilingsError, match="owned by uid 65534; it must be owned by root"):
        load_ceilings(path, PAIR)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(CeilingsError, match=f"mode {mode:04o}"):
        load_ceilings(_file(tmp_path, mode=mode), PAIR)


def test_a_symlink_missing_file_or_directory_is_refused(tmp_path: Path) -> None:
    target = _file(tmp_path)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    with pytest.raises(CeilingsError, match="a symlink is refused"):
        load_ceilings(link, PAIR)
    with pytest.raises(CeilingsError, match="does not exist"):
        load_ceilings(tmp_path / "absent.toml", PAIR)
    with pytest.raises(CeilingsError, match="not a regular file"):
        load_ceilings(tmp_path, PAIR)


@pytest.mark.parametrize(
    "text, words",
    [
        (LOCAL.replace('EURe = "500"\n', "", 1), "[max_give_per_answer] has no EURe"),
        (
            LOCAL.replace('max_notional_eure_per_answer = "500"', 'max_notional_eure_per_answer = "0"'),
            "max_notional_eure_per_answer: Input should be greater than 0",
        ),
        (LOCAL.replace('BTC = "5"', 'BTC = "-1"'), "BTC must be positive"),
        ("surprise = 1\n" + LOCAL, "surprise: Extra inputs are not permitted"),
        ("min_edge_pct = [", "not valid TOML"),
    ],
)
def test_content_errors_name_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(CeilingsError) as err:
        load_ceilings(_file(tmp_path, text), PAIR)
    assert words in str(err.value)
