"""`qlctl tui`: start the live monitor. Textual is imported only when the command runs, so the
other qlctl commands do not pay for it."""

from __future__ import annotations

from typing import Annotated

import typer


def tui(
    refresh: Annotated[
        float | None, typer.Option(help="Seconds between refreshes (default QL_TUI_REFRESH_S, 1 s)", min=0.1, max=60.0)
    ] = None,
    operator: Annotated[str | None, typer.Option(help="Who is acting (default: your Unix user)")] = None,
) -> None:
    """Live monitor of all seven daemons, with keys to pause, resume, arm and disarm."""
    from qlctl.client import ControlClient
    from qlctl.tui.app import MonitorApp
    from qlctl.tui.settings import TuiSettings
    from qlctl.tui.source import MonitorSource

    settings = TuiSettings()
    source = MonitorSource(
        ControlClient(settings.control_dir, timeout_s=settings.tui_control_timeout_s),
        settings.database_url,
        decisions_shown=settings.tui_decisions_shown,
        db_timeout_s=settings.tui_db_timeout_s,
        db_retry_s=settings.tui_db_retry_s,
    )
    MonitorApp(source, refresh_s=refresh if refresh is not None else settings.tui_refresh_s, operator=operator).run()
