"""structlog JSON logging with the stable top-level field set.

Every line carries `level`, `service`, `component`, `event`, `namespace`, `venue`, `topic` and
`pair` (null when not relevant), plus a UTC timestamp; ids and figures go in the body. Services
log transitions, never every healthy message; a library line that repeats is shown once per
30 s with a count of those held back (`RepeatFilter`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

STABLE_FIELDS = ("level", "service", "component", "event", "namespace", "venue", "topic", "pair")
NAMESPACE = "quoteloop"


def _stable_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for field in STABLE_FIELDS:
        event_dict.setdefault(field, None)
    return event_dict


def _stdlib_component(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("component", record.name)
    return event_dict


class RepeatFilter(logging.Filter):
    """At most one line per `window_s` for each library message template (logger and format
    string), the next one saying how many were held back.

    With the broker away, aiokafka logs the same few errors for every reconnect attempt of every
    client: about 70 lines a second per daemon, in which the daemon's own lines (`kafka_unreachable`,
    which says the same once) drowned. Only standard-library records pass through here, that is
    the libraries'; the daemons' own structlog lines are never held back.
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # template -> (shown at, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        shown = self._seen.get(key)
        if shown is not None and now - shown[0] < self.window_s:
            self._seen[key] = (shown[0], shown[1] + 1)
            return False
        held = shown[1] if shown is not None else 0
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.window_s:g} s not shown]"
        if len(self._seen) > 1000:  # templates are few; never let the table grow without bound
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        return True


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=lambda o: str(o)).decode()


def configure_logging(service: str, level: str = "INFO", pair: str | None = None) -> None:
    """Configure structlog once per process; output is one JSON object per line on stdout.

    Libraries that log through the standard library (aiokafka, asyncpg, aiohttp) come out as
    the same JSON lines, with their logger name as `component`; they are held at WARNING so a
    healthy daemon does not narrate every rebalance.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _stdlib_component],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _stable_fields,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
        )
    )
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets at DEBUG logs the handshake headers, relay JWT included: never below WARNING.
    for noisy in ("aiokafka", "kafka", "asyncio", "aiohttp.access", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level]))
    structlog.configure(
        processors=[
            *shared,
            _stable_fields,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, namespace=NAMESPACE, pair=pair)


def get_logger(component: str, **fields: Any) -> Any:
    """A lazy logger: safe at import time, it takes the configuration in force when first used."""
    return structlog.get_logger(component=component, **fields)
