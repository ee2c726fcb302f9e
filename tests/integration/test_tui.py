"""The Textual monitor driven by Textual's pilot against real daemons run in-process (history-writer
and strategy-engine on the real Kafka and PostgreSQL, which one test stops and starts again): keys
pressed, screen contents asserted, and the daemons' own state checked after each confirmed or
cancelled control."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.bus import Delivery, EventProducer
from daemons.core.events import (
    AssetInventory,
    IntentInventory,
    MarketPrice,
    Producer,
    SwapDemand,
    TradeDecision,
    encode,
    new_event,
    now_utc,
)
from daemons.core.runtime import serve
from daemons.core.settings import CoreSettings
from daemons.history_writer.service import HistoryWriter
from daemons.history_writer.store import write_batch
from daemons.strategy_engine.service import StrategyEngine, StrategySettings
from qlctl.client import SERVICES, ControlClient
from qlctl.tui.app import MonitorApp
from qlctl.tui.confirm import Confirmation, ConfirmScreen
from qlctl.tui.plans import Plan, plan
from qlctl.tui.source import MonitorSource
from tests.conftest import Stack, eventually

SRC = Producer(service="tui-test", instance="t")
PAIR = "BTC/EURe"
OPERATOR = "carol"


# --- daemons ---------------------------------------------------------------------------------------


@pytest.fixture
async def engine(stack: Stack, control_dir: Path) -> AsyncIterator[StrategyEngine]:
    settings = StrategySettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=stack.database_url,
        control_dir=control_dir,
        instance=f"t-{uuid.uuid4().hex[:6]}",
    )
    service = StrategyEngine(settings)
    # a fresh consumer group, so the engine starts at the topics' end
    service.consumer = type(service.consumer)(
        settings, f"tui-strategy-{uuid.uuid4()}", service.consumer.topics, on_assigned=service._assigned
    )
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(
        lambda: service.consumer.assignment() and service.consumer.positioned.is_set(),
        what="strategy assigned and positioned",
    )
    service.reservations.clear()  # earlier tests' commands on the shared bus are not ours
    yield service
    service.request_drain()
    assert await asyncio.wait_for(task, timeout=30) == 0


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[EventProducer]:
    p = EventProducer(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap), client_id="tui-test")
    await p.start()
    yield p
    await p.stop()


# --- the monitor -----------------------------------------------------------------------------------


@asynccontextmanager
async def monitor(control_dir: Path, database_url: str) -> AsyncIterator[tuple[MonitorApp, Pilot[None]]]:
    source = MonitorSource(
        ControlClient(control_dir, timeout_s=5.0), database_url, decisions_shown=10, db_timeout_s=5.0, db_retry_s=0.5
    )
    app = MonitorApp(source, refresh_s=0.2, operator=OPERATOR)
    async with app.run_test(size=(200, 60)) as pilot:
        await refreshed(app)
        yield app, pilot


async def refreshed(app: MonitorApp) -> None:
    """Wait for a read that started after this call (the one in flight may be older)."""
    target = app.refreshes + 2
    await eventually(lambda: app.refreshes >= target, what="a fresh refresh")


def row(app: MonitorApp, table: str, key: str) -> list[str]:
    return [c.plain for c in app.query_one(f"#{table}", DataTable).get_row(key)]


def rows(app: MonitorApp, table: str) -> list[list[str]]:
    t = app.query_one(f"#{table}", DataTable)
    return [[c.plain for c in t.get_row_at(i)] for i in range(t.row_count)]


def screen_text(app: App[Any]) -> str:
    """What the terminal shows now, as text (the same rendering the SVG screenshot uses)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def select(pilot: Pilot[None], app: MonitorApp, service: str) -> None:
    for _ in range(len(SERVICES)):
        await pilot.press("up")
    for _ in range(SERVICES.index(service)):
        await pilot.press("down")
    assert app.selected_service() == service


async def type_text(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*("space" if ch == " " else ch for ch in text))


# --- tests -----------------------------------------------------------------------------------------


