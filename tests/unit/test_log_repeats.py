"""Library log lines held back when they repeat (the broker away: aiokafka's reconnect errors)."""

from __future__ import annotations

import logging

from daemons.core.logs import RepeatFilter


def _record(msg: str, *args: object, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_template_shows_once_per_window_then_says_how_many_were_held_back() -> None:
    now = [100.0]
    f = RepeatFilter(window_s=30, clock=lambda: now[0])
    assert f.filter(_record("Unable connect to node with id %s", 1))
    held = [f.filter(_record("Unable connect to node with id %s", 1)) for _ in range(99)]
    assert not any(held)
    now[0] += 29.9
    assert not f.filter(_record("Unable connect to node with id %s", 1))
    now[0] += 0.2
    again = _record("Unable connect to node with id %s", 1)
    assert f.filter(again)
    assert again.getMessage() == "Unable connect to node with id 1 [100 more like this in the last 30 s not shown]"
    now[0] += 31
    quiet = _record("Unable connect to node with id %s", 1)
    assert f.filter(quiet) and quiet.getMessage() == "Unable connect to node with id 1"  # nothing was held back


def test_other_templates_and_other_loggers_are_counted_apart() -> None:
    f = RepeatFilter(window_s=30, clock=lambda: 0.0)
    assert f.filter(_record("Unable to update metadata from %s", [1]))
    assert f.filter(_record("Failed fetch messages from %s", 1))
    assert f.filter(_record("Unable to update metadata from %s", [1], name="aiokafka.cluster"))
    assert not f.filter(_record("Failed fetch messages from %s", 2))  # same template, other arguments
