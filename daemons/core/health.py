"""One dependency's health, as a daemon last saw it.

Every daemon watches a few dependencies: PostgreSQL, its Kafka producer and consumer, a venue's
API. A `Link` holds what `/healthz`, `/state` and the metrics show of one: `error` (None while it
works, else the last failure) and `since` (when the current failure began). It logs each change
once, never each repeat: the first failure at `level` with its error, the recovery at info with
how long the dependency was down. Repeated failures in between only replace the error text.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from daemons.core.events import now_utc


def describe(exc: BaseException) -> str:
    """An exception as `/healthz` and `/state` show it: its class and message."""
    return f"{exc.__class__.__name__}: {exc}"


class Link:
    """Health of one dependency: `fail` and `ok` return True exactly when the state changed."""

    def __init__(
        self,
        log: Any,
        *,
        down: str,
        up: str,
        level: Literal["warning", "error"] = "error",
        error: str | None = None,
        **fields: Any,
    ) -> None:
        """`down` / `up` are the log events of the two transitions; `fields` go on both lines.
        `error` is the state at start (e.g. "not connected yet" for a dependency not yet tried)."""
        self._log = log
        self._down = down
        self._up = up
        self._level = level
        self._fields = fields
        self.error = error
        self.since: datetime | None = now_utc() if error is not None else None

    @property
    def healthy(self) -> bool:
        return self.error is None

    def fail(self, error: BaseException | str, **fields: Any) -> bool:
        """Record a failure; True when the dependency was working until now (logged then)."""
        text = describe(error) if isinstance(error, BaseException) else error
        changed = self.error is None
        if changed:
            self.since = now_utc()
            getattr(self._log, self._level)(self._down, error=text, **self._fields, **fields)
        self.error = text
        return changed

    def ok(self, **fields: Any) -> bool:
        """Record a success; True when the dependency was failing until now (logged then)."""
        if self.error is None:
            return False
        down_ms = None if self.since is None else (now_utc() - self.since) // timedelta(milliseconds=1)
        self._log.info(self._up, down_ms=down_ms, **self._fields, **fields)
        self.error = None
        self.since = None
        return True

    def reason(self, code: str) -> list[str]:
        """`/healthz`'s reason for this link: `["<code>: <error>"]` while failing, else none."""
        return [] if self.error is None else [f"{code}: {self.error}"]
