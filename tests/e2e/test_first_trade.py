"""The first-trade validation target (runbooks/first-trade.md), end to end on the simulators, the real Kafka and
PostgreSQL: one active-pair quote is priced, checked against credited inventory, decided, gated, answered
with a signed NEP-413 intent, settled by the simulated taker, and the whole chain is in
PostgreSQL. All seven daemons run, each through the shared runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.strategy_engine.service import StrategyEngine
from qlctl.first_trade import Walk
from qlctl.reports import Reports
from tests.conftest import Stack, eventually
from tests.seven import BTC_FUNDED, EURE_FUNDED, Seven, seven_daemons

JWT = "jwt-generated-for-this-test"


@pytest.fixture
async def loop(stack: Stack, control_dir: Path, tmp_path: Path) -> AsyncIterator[Seven]:
    async with seven_daemons(stack, control_dir, tmp_path, jwt=JWT) as seven:
        yield seven


async def test_one_quote_from_request_to_settlement_with_the_chain_in_postgres(
    loop: Seven, stack: Stack, pool: asyncpg.Pool
) -> None:
    strategy = loop.services["strategy-engine"]
    assert isinstance(strategy, StrategyEngine)

    await eventually(
        loop.ready_to_answer,
        timeout=60,
        what="fresh price, our inventory (strategy and executor) and the relay connection",
    )
    for service in ("strategy-engine", "trade-executor"):
        status, body = await loop.call(service, "POST", "/arm", {"operator": "e2e", "reason": "first trade"})
        assert status == 200 and body["armed"] is True, body

    # a taker pays 3 EURe for nBTC: quoteloop gives BTC (SELL_BTC)
    quote = await loop.relay.emit_quote(
        asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=3 * 10**18, min_deadline_ms=60_000
    )
    qid = quote["quote_id"]

    async def statuses() -> list[str] | None:
        rows = await pool.fetch(
            "SELECT status FROM trade_execution_results WHERE quote_id = $1 ORDER BY observed_at", qid
        )
        found = [r["status"] for r in rows]
        return found if "settled" in found else None

    found = await eventually(statuses, timeout=60, what="settled result stored in PostgreSQL")
    assert found[0] == "acknowledged" and found[-1] == "settled"

    async with Reports(stack.database_url) as reports:
        chain = await reports.chain(qid)
    [decision] = chain["decisions"]
    assert decision["decision"] == "execute" and decision["decision_reason"] == "EXECUTE"
    assert decision["price_event_id"] is not None and decision["inventory_snapshot_id"] is not None
    assert decision["event"]["payload"]["protocol_fee_pips"] == loop.verifier.fee()  # recorded beside the edge
    assert len(chain["request"]) == 1 and len(chain["demand"]) == 1 and len(chain["commands"]) == 1
    command = chain["commands"][0]["payload"]
    settled = chain["results"][-1]["payload"]
    assert settled["quote_hash"] and settled["tx_hash"] and settled["intent_hash"]
    stages = [s["stage"] for s in chain["stages"]]
    assert stages[:2] == ["request received", "decided"] and "sent to relay" in stages

    # the simulated verifier moved exactly the answer's amounts
    assert loop.verifier.balance(loop.account, NBTC_ID) == BTC_FUNDED - int(command["amount_out"])
    assert loop.verifier.balance(loop.account, EURE_ID) == EURE_FUNDED + int(command["amount_in"])
    # and exactly one answer reached the relay
    answers = [s for s in loop.relay.seen if s["kind"] == "ws_in" and '"quote_response"' in s.get("text", "")]
    assert len(answers) == 1


async def test_the_first_trade_walk_of_make_run(loop: Seven, stack: Stack) -> None:
    """The same checklist `make run` walks (qlctl/first_trade.py), step by step."""

    lines: list[str] = []
    walk = Walk(
        loop.control_dir,
        stack.database_url,
        loop.relay.base_url,
        loop.poa.base_url,
        loop.account,
        say=lines.append,
        timeout_s=60,
    )
    quote_id = await walk.run()
    text = "\n".join(lines)
    for step in (
        "disarmed",
        "decisionable price",
        "inventory fresh",
        "requested to credited",
        "rejected while disarmed (reason DISARMED)",
        "armed",
        "command emitted",
        "settled",
        "chain is in PostgreSQL",
        "disarmed again",
    ):
        assert step in text, (step, text)
    assert quote_id in text
    strategy = loop.services["strategy-engine"]
    assert isinstance(strategy, StrategyEngine) and strategy.arm.armed is False