async def test_shows_the_running_daemon_and_the_absent_ones_then_the_one_that_stops(
    stack: Stack, control_dir: Path, writer: tuple[HistoryWriter, asyncio.Task[int]]
) -> None:
    service, task = writer
    async with monitor(control_dir, stack.database_url) as (app, pilot):
        hw = row(app, "daemons", "history-writer")
        assert hw[1:4] == ["yes", "ok", "running"] and "postgres✓" in hw[5] and hw[6] == "authoritative"
        for other in set(SERVICES) - {"history-writer"}:
            assert row(app, "daemons", other)[1] == "NOT RUNNING", other
        alerts = rows(app, "alerts")
        assert ["WARN", "strategy-engine", "not running"] in alerts
        assert not any(a[1] == "history-writer" for a in alerts)
        text = screen_text(app)
        assert "history-writer" in text and "NOT RUNNING" in text and "Latest requests and decisions" in text

        # a control key on a daemon that is not running is refused on the spot, no confirmation
        await select(pilot, app, "trade-executor")
        await pilot.press("p")
        assert len(app.screen_stack) == 1 and "trade-executor is not running" in app.last_message

        # the daemon going away shows as such; the monitor keeps running
        service.request_drain()
        assert await asyncio.wait_for(task, timeout=30) == 0
        await eventually(
            lambda: row(app, "daemons", "history-writer")[1] == "NOT RUNNING", what="history-writer shown as stopped"
        )
        await refreshed(app)
        assert app.is_running


async def test_arm_goes_through_the_confirmation_and_cancel_sends_nothing(
    stack: Stack, control_dir: Path, engine: StrategyEngine
) -> None:
    async with monitor(control_dir, stack.database_url) as (app, pilot):
        assert row(app, "daemons", "strategy-engine")[4] == "disarmed"
        await select(pilot, app, "strategy-engine")

        # cancelled: nothing is sent, the engine stays disarmed
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        assert len(app.screen_stack) == 1 and "cancelled" in app.last_message
        await refreshed(app)
        assert engine.arm.armed is False and row(app, "daemons", "strategy-engine")[4] == "disarmed"

        # the confirmation says what will be armed and the caps in force
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert "ARM strategy-engine?" in screen.plan_text
        assert "threshold 2.0 %" in screen.plan_text and "notional 1 .. 5 EURe" in screen.plan_text
        assert "trade-executor is not running" in screen.plan_text
        shown = screen_text(app)
        assert "ARM strategy-engine?" in shown and "Reason (required, audited)" in shown

        # a reason is required: Enter on an empty reason keeps the screen open
        await pilot.press("enter")
        assert app.screen is screen and "a reason is required to arm" in screen_text(app)
        assert engine.arm.armed is False

        await type_text(pilot, "tui smoke test")
        await pilot.press("enter")
        await eventually(lambda: engine.arm.armed, what="strategy armed through the TUI")
        assert (engine.arm.changed_by, engine.arm.change_reason) == (OPERATOR, "tui smoke test")
        await eventually(lambda: row(app, "daemons", "strategy-engine")[4] == "ARMED", what="ARMED shown")
        assert "strategy-engine: arm accepted as carol" in app.last_message

        # disarm: cancelled first, then confirmed without a reason (optional for disarm)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen) and "Disarm strategy-engine?" in app.screen.plan_text
        await pilot.press("escape")
        await refreshed(app)
        assert engine.arm.armed is True
        await pilot.press("d")
        await pilot.press("enter")
        await eventually(lambda: not engine.arm.armed, what="strategy disarmed through the TUI")
        assert engine.arm.changed_by == OPERATOR
        await eventually(lambda: row(app, "daemons", "strategy-engine")[4] == "disarmed", what="disarmed shown")

        # disarm both (D): the executor first; here it is not running, which is reported, and the
        # strategy is still disarmed and confirmed
        engine.arm.armed = True  # as if armed meanwhile
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen) and "Disarm both?" in app.screen.plan_text
        await pilot.press("enter")
        await eventually(lambda: "strategy-engine: disarmed (confirmed)" in app.last_message, what="both reported")
        assert not engine.arm.armed
        assert "trade-executor: NOT CONFIRMED DISARMED" in app.last_message
        assert app.last_message.index("trade-executor") < app.last_message.index("strategy-engine")


