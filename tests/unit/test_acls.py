"""The ACL table itself: every topic has exactly one writer, and nobody writes what they read
of another's (the broker's side is tests/integration/test_kafka_acls.py)."""

from __future__ import annotations

from collections import Counter

from daemons.core.acls import GRANTS, GROUP, READ, TOPIC, WRITE, acl_entries
from daemons.core.events import TOPICS


def test_every_topic_has_exactly_one_writer() -> None:
    writers = Counter(t for g in GRANTS.values() for t in g.writes)
    assert set(writers) == set(TOPICS) and set(writers.values()) == {1}, writers


def test_each_group_belongs_to_one_principal_and_tools_only_read() -> None:
    owners = Counter(g for grant in GRANTS.values() for g in grant.groups)
    assert set(owners.values()) == {1}
    assert GRANTS["history-writer"].writes == () and GRANTS["qlctl"].writes == () and GRANTS["qlctl"].groups == ()
    entries = acl_entries()
    assert (TOPIC, "cmd.execute_trade", "User:strategy-engine", WRITE) in entries
    assert (GROUP, "trade-executor", "User:trade-executor", READ) in entries
    assert [e for e in entries if e[1] == "cmd.execute_trade" and e[3] == WRITE] == [
        (TOPIC, "cmd.execute_trade", "User:strategy-engine", WRITE)
    ]
