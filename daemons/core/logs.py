"""structlog JSON logging with the stable top-level field set.

Every line carries `level`, `service`, `component`, `event`, `namespace`, `venue`, `topic` and
`pair` (null when not relevant), plus a UTC timestamp; ids and figures go in the body. Services
log transitions, never every healthy message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

STABLE_FIELDS = ("level", "service", "component", "event", "namespace", "venue", "topic", "pair")
NAMESPACE = "quoteloop"


def _stable_fields(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for field in STABLE_FIELDS:
        event_dict.setdefault(field, None)
    return event_dict


def _stdlib_component(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("component", record.name)
    return event_dict


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=lambda o: str(o)).decode()


def configure_logging(service: str, level: str = "INFO", pair: str | None = None) -> None:
    """Configure structlog once per process; output is one JSON object per line on stdout.

    Libraries that log through the standard library (aiokafka, asyncpg, aiohttp) come out as
    the same JSON lines, with their logger name as `component`; they are held at WARNING so a
    healthy daemon does not narrate every rebalance.
    """
    shared = [
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