async def test_pause_and_resume_the_selected_daemon_and_no_arm_switch_where_there_is_none(
    stack: Stack, control_dir: Path, writer: tuple[HistoryWriter, asyncio.Task[int]]
) -> None:
    service, _ = writer
    async with monitor(control_dir, stack.database_url) as (app, pilot):
        await select(pilot, app, "history-writer")
        await pilot.press("a")
        assert len(app.screen_stack) == 1 and "history-writer has no arm switch" in app.last_message

        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Pause history-writer?" in app.screen.plan_text and "stop taking new work" in app.screen.plan_text
        await pilot.press("escape")
        await refreshed(app)
        assert service.paused is False

        await pilot.press("p")
        await type_text(pilot, "maintenance")
        await pilot.press("enter")
        await eventually(lambda: service.paused, what="history-writer paused through the TUI")
        await eventually(lambda: row(app, "daemons", "history-writer")[3] in ("paused", "pausing"), what="paused shown")
        assert ["WARN", "history-writer", "paused: taking no new work"] in rows(app, "alerts")

        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen) and "Resume history-writer?" in app.screen.plan_text
        await pilot.press("enter")
        await eventually(lambda: not service.paused, what="history-writer resumed through the TUI")
        await eventually(lambda: row(app, "daemons", "history-writer")[3] == "running", what="running shown")


def _price() -> MarketPrice:
    now = now_utc()
    return MarketPrice(
        source="kraken",
        fallback_used=False,
        fair_rate_buy_btc=Decimal("59990"),
        fair_rate_sell_btc=Decimal("60010"),
        source_time=now,
        freshness_ms=100,
        eure_eur_rate=Decimal(1),
        eure_basis="assumed_1_to_1",
        bid=Decimal("59990"),
        ask=Decimal("60010"),
        mid=Decimal("60000"),
        decisionable=True,
    )


def _inventory() -> IntentInventory:
    return IntentInventory(
        inventory_id=str(uuid.uuid4()),
        account_id="solver.near",
        assets=[
            AssetInventory(asset_id=NBTC_ID, decimals=8, spendable=10**6),
            AssetInventory(asset_id=EURE_ID, decimals=18, spendable=10**20),
        ],
        synced_at=now_utc(),
        age_ms=10,
        stale=False,
    )


def _demand() -> SwapDemand:
    # a user offers 5000 sats for EURe: quoteloop would give EURe (BUY_BTC)
    return SwapDemand(
        quote_id=f"tui-{uuid.uuid4()}",
        direction="BUY_BTC",
        asset_in=NBTC_ID,
        asset_out=EURE_ID,
        asset_in_decimals=8,
        asset_out_decimals=18,
        fixed_side="exact_amount_in",
        fixed_amount=5000,
        min_deadline_ms=60_000,
        received_at=now_utc(),
    )


async def test_latest_decisions_from_postgresql_and_the_reservation_they_hold(
    stack: Stack,
    control_dir: Path,
    engine: StrategyEngine,
    producer: EventProducer,
    writer: tuple[HistoryWriter, asyncio.Task[int]],
) -> None:
    async def fresh_inputs() -> None:
        price, inv = new_event(_price(), producer=SRC, pair=PAIR), new_event(_inventory(), producer=SRC, pair=PAIR)
        await producer.publish(price)
        await producer.publish(inv)
        await eventually(
            lambda: (
                engine.price is not None
                and engine.price.event_id == price.event_id
                and engine.inventory is not None
                and engine.inventory.event_id == inv.event_id
            ),
            what="engine holds the price and inventory",
        )

    await fresh_inputs()
    async with monitor(control_dir, stack.database_url) as (app, pilot):
        rejected = _demand()
        await producer.publish(new_event(rejected, producer=SRC, pair=PAIR, correlation_id=rejected.quote_id))
        await eventually(
            lambda: any(r[-1] == rejected.quote_id for r in rows(app, "decisions")),
            what="the disarmed decision shown from PostgreSQL",
        )
        [shown] = [r for r in rows(app, "decisions") if r[-1] == rejected.quote_id]
        assert shown[1:4] == ["BUY_BTC", "reject", "DISARMED"] and Decimal(shown[4]) >= Decimal("2.0")
        assert ["strategy sees", "usable"] == [
            c for c in next(r for r in rows(app, "prices") if r[0] == "strategy sees")[:2]
        ]

        await select(pilot, app, "strategy-engine")
        await pilot.press("a")
        await type_text(pilot, "first answer")
        await pilot.press("enter")
        await eventually(lambda: engine.arm.armed, what="armed through the TUI")
        await fresh_inputs()  # the price has a freshness bound; waiting for PostgreSQL took time
        executed = _demand()
        await producer.publish(new_event(executed, producer=SRC, pair=PAIR, correlation_id=executed.quote_id))
        await eventually(
            lambda: any(r[-1] == executed.quote_id and r[2] == "EXECUTE" for r in rows(app, "decisions")),
            what="the EXECUTE decision shown",
        )
        # the strategy's reservation for that answer: the EURe it would give, until it expires
        await eventually(
            lambda: any(
                r[0] == "strategy"
                and r[2] == executed.quote_id[:12] + "…"
                and r[3] == "reserved"
                and r[4].endswith(" EURe")
                and r[5].startswith("in ")
                for r in rows(app, "answers")
            ),
            what="the reservation shown",
        )
        reserved = next(r for r in rows(app, "inventory") if r[0] == "EURe")
        assert reserved[5].endswith(" EURe") and reserved[5] != "0 EURe"
        assert "EXECUTE" in screen_text(app)
        assert "P&L today (UTC): " in screen_text(app)  # read from the same database


