"""qlctl reports straight from PostgreSQL, over rows written by the history-writer's own path."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from daemons.core.bus import Delivery
from daemons.core.events import Producer, encode, new_event, now_utc
from daemons.history_writer.store import write_batch
from tests.conftest import Stack
from tests.integration.test_qlctl import qlctl
from tests.samples import sample_payloads

SRC = Producer(service="test", instance="t")


async def store(pool: asyncpg.Pool, events: list[Any]) -> None:
    deliveries = [Delivery(e.event_type, 0, -1 - i, None, encode(e), e, None) for i, e in enumerate(events)]
    await write_batch(pool, "test", f"reports-{uuid.uuid4()}", deliveries)


async def test_chain_skipped_inventory_latency_and_funding(stack: Stack, control_dir: Path, pool: asyncpg.Pool) -> None:
    s = sample_payloads()
    t0 = now_utc()
    qid = f"q-{uuid.uuid4()}"
    demand = s["norm.swap_demand"].model_copy(update={"quote_id": qid, "received_at": t0})
    price = new_event(s["ref.market_price"], producer=SRC, pair="BTC/EURe")
    inv = new_event(s["state.intent_inventory"], producer=SRC, pair="BTC/EURe")
    decision = s["decision.trade_decision"].model_copy(
        update={
            "quote_id": qid,
            "decision": "execute",
            "decision_reason": "EXECUTE",
            "price_event_id": price.event_id,
            "inventory_snapshot_id": inv.payload.inventory_id,
            "request_received_at": t0,
            "decided_at": t0 + timedelta(milliseconds=2),
        }
    )
    command = s["cmd.execute_trade"].model_copy(update={"quote_id": qid, "decision_id": decision.decision_id})
    result = s["exec.trade_result"].model_copy(
        update={
            "quote_id": qid,
            "command_id": command.command_id,
            "status": "acknowledged",
            "reason": None,
            "command_received_at": t0 + timedelta(milliseconds=4),
            "signed_at": t0 + timedelta(milliseconds=5),
            "sent_at": t0 + timedelta(milliseconds=6),
            "venue_answered_at": t0 + timedelta(milliseconds=9),
        }
    )
    over = s["exec.trade_result"].model_copy(
        update={
            "quote_id": f"q-{uuid.uuid4()}",
            "status": "refused",
            "reason_code": "over_exposure_ceiling",
            "reason": "live answers would give too much",
        }
    )
    venue = s["exec.trade_result"].model_copy(
        update={
            "quote_id": f"q-{uuid.uuid4()}",
            "status": "rejected",
            "reason_code": "INSUFFICIENT_BALANCE",
            "reason": "insufficient balance",
        }
    )
    skipped_qid = f"q-{uuid.uuid4()}"
    skipped = s["decision.trade_decision"].model_copy(
        update={"quote_id": skipped_qid, "decision_reason": "PRICE_STALE"}
    )
    events = [
        new_event(demand, producer=SRC, pair="BTC/EURe"),
        price,
        inv,
        *(new_event(p, producer=SRC, pair="BTC/EURe") for p in (decision, command, result, skipped, over, venue)),
    ]
    await store(pool, events)

    code, out, err = await qlctl(stack, control_dir, "report", "chain", qid, "--json")
    assert code == 0, err
    chain = orjson.loads(out)
    assert chain["decisions"][0]["price_event_id"] == str(price.event_id)
    assert chain["decisions"][0]["inventory_snapshot_id"] == inv.payload.inventory_id
    assert chain["commands"][0]["payload"]["command_id"] == command.command_id
    assert chain["results"][0]["payload"]["status"] == "acknowledged"
    stages = {st["stage"]: st["ms_since_previous"] for st in chain["stages"]}
    assert stages["decided"] == 2.0 and stages["sent to relay"] == 1.0 and stages["venue answered"] == 3.0

    code, out, _ = await qlctl(stack, control_dir, "report", "skipped", "--since", "1h", "--json")
    by_reason = {r["decision_reason"]: r for r in orjson.loads(out)}
    assert code == 0 and by_reason["PRICE_STALE"]["n"] >= 1

    code, out, _ = await qlctl(stack, control_dir, "report", "refusals", "--since", "1h", "--json")
    by_code = {r["reason_code"]: r for r in orjson.loads(out)}
    assert code == 0 and by_code["over_exposure_ceiling"]["source"] == "executor"
    assert by_code["INSUFFICIENT_BALANCE"]["source"] == "venue" and by_code["INSUFFICIENT_BALANCE"]["n"] >= 1

    code, out, _ = await qlctl(stack, control_dir, "report", "inventory", "--json")
    assert code == 0 and "assets" in orjson.loads(out)
    code, out, _ = await qlctl(stack, control_dir, "report", "latency", "--since", "1h", "--json")
    assert code == 0 and any(r["stage"] == "executor → sent" for r in orjson.loads(out))
    code, out, _ = await qlctl(stack, control_dir, "report", "funding", "--pending", "--json")
    assert code == 0 and isinstance(orjson.loads(out), list)


async def test_clear_errors(stack: Stack, control_dir: Path) -> None:
    code, _, err = await qlctl(stack, control_dir, "report", "chain", f"q-{uuid.uuid4()}")
    assert code == 1 and "no record of quote" in err
    code, _, err = await qlctl(stack, control_dir, "report", "skipped", "--since", "soon")
    assert code == 1 and "bad duration" in err
    code, _, err = await qlctl(
        stack,
        control_dir,
        "report",
        "skipped",
        extra_env={"QL_DATABASE_URL": "postgresql://quoteloop@127.0.0.1:1/quoteloop"},
    )
    assert code == 1 and "PostgreSQL is not reachable" in err
