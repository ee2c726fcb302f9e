"""The TUI's own settings (env prefix QL_), on top of the shared ones it reads sockets and the
database URL from."""

from __future__ import annotations

from pydantic import Field

from daemons.core.settings import CoreSettings


class TuiSettings(CoreSettings):
    # how often every panel is re-read (the `--refresh` option overrides it)
    tui_refresh_s: float = Field(default=1.0, ge=0.1, le=60.0)
    # a daemon that does not answer /state within this shows as an error for that refresh,
    # so one stuck daemon never freezes the monitor
    tui_control_timeout_s: float = Field(default=2.0, gt=0, le=30.0)
    # PostgreSQL: the bound on connecting and on each query, and how long to wait before trying
    # again after the database was unreachable
    tui_db_timeout_s: float = Field(default=3.0, gt=0, le=60.0)
    tui_db_retry_s: float = Field(default=5.0, ge=0, le=300.0)
    # rows in the "latest requests" panel
    tui_decisions_shown: int = Field(default=20, ge=1, le=500)
