"""Why a reading is made, and which cause names it (pure).

Causes that arrive together make one reading. The timer's own causes (`interval`, and
`finality` for a covering reading still owed) give way to any specific one; among specific
causes the first since the last reading names it, and its ids go on the snapshot's envelope.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# the causes the timer gives a reading of its own accord
TIMER_REASONS = frozenset({"interval", "finality"})


@dataclass(frozen=True)
class Trigger:
    reason: str
    causation_id: uuid.UUID | None = None
    correlation_id: str | None = None


def first_cause(current: Trigger | None, new: Trigger) -> Trigger:
    """The trigger that names the next reading once `new` is asked for while `current` waits."""
    if current is None or current.reason in TIMER_REASONS:
        return new
    return current


def timer_trigger(covering_owed: bool) -> Trigger:
    """The timer's cause when a reading falls due with nothing else asked for."""
    return Trigger("finality" if covering_owed else "interval")
