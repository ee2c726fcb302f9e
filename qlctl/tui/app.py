"""The Textual live monitor: all seven daemons at a glance, refreshed on an interval.

Panels: the daemon table (health, run and arm state, connections, authoritative or stale, last
success, blocked reason; the selected row is what the control keys act on), today's P&L in one
line (`view.pnl_line`), alerts, prices and
their freshness, inventory (credited, spendable, pending, reserved), live answers and
reservations, the latest requests with their decisions (PostgreSQL), and the funding pipeline.
Keys p/r/a/d pause, resume, arm and disarm the selected daemon, D disarms both (trade-executor
first, `qlctl/disarm.py`), each through `ConfirmScreen`.

Reads never overlap: a refresh that is still running when the next tick comes is not doubled.
Nothing a daemon or the database does can crash the monitor; it says what is wrong instead.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Static

from qlctl import compact, ops
from qlctl.client import SERVICES, ClientError
from qlctl.disarm import DISARM_ORDER, summary_line
from qlctl.tui import view
from qlctl.tui.confirm import Confirmation, ConfirmScreen
from qlctl.tui.plans import BOTH, Action, Plan, Refusal, plan, plan_disarm_both, request_body
from qlctl.tui.source import MonitorSource, Snapshot

NARROW = 120  # columns: below this the daemon table names daemons by their short names
PANELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "alerts": ("Alerts", ("level", "source", "alert")),
    "prices": ("Prices and freshness", view.PRICE_COLUMNS),
    "inventory": ("Inventory", view.INVENTORY_COLUMNS),
    "answers": ("Live answers and reservations", view.ANSWER_COLUMNS),
    "decisions": ("Latest requests and decisions (PostgreSQL)", view.DECISION_COLUMNS),
    "funding": ("Funding pipeline", view.FUNDING_COLUMNS),
}


class MonitorApp(App[None]):
    TITLE = "quoteloop"
    CSS = """
    #daemons-box { height: auto; max-height: 12; }
    .row { height: 1fr; }
    .box { border: round $primary-darken-1; border-title-color: $text; height: 1fr; width: 1fr; }
    #daemons-box { border: round $primary; }
    #decisions-box { width: 3fr; }
    #funding-box { width: 2fr; }
    DataTable { height: auto; max-height: 100%; }
    #message { height: 1; padding: 0 1; }
    #pnl { height: 1; padding: 0 1; }
    """
    BINDINGS = [
        Binding("p", "control('pause')", "Pause"),
        Binding("r", "control('resume')", "Resume"),
        Binding("a", "control('arm')", "Arm"),
        Binding("d", "control('disarm')", "Disarm"),
        Binding("D", "disarm_both", "Disarm both"),
        Binding("g", "refresh_now", "Refresh now"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, source: MonitorSource, *, refresh_s: float = 1.0, operator: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.operator = operator or getpass.getuser()
        self.snapshot: Snapshot | None = None
        self.refreshes = 0  # completed reads: lets a test (or a watcher) wait for the next one
        self.last_message = ""
        self._refreshing = False
        self._again = False  # a refresh was asked for while one was running (e.g. after a control)

    # --- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        with Vertical(id="daemons-box") as box:
            box.border_title = "Daemons (select a row; p pause, r resume, a arm, d disarm)"
            yield DataTable(id="daemons", cursor_type="row", zebra_stripes=True)
        yield Static(view.pnl_line(None), id="pnl")
        with Horizontal(classes="row"):
            yield self._panel("alerts")
            yield self._panel("prices")
        with Horizontal(classes="row"):
            yield self._panel("inventory")
            yield self._panel("answers")
        with Horizontal(classes="row"):
            yield self._panel("decisions")
            yield self._panel("funding")
        yield Static("", id="message")
        yield Footer()

    def _panel(self, name: str) -> Vertical:
        title, columns = PANELS[name]
        table: DataTable[Any] = DataTable(id=name, cursor_type="none", show_cursor=False)
        table.can_focus = False
        for c in columns:
            table.add_column(c, key=c)
        box = Vertical(table, id=f"{name}-box", classes="box")
        box.border_title = title
        return box

    def on_mount(self) -> None:
        table = self.query_one("#daemons", DataTable)
        for c in view.DAEMON_COLUMNS:
            table.add_column(c, key=c)
        for service in SERVICES:
            table.add_row(view.cell(self._service_label(service)), view.cell("reading…", "muted"), key=service)
        table.focus()
        self.sub_title = f"control sockets in {self.source.client.control_dir}"
        self.set_interval(self.refresh_s, self._tick)
        self._tick()

    async def on_unmount(self) -> None:
        await self.source.close()

    # --- refresh --------------------------------------------------------------------------------

    def _tick(self, *, again: bool = False) -> None:
        if self._refreshing:
            self._again = self._again or again
            return
        self._refreshing = True
        self._refresh()

    @work(group="refresh", exit_on_error=False)
    async def _refresh(self) -> None:
        try:
            snapshot = await self.source.read()
            self.snapshot = snapshot
            self._render_snapshot(snapshot)
        except NoMatches:
            return  # the app is closing and its widgets are gone: nothing left to draw on
        except Exception as exc:  # the monitor outlives any one bad read and says what broke
            self.say(f"refresh failed: {exc.__class__.__name__}: {exc}", "bad")
        finally:
            self._refreshing = False
            self.refreshes += 1
        if self._again:
            self._again = False
            self._tick()

    def action_refresh_now(self) -> None:
        self._tick(again=True)

    def _render_snapshot(self, s: Snapshot) -> None:
        now = s.at
        table = self.query_one("#daemons", DataTable)
        for service, cells in view.daemon_rows(s.states, now):
            cells[0] = view.cell(self._service_label(service))
            for column, value in zip(view.DAEMON_COLUMNS, cells, strict=True):
                table.update_cell(service, column, value, update_width=True)
        table.refresh()
        self._fill(
            "alerts",
            lambda: (
                [
                    [view.cell(a.level.upper(), a.level), view.cell(a.source), view.cell(a.text, a.level)]
                    for a in view.alerts(s.states, s.db_error)
                ]
                or [[view.cell("ok", "ok"), view.cell("all"), view.cell("no alerts", "ok")]]
            ),
        )
        self.query_one("#pnl", Static).update(view.pnl_line(s.pnl, s.db_error))
        self._fill("prices", lambda: view.price_rows(s.states, now))
        self._fill("inventory", lambda: view.inventory_rows(s.states, now))
        self._fill("answers", lambda: view.answer_rows(s.states, now))
        self._fill("decisions", lambda: view.decision_rows(s.decisions))
        self._fill("funding", lambda: view.funding_rows(s.states, now, s.pending_funding))
        box = self.query_one("#decisions-box")
        if s.db_error:
            box.border_title = PANELS["decisions"][0] + (
                f" STALE, last read {view.ago(s.db_read_at, now)}" if s.db_read_at else " UNAVAILABLE"
            )
        else:
            box.border_title = PANELS["decisions"][0]
        self.sub_title = (
            f"control sockets in {self.source.client.control_dir} · refreshed "
            f"{s.at.strftime('%H:%M:%S')} every {self.refresh_s:g} s"
        )

    def _service_label(self, service: str) -> str:
        """The short name in a narrow terminal (80 columns show more of the row)."""
        return compact.short_name(service) if self.size.width < NARROW else service

    def _fill(self, name: str, rows: Callable[[], list[list[Text]]]) -> None:
        table = self.query_one(f"#{name}", DataTable)
        columns = len(PANELS[name][1])
        try:
            built = rows()
        except Exception as exc:  # a daemon published a shape this version cannot show
            built = [
                [
                    view.cell(f"cannot show: {exc.__class__.__name__}: {exc}", "bad"),
                    *(view.cell("") for _ in range(columns - 1)),
                ]
            ]
        table.clear()
        table.add_rows(built)

    # --- control --------------------------------------------------------------------------------

    def selected_service(self) -> str:
        table = self.query_one("#daemons", DataTable)
        row = min(max(table.cursor_row, 0), len(SERVICES) - 1)
        return SERVICES[row]

    def action_control(self, action: Action) -> None:
        if len(self.screen_stack) > 1:
            return  # a confirmation is open: keys belong to it
        if self.snapshot is None:
            self.say("still reading the daemons' state: try again in a moment", "warn")
            return
        service = self.selected_service()
        result = plan(action, service, self.snapshot.states)
        if isinstance(result, Refusal):
            self.say(result.message, "warn")
            return
        self.push_screen(ConfirmScreen(result, self.operator), callback=lambda c: self._confirmed(result, c))

    def action_disarm_both(self) -> None:
        if len(self.screen_stack) > 1:
            return
        states = self.snapshot.states if self.snapshot is not None else {}
        p = plan_disarm_both(states)
        self.push_screen(ConfirmScreen(p, self.operator), callback=lambda c: self._confirmed(p, c))

    def _confirmed(self, p: Plan, confirmation: Confirmation | None) -> None:
        if confirmation is None:
            self.say(f"{p.action} {p.service} cancelled: nothing sent", "muted")
            return
        self._send(p, confirmation)

    @work(group="control", exit_on_error=False)
    async def _send(self, p: Plan, c: Confirmation) -> None:
        if p.service == BOTH:
            results = await ops.disarm(self.source.client, DISARM_ORDER, c.operator, c.reason, c.cancel_live)
            ok = all(r["confirmed_disarmed"] for r in results.values())
            self.say("; ".join(summary_line(s, r) for s, r in results.items()), "ok" if ok else "bad")
            self._tick(again=True)
            return
        body = request_body(p, c.operator, c.reason, c.cancel_live)
        try:
            reply = await self.source.send(p.service, p.path, body)
        except ClientError as exc:
            self.say(str(exc), "bad")
            return
        except Exception as exc:  # never let a control request take the monitor down
            self.say(f"{p.action} {p.service} failed: {exc.__class__.__name__}: {exc}", "bad")
            return
        if reply.ok:
            changed = reply.body.get("changed") if isinstance(reply.body, dict) else None
            note = "" if changed is not False else " (no change: it was already so)"
            self.say(f"{p.service}: {p.action} accepted as {c.operator}{note}", "ok")
        else:
            error = ops.refusal_error(reply)
            self.say(f"{p.service} refused {p.action}: {error or reply.status}", "bad")
        self._tick(again=True)

    def say(self, message: str, level: view.Level = "plain") -> None:
        self.last_message = message
        try:
            self.query_one("#message", Static).update(view.cell(message, level))
        except NoMatches:
            return  # closing
        if level in ("bad", "warn"):
            self.notify(message, severity="error" if level == "bad" else "warning")