async def test_postgresql_unreachable_is_shown_and_the_daemons_still_are(
    stack: Stack, control_dir: Path, writer: tuple[HistoryWriter, asyncio.Task[int]]
) -> None:
    async with monitor(control_dir, "postgresql://quoteloop@127.0.0.1:1/quoteloop") as (app, _pilot):
        assert row(app, "daemons", "history-writer")[1:3] == ["yes", "ok"]
        [db_alert] = [a for a in rows(app, "alerts") if a[1] == "postgresql"]
        assert "PostgreSQL is not reachable" in db_alert[2]
        assert "UNAVAILABLE" in screen_text(app) and rows(app, "decisions") == []
        assert "P&L today: PostgreSQL unavailable" in screen_text(app)


async def test_database_loss_keeps_the_last_rows_on_screen_marked_stale_until_it_returns(
    stack: Stack, control_dir: Path, pool: asyncpg.Pool
) -> None:
    quote_id = f"tui-{uuid.uuid4()}"
    decision = TradeDecision(
        decision_id=str(uuid.uuid4()),
        quote_id=quote_id,
        pair=PAIR,
        direction="SELL_BTC",
        decision="reject",
        decision_reason="INVENTORY_STALE",
        threshold_pct=Decimal("2.0"),
        armed=False,
        decided_at=now_utc(),
    )
    event = new_event(decision, producer=SRC, pair=PAIR, correlation_id=quote_id)
    # stored the way history-writer stores it
    await write_batch(
        pool, "tui-test", f"tui-{uuid.uuid4()}", [Delivery(event.event_type, 0, -1, None, encode(event), event, None)]
    )
    async with monitor(control_dir, stack.database_url) as (app, _pilot):
        await eventually(lambda: any(r[-1] == quote_id for r in rows(app, "decisions")), what="decision shown")
        await asyncio.to_thread(stack.stop_postgres)
        try:
            await eventually(lambda: "STALE, last read" in screen_text(app), what="decisions marked stale")
            assert any(r[-1] == quote_id and r[3] == "INVENTORY_STALE" for r in rows(app, "decisions"))
            assert any(a[1] == "postgresql" for a in rows(app, "alerts"))
        finally:
            await asyncio.to_thread(stack.start_postgres)
        await eventually(
            lambda: not any(a[1] == "postgresql" for a in rows(app, "alerts")),
            timeout=60,
            what="PostgreSQL back, alert cleared",
        )
        assert "STALE, last read" not in screen_text(app)


class _Harness(App[None]):
    """Just the confirmation screen, for the choice no in-process daemon here offers."""

    def __init__(self, p: Plan) -> None:
        super().__init__()
        self.plan = p
        self.result: Confirmation | None | str = "open"

    def on_mount(self) -> None:
        self.push_screen(ConfirmScreen(self.plan, OPERATOR), callback=self._done)

    def _done(self, confirmation: Confirmation | None) -> None:
        self.result = confirmation


async def test_executor_disarm_confirmation_offers_to_cancel_the_live_answers() -> None:
    p = plan("disarm", "trade-executor", {"trade-executor": {"running": True, "armed": True, "live_answers": [{}]}})
    assert isinstance(p, Plan)
    app = _Harness(p)
    async with app.run_test(size=(160, 50)) as pilot:
        assert "Answers already out (1) stay valid" in screen_text(app)
        await pilot.click("#cancel-live")
        await pilot.click("#confirm")
        await eventually(lambda: app.result != "open", what="confirmation closed")
    assert app.result == Confirmation(operator=OPERATOR, reason="", cancel_live=True)
