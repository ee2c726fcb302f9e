"""Who may do what on the bus: one Kafka principal per daemon (SASL/SCRAM-SHA-512 user named
after it) and the ACLs the broker's authorizer (KRaft `StandardAuthorizer`, nothing allowed that
no ACL grants) holds for each. Each principal may write only the topics its daemon owns, read only
what it consumes, and join only its own consumer groups; `qlctl` may only read. The super user
(`admin`) is the broker's own and the tools' (topics, these ACLs, the tests).

`ensure_acls` creates them, idempotently (creating an ACL that exists changes nothing); it runs
with `qlctl topics ensure`. The group names are the daemons' defaults (`QL_EXECUTOR_GROUP`,
`QL_HISTORY_GROUP`, `QL_INVENTORY_GROUP`, strategy-engine's two): a deployment that renames a group
must grant it too.

aiokafka 0.14 has no ACL call in its admin client: the request is its protocol's
`CreateAclsRequest` (Kafka API 30) sent through `AIOKafkaClient`. The enum values are Kafka's
(org.apache.kafka.common.acl / resource): resource TOPIC 2, GROUP 3; pattern LITERAL 3;
operation READ 3, WRITE 4; permission ALLOW 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest

from daemons.core.bus import kafka_auth
from daemons.core.events import TOPICS
from daemons.core.logs import get_logger
from daemons.core.settings import CoreSettings

TOPIC, GROUP = 2, 3
LITERAL = 3
READ, WRITE = 3, 4
ALLOW = 3
SECURITY_DISABLED = 54  # the broker has no authorizer: nothing to grant

log = get_logger("acls")


@dataclass(frozen=True)
class Grant:
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    groups: tuple[str, ...] = field(default=())


ALL_TOPICS = tuple(TOPICS)

GRANTS: dict[str, Grant] = {
    "near-intents-ingest": Grant(writes=("raw.near_intents.quote", "norm.swap_demand")),
    "market-reference-ingest": Grant(writes=("ref.market_price",)),
    "liquidity-manager": Grant(writes=("ops.liquidity_action",)),
    "inventory-sync": Grant(
        writes=("state.intent_inventory",),
        reads=("ops.liquidity_action", "exec.trade_result"),
        groups=("inventory-sync",),
    ),
    "strategy-engine": Grant(
        writes=("decision.trade_decision", "cmd.execute_trade"),
        # requests and its inputs; results and its own commands to rebuild reservations at start
        reads=(
            "norm.swap_demand",
            "ref.market_price",
            "state.intent_inventory",
            "exec.trade_result",
            "cmd.execute_trade",
        ),
        groups=("strategy-engine", "strategy-engine.results"),
    ),
    "trade-executor": Grant(
        writes=("exec.trade_result",),
        reads=("cmd.execute_trade", "state.intent_inventory", "ref.market_price", "exec.trade_result"),
        groups=("trade-executor",),
    ),
    "history-writer": Grant(reads=ALL_TOPICS, groups=("history-writer",)),
    "qlctl": Grant(reads=ALL_TOPICS),
}


def acl_entries() -> list[tuple[int, str, str, int]]:
    """(resource type, resource name, principal, operation) for every ALLOW to create."""
    out = []
    for name, grant in GRANTS.items():
        principal = f"User:{name}"
        out += [(TOPIC, t, principal, WRITE) for t in grant.writes]
        out += [(TOPIC, t, principal, READ) for t in grant.reads]
        out += [(GROUP, g, principal, READ) for g in grant.groups]
    return out


async def ensure_acls(settings: CoreSettings) -> dict[str, Any]:
    """Create every ACL of `GRANTS` (as a principal allowed to: the super user). Returns how many
    were sent, or that the broker has no authorizer."""
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap, client_id="qlctl-acls", **kafka_auth(settings))
    await client.bootstrap()
    try:
        node = client.get_random_node()
        created = 0
        for rtype, rname, principal, operation in acl_entries():
            response = await client.send(
                node, CreateAclsRequest(rtype, rname, LITERAL, principal, "*", operation, ALLOW)
            )
            for result in response.creation_responses:
                code, message = result[0], result[1]
                if code == SECURITY_DISABLED:
                    log.warning("acls_not_enforced", detail="the broker has no authorizer: no ACL created")
                    return {"acls": 0, "authorizer": False}
                if code != 0:
                    raise RuntimeError(f"CreateAcls {principal} {operation} on {rname}: error {code} {message}")
            created += 1
        return {"acls": created, "authorizer": True}
    finally:
        await client.close()
