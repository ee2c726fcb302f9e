"""qlctl funding / withdraw / withdrawals against a running liquidity-manager and its simulators."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from daemons.core.assets import EURE_ID
from tests.conftest import Stack
from tests.integration.test_liquidity_manager import Harness
from tests.integration.test_qlctl import qlctl


@pytest.fixture
async def lm(stack: Stack, control_dir: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(stack, control_dir, tmp_path)
    await h.start_sims()
    await h.start()
    yield h
    await h.stop()
    for sim in (h.poa, h.relay, h.near):
        if sim is not None:
            await sim.stop()


async def test_funding_record_list_and_freeze_through_qlctl(stack: Stack, control_dir: Path, lm: Harness) -> None:
    code, out, err = await qlctl(stack, control_dir, "funding", "addresses", "--json")
    assert code == 0, err
    tx = "0x" + uuid.uuid4().hex * 2
    code, out, err = await qlctl(
        stack,
        control_dir,
        "funding",
        "record",
        "--asset",
        EURE_ID,
        "--tx-hash",
        tx,
        "--units",
        "100",
        "--wallet",
        "gnosis-treasury",
        "--json",
    )
    assert code == 0, err
    code, out, _ = await qlctl(stack, control_dir, "funding", "list", "--pending", "--json")
    assert code == 0 and any(r["tx_hash"] == tx for r in orjson.loads(out))
    code, _, err = await qlctl(
        stack, control_dir, "funding", "record", "--asset", EURE_ID, "--tx-hash", tx, "--units", "100"
    )
    assert code == 1 and "duplicate" in err.lower()
    code, _, err = await qlctl(stack, control_dir, "funding", "record", "--asset", EURE_ID, "--tx-hash", tx)
    assert code == 2 and "exactly one of --amount" in err

    code, out, _ = await qlctl(stack, control_dir, "withdrawals", "freeze", "--reason", "drill", "--json")
    assert code == 0 and orjson.loads(out)["withdrawals_frozen"] is True
    code, _, err = await qlctl(
        stack,
        control_dir,
        "withdraw",
        "request",
        "--asset",
        EURE_ID,
        "--wallet",
        "gnosis-treasury",
        "--units",
        "1",
        "--yes",
    )
    assert code == 1 and "409" not in err and "frozen" in err.lower()
    code, out, _ = await qlctl(stack, control_dir, "withdrawals", "unfreeze", "--json")
    assert code == 0 and orjson.loads(out)["withdrawals_frozen"] is False


async def test_liquidity_manager_down_fails_visibly(stack: Stack, control_dir: Path) -> None:
    for args in (("funding", "list"), ("withdraw", "list"), ("withdrawals", "freeze")):
        code, _, err = await qlctl(stack, control_dir, *args)
        assert code == 1 and "liquidity-manager is not running" in err, args
