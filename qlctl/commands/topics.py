"""`qlctl topics ensure`: create the eight topics and the per-daemon ACLs (daemons/core/acls.py),
idempotently, from the settings."""

from __future__ import annotations

from typing import Annotated

import typer
from aiokafka.errors import KafkaError
from rich.table import Table

from daemons.core.acls import ensure_acls
from daemons.core.bus import ensure_topics
from qlctl.output import console, err_console, fail, print_json, run, settings

app = typer.Typer(help="Kafka topics", no_args_is_help=True)


@app.command("ensure")
def ensure(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create missing topics; raise partitions and retention to the settings; grant each daemon's
    principal what it may do (when the broker has an authorizer)."""
    cfg = settings()
    try:
        actions = run(ensure_topics(cfg))
        acls = run(ensure_acls(cfg))
    except (KafkaError, OSError) as exc:
        fail(
            f"Kafka at {cfg.kafka_bootstrap} is not reachable ({exc.__class__.__name__}): "
            "start it (make run) or set QL_KAFKA_BOOTSTRAP"
        )
    err_console.print(
        f"ACLs: {acls['acls']} granted" if acls["authorizer"] else "ACLs: the broker has no authorizer; none granted",
        highlight=False,
    )
    if as_json:
        print_json([{"topic": a.topic, "action": a.action} for a in actions])
        return
    table = Table(title=f"topics on {cfg.kafka_bootstrap}")
    table.add_column("topic")
    table.add_column("action")
    for a in actions:
        table.add_row(a.topic, a.action)
    console.print(table)
