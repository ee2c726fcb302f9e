"""The NEAR RPC client's pure parts: the per-endpoint budget (never over `per_min` in any 60 s nor
`burst` at once, and never starving), endpoint lists, URL redaction, and the settings that name
the endpoints (no deprecated near.org host by default, refused unless allowed). Retry-After is
read by daemons/core/http.py (tests/unit/test_http.py). The client's behaviour over HTTP is in
tests/integration/venues/test_near_rpc.py."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from daemons.core.settings import CoreSettings
from daemons.venues.near_intents.near_rpc import (
    RpcBudget,
    parse_endpoints,
    redact_url,
)

# --- the budget ----------------------------------------------------------------------------------------


def grants(budget: RpcBudget, times: list[float]) -> list[float]:
    return [t for t in times if budget.try_take(t)]


def max_in_any_minute(granted: list[float]) -> int:
    # every half-open 60 s window's count is at most the count of one starting at a grant
    return max((sum(1 for g in granted if start <= g < start + 60.0) for start in granted), default=0)


def test_burst_then_one_token_per_refill_interval() -> None:
    b = RpcBudget(per_min=30, burst=5)
    assert grants(b, [0.0] * 8) == [0.0] * 5  # the burst, then nothing at the same instant
    assert b.available(0.0) == 0 and b.wait_s(0.0) == pytest.approx(2.0)  # 60 s / 30
    assert not b.try_take(1.9)
    assert b.try_take(2.0) and not b.try_take(2.0)
    assert b.available(12.0) == 5  # refilled to the burst, no further


def test_a_full_bucket_cannot_push_a_minute_past_per_min() -> None:
    # 30 tokens a minute plus a burst of 5: a bare token bucket would grant 35 in the first minute
    b = RpcBudget(per_min=30, burst=5)
    granted = grants(b, [i * 0.01 for i in range(12_000)])  # asking every 10 ms for 2 minutes
    assert max_in_any_minute(granted) == 30
    assert len([g for g in granted if g < 60.0]) == 30
    # and it does not starve: the window frees exactly 60 s after the oldest grant
    assert len(granted) >= 59


@settings(max_examples=300, deadline=None)
@given(
    per_min=st.integers(1, 40),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=200),
)
def test_budget_never_exceeded_in_any_window(per_min: int, burst: int, gaps: list[float]) -> None:
    b = RpcBudget(per_min=per_min, burst=burst)
    now, granted = 0.0, []
    for gap in gaps:
        now += gap
        may = b.available(now)
        took = b.try_take(now)
        assert took == (may >= 1)  # available() and try_take() agree
        if took:
            granted.append(now)
        else:
            assert b.wait_s(now) > 0
    assert max_in_any_minute(granted) <= per_min
    for i, first in enumerate(granted):  # the bucket: at most burst + refill over any span
        for j in range(i, len(granted)):
            assert j - i + 1 <= burst + (granted[j] - first) * per_min / 60.0 + 1e-6


@settings(max_examples=200, deadline=None)
@given(per_min=st.integers(1, 40), burst=st.integers(1, 10), taken=st.integers(0, 60), at=st.floats(0, 120))
def test_wait_s_is_exactly_when_the_next_request_may_go(per_min: int, burst: int, taken: int, at: float) -> None:
    b = RpcBudget(per_min=per_min, burst=burst)
    grants(b, [0.0] * taken + [at])
    wait = b.wait_s(at)
    if wait == 0:
        assert b.try_take(at)
        return
    if wait > 1e-3:
        assert not b.try_take(at + wait - 1e-3)
    assert b.try_take(at + wait)


def test_tighten_keeps_the_lowest_figures() -> None:
    b = RpcBudget(per_min=30, burst=5)
    b.tighten(60, 2)
    assert (b.per_min, b.burst) == (30, 2)
    assert grants(b, [0.0] * 5) == [0.0, 0.0]
    b.tighten(10, 8)
    assert (b.per_min, b.burst) == (10, 2)


@pytest.mark.parametrize("per_min,burst", [(0, 1), (1, 0), (-1, 5), (True, 1), (1.5, 1)])
def test_budget_refuses_nonsense(per_min: object, burst: object) -> None:
    with pytest.raises(ValueError):
        RpcBudget(per_min, burst)  # type: ignore[arg-type]


# --- endpoints and their display ----------------------------------------------------------------------


def test_endpoint_lists() -> None:
    assert parse_endpoints("https://a.example") == ("https://a.example",)
    assert parse_endpoints(" https://a.example , https://b.example/,") == ("https://a.example", "https://b.example/")
    assert parse_endpoints(["https://a.example", "https://b.example,https://c.example"]) == (
        "https://a.example",
        "https://b.example",
        "https://c.example",
    )
    assert parse_endpoints("https://a.example,https://a.example/") == ("https://a.example",)  # once
    for empty in ("", " , ", []):
        with pytest.raises(ValueError):
            parse_endpoints(empty)


def test_redacted_urls_carry_no_keys() -> None:
    assert redact_url("https://free.rpc.fastnear.com") == "https://free.rpc.fastnear.com"
    assert redact_url("http://127.0.0.1:3030/") == "http://127.0.0.1:3030/"
    shown = redact_url("https://user:pw@go.getblock.io/0123456789abcdef0123/?apikey=secret#x")
    assert shown == "https://go.getblock.io/***/"
    assert "secret" not in shown and "pw" not in shown and "0123456789abcdef" not in shown


# --- settings ------------------------------------------------------------------------------------------


def _hosts(urls: str) -> list[str]:
    return [urlsplit(u).hostname or "" for u in urls.split(",")]


def test_default_endpoints_are_providers_not_near_org(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QL_NEAR_RPC_URL", raising=False)
    monkeypatch.delenv("QL_NEAR_RPC_ALLOW_DEPRECATED", raising=False)
    s = CoreSettings()
    hosts = _hosts(s.near_rpc_url)
    assert len(hosts) >= 2  # something to fail over to
    assert not [h for h in hosts if h == "near.org" or h.endswith(".near.org")]
    assert s.near_rpc_allow_deprecated is False
    assert (s.near_rpc_budget_per_min, s.near_rpc_budget_burst) == (30, 5)
    # and the default passes its own validator
    assert CoreSettings(near_rpc_url=s.near_rpc_url).near_rpc_url == s.near_rpc_url


@pytest.mark.parametrize(
    "urls",
    [
        "https://rpc.mainnet.near.org",
        "https://free.rpc.fastnear.com,https://archival-rpc.mainnet.NEAR.org/",
        "https://near.org",
        "https://rpc.testnet.near.org.",
    ],
)
def test_near_org_is_refused_unless_allowed(urls: str) -> None:
    with pytest.raises(ValidationError, match="deprecated near.org RPC endpoint"):
        CoreSettings(near_rpc_url=urls)
    assert CoreSettings(near_rpc_url=urls, near_rpc_allow_deprecated=True).near_rpc_url


def test_near_org_lookalikes_are_not_near_org() -> None:
    assert CoreSettings(near_rpc_url="https://notnear.org.example,https://mynear.org").near_rpc_url


@pytest.mark.parametrize("urls", ["", " , ", "ftp://x.example", "free.rpc.fastnear.com"])
def test_near_rpc_url_must_be_http_urls(urls: str) -> None:
    with pytest.raises(ValidationError):
        CoreSettings(near_rpc_url=urls)


def test_env_is_comma_separated_and_budget_is_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QL_NEAR_RPC_URL", " http://127.0.0.1:3030 , https://near.lava.build ")
    monkeypatch.setenv("QL_NEAR_RPC_BUDGET_PER_MIN", "12")
    s = CoreSettings()
    assert s.near_rpc_url == "http://127.0.0.1:3030,https://near.lava.build"
    assert parse_endpoints(s.near_rpc_url) == ("http://127.0.0.1:3030", "https://near.lava.build")
    assert s.near_rpc_budget_per_min == 12
    monkeypatch.setenv("QL_NEAR_RPC_URL", "https://rpc.mainnet.near.org")
    with pytest.raises(ValidationError):
        CoreSettings()
    monkeypatch.setenv("QL_NEAR_RPC_ALLOW_DEPRECATED", "true")
    assert CoreSettings().near_rpc_url == "https://rpc.mainnet.near.org"
    for field in ("near_rpc_budget_per_min", "near_rpc_budget_burst"):
        with pytest.raises(ValidationError):
            CoreSettings(**{field: 0})
