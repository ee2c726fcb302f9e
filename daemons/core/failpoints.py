"""Crash points for the fault matrix: a process dies by SIGKILL where a real crash hurts most.

`QL_FAILPOINTS` names the points armed in this process (comma-separated, e.g.
`trade-executor.after_submitted`); it is read once at start. Unset — as in every unit and
playbook — no point is armed and `failpoint()` is a set lookup. A kill -9 from outside cannot
land between two statements with no await between them; these points can, so a test can prove
what the ledger and the venue hold after exactly that crash.
"""

from __future__ import annotations

import os
import signal

ARMED: frozenset[str] = frozenset(p.strip() for p in os.environ.get("QL_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    """Die here, now, as kill -9 would, if `name` is armed."""
    if name in ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
