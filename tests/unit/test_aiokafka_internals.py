"""The parts of aiokafka that are not its public API and that the code relies on; pyproject.toml
pins aiokafka to the minor version they were checked against (>=0.14,<0.15). Nothing connects:
no broker is needed.

- daemons/core/bus.py replaces a producer whose sender task has ended: `_sender_dead` reads
  `producer._sender.sender_task` and `producer._closed` through getattr with defaults, so a
  rename would not fail there but silently stop the replacement (the broker-side behaviour is
  tests/integration/test_bus.py).
- daemons/core/acls.py sends `CreateAclsRequest` (aiokafka.protocol.admin) through
  `AIOKafkaClient`, its admin client having no ACL call, and reads `creation_responses`.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.protocol.admin import CreateAclsRequest, CreateAclsRequest_v1, CreateAclsResponse_v1

from daemons.core.acls import ALLOW, LITERAL, READ, TOPIC
from daemons.core.bus import _sender_dead


async def test_a_producer_has_the_sender_task_and_closed_flag_the_bus_watches() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started: nothing connects
    try:
        assert producer._closed is False
        assert producer._sender.sender_task is None  # no sender before start()
        assert not _sender_dead(producer)
    finally:
        await producer.stop()
    assert producer._closed is True
    assert not _sender_dead(producer)  # stopped on purpose is not dead


def test_create_acls_request_carries_one_acl_binding() -> None:
    request = CreateAclsRequest(TOPIC, "quotes", LITERAL, "User:strategy-engine", "*", READ, ALLOW)
    wire = request.build(CreateAclsRequest_v1)
    assert wire.creations == [(TOPIC, "quotes", LITERAL, "User:strategy-engine", "*", READ, ALLOW)]
    assert "creation_responses" in CreateAclsResponse_v1.SCHEMA.names
