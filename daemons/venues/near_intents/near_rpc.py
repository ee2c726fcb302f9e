"""NEAR JSON-RPC client for the `intents.near` view methods (balances, keys, nonces, salt, fee),
blocks and transaction status, over one or more endpoints with a client-side request budget.

Speaks `query` / `call_function` exactly as in `docs/near-rpc.md` ("`query` / `call_function`") and
decodes the view's return bytes as JSON (docs/verifier.md §9 lists the methods); `block` and `tx`
as nearcore answers them (docs/near-rpc.md). Failures come out typed, so a caller can tell "the venue is down"
(`NearRpcUnavailable`: HTTP errors, timeouts, garbage; `NearRpcRateLimited` when no endpoint may
be asked now) from "the venue said no" (`NearRpcRequestError` for a JSON-RPC `error` object,
`NearTxUnknown` for a transaction the node does not know, `NearContractError` for a contract panic
in either of the two shapes docs/near-rpc.md says to handle), each with the verbatim text.

NEAR RPC is metered (docs/near-rpc.md, "Rate limits"): the deprecated `*.near.org` endpoints allow
about 30 requests a minute per IP and the providers limit too, answering HTTP 429. So:

- Endpoints. The client takes one URL, a comma-separated list, or a sequence, in order of
  preference. Each request tries them in that order, at most once each, and `client.url` is the
  one that answered last.
- Budget. `budget_per_min` / `budget_burst` give each endpoint a token bucket (`RpcBudget`): a
  request takes a token from its endpoint before it is sent; an endpoint without one is passed
  over for the next. Every `NearRpcClient` of the process that names the same endpoint shares one
  bucket and one set of counters (a module registry keyed by the URL, without a trailing `/`).
  When two clients ask for different numbers, the lowest wins (per_min and burst each): the
  budget exists to stay under a provider's limit, and the tightest figure anyone configured is
  the one that cannot be wrong. A client with `budget_per_min=None` adds no limit of its own but
  is still charged to a bucket another client set. Once every client naming an endpoint is
  closed, its figures are forgotten (a client never closed keeps them).
- HTTP 429. Counted, and the endpoint cools down until its `Retry-After` (seconds or an HTTP
  date, at most an hour), or, without that header, for 1 s doubling to 60 s over consecutive
  429s (reset by an answer); the request moves on to the next endpoint. A cooling endpoint is not
  asked at all.
- Transport failures (refused connection, timeout, HTTP 5xx or another non-answer, a body that
  is not JSON-RPC) also move the request on, but put the endpoint in no cooldown: it is only
  tried after the healthy endpoints for 1 s doubling to 60 s over consecutive failures (reset by
  an answer). So a single blip costs nothing, a dead primary does not cost every request a
  timeout, and a client with one endpoint behaves as before: it asks again on the next call.
- A JSON-RPC `error` body (the node refused, the contract panicked) is the venue's answer, not a
  failure of the endpoint: it is raised at once, never retried elsewhere.
- When no endpoint may be asked (each cooling or out of budget, or it answered 429 just now),
  `NearRpcRateLimited` is raised at once with `.retry_after_s`, when the earliest token or
  cooldown frees one. The client never sleeps. If an endpoint failed at the transport level
  during the call, that failure is raised instead (the last one).

`usage()` reports all of it for `/state`. The client logs nothing; its callers log transitions.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeGuard, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import AwareDatetime, BaseModel, ConfigDict, computed_field

from daemons.core.amounts import parse_u128
from daemons.core.events import now_utc
from daemons.core.http import retry_after_s
from daemons.core.settings import CoreSettings

Finality = Literal["final", "optimistic", "near-final"]
# `wait_until` of `tx` / `send_tx`: nearcore's TxExecutionStatus, weakest to strongest.
TxWaitUntil = Literal["NONE", "INCLUDED", "EXECUTED_OPTIMISTIC", "INCLUDED_FINAL", "EXECUTED", "FINAL"]
DEFAULT_CONTRACT = "intents.near"
_T = TypeVar("_T")

WINDOW_S = 60.0  # the budget's window, and usage()'s "requests in the last 60 s"
DEFAULT_BURST = 5  # `budget_burst=None`: min(per_min, this)
BACKOFF_INITIAL_S = 1.0  # 429 without Retry-After, and the transport-failure demotion
BACKOFF_MAX_S = 60.0
_EPS = 1e-9  # token arithmetic is float: a bucket at 0.999999999 holds a token


# --- errors ----------------------------------------------------------------------------------------


class NearRpcError(Exception):
    """Base of every failure; `.message` is the RPC's or contract's verbatim text where it gave one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NearRpcUnavailable(NearRpcError):
    """The RPC could not answer: connection failure, timeout, HTTP error status, or a body that
    is not a JSON-RPC response. Retry later or elsewhere; nothing was refused."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NearRpcBadResponse(NearRpcUnavailable):
    """A 200 whose body is not the documented shape (not JSON, missing fields, wrong types)."""


class NearRpcRateLimited(NearRpcUnavailable):
    """No endpoint may be asked now: each is cooling down after an HTTP 429 or has spent its
    client-side budget. `.retry_after_s` is when the earliest of them may be asked again (0 when
    one may already be: an endpoint answered 429 with `Retry-After: 0`). `.status` is 429 when an
    endpoint answered 429 during this call, else None (nothing was sent)."""

    def __init__(self, message: str, *, retry_after_s: float, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class NearRpcRequestError(NearRpcError):
    """A top-level JSON-RPC `error` object: the node refused the request (unknown account,
    unknown block, bad params, …). `.name` / `.cause` are nearcore's structured names."""

    def __init__(self, message: str, error: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.error = dict(error)
        self.name: str | None = error.get("name") if isinstance(error.get("name"), str) else None
        cause = error.get("cause")
        self.cause: str | None = cause.get("name") if isinstance(cause, Mapping) else None
        self.info: dict[str, Any] = dict(cause.get("info") or {}) if isinstance(cause, Mapping) else {}
        self.code: int | None = error.get("code") if isinstance(error.get("code"), int) else None


class NearRpcUnknownAccount(NearRpcRequestError):
    """`UNKNOWN_ACCOUNT`: the contract account does not exist on this network."""


class NearTxUnknown(NearRpcRequestError):
    """`UNKNOWN_TRANSACTION`: the node does not know the transaction: not (yet) on chain, garbage
    collected (older than a few epochs: ask an archival node), or a wrong hash / sender."""


class NearContractError(NearRpcError):
    """The view ran and the contract failed: a panic (e.g. a verbatim `DefuseError`,
    docs/verifier.md §14) or a VM error. Raised for both shapes: the legacy `result.error` string and a top-level
    `CONTRACT_EXECUTION_ERROR`. `.panic_msg` is the contract's own text when it panicked."""

    def __init__(self, message: str, *, block_height: int | None = None) -> None:
        super().__init__(message)
        self.panic_msg: str | None = _panic_msg(message)
        self.block_height = block_height


class NearMethodNotFound(NearContractError):
    """The contract has no such method (`MethodResolveError(MethodNotFound)`)."""


_GUEST_PANIC = re.compile(r'GuestPanic \{ panic_msg: "((?:[^"\\]|\\.)*)" \}')
_SMART_PANIC = re.compile(r'Smart contract panicked: ((?:[^"\\]|\\.)*)')


def _panic_msg(vm_error: str) -> str | None:
    m = _GUEST_PANIC.search(vm_error)
    if m:
        return _unescaped(m.group(1))
    m = _SMART_PANIC.search(vm_error)
    if m:
        return _unescaped(m.group(1))
    return None


def _unescaped(message: str) -> str:
    """Rust Debug escaping of the message undone: \\" \\\\ \\n and friends; as it is when that fails."""
    try:
        text: str = json.loads(f'"{message}"')  # a JSON string literal: always a str
    except ValueError:
        return message
    return text


def _contract_error(message: str, block_height: Any) -> NearContractError:
    height = block_height if isinstance(block_height, int) else None
    if "MethodNotFound" in message:
        return NearMethodNotFound(message, block_height=height)
    return NearContractError(message, block_height=height)


# --- results ----------------------------------------------------------------------------------------


class ViewResult(BaseModel):
    """A view's decoded JSON return value and the block it was read at."""

    model_config = ConfigDict(frozen=True)

    value: Any
    block_height: int
    block_hash: str
    logs: list[str] = []


class BlockHeader(BaseModel):
    """The header fields of a `block` answer this project uses (nearcore `BlockHeaderView`)."""

    model_config = ConfigDict(frozen=True)

    height: int
    hash: str
    timestamp_ns: int  # Unix nanoseconds (`timestamp_nanosec`, a decimal string on the wire)
    prev_hash: str

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ns // 1_000_000_000, UTC) + timedelta(
            microseconds=(self.timestamp_ns % 1_000_000_000) // 1_000
        )


class ExecutionOutcome(BaseModel):
    """One `transaction_outcome` / `receipts_outcome[]` entry: the block it executed in, its
    logs (NEP-297 `EVENT_JSON:` lines among them) and its status object verbatim."""

    model_config = ConfigDict(frozen=True)

    id: str
    block_hash: str
    executor_id: str | None = None
    logs: list[str] = []
    status: Any = None  # {"SuccessValue": b64} | {"SuccessReceiptId": id} | {"Failure": …} | "Unknown"


TxOutcome = Literal["success", "failure", "pending"]


class TxStatus(BaseModel):
    """A `tx` answer. `outcome` reads the top-level `status`: `SuccessValue` → "success" (with
    `success_value`, the return value as base64), `Failure` → "failure" (with `failure`, the
    error object verbatim), anything else (`NotStarted`, `Started`, absent at a weak
    `wait_until`) → "pending". `final_execution_status` is how far the node says the
    transaction got (`FINAL` means every receipt, refunds included, is in a final block)."""

    model_config = ConfigDict(frozen=True)

    tx_hash: str
    sender_account_id: str
    final_execution_status: str | None
    outcome: TxOutcome
    success_value: str | None = None
    failure: Any = None
    transaction_outcome: ExecutionOutcome | None = None
    receipts_outcome: list[ExecutionOutcome] = []

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over @property
    @property
    def block_hash(self) -> str | None:
        """The block the transaction was included in (`transaction_outcome.block_hash`)."""
        return self.transaction_outcome.block_hash if self.transaction_outcome is not None else None

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over @property
    @property
    def receipt_block_hashes(self) -> list[str]:
        return [r.block_hash for r in self.receipts_outcome]

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over @property
    @property
    def logs(self) -> list[str]:
        """Every log line, the transaction's first, then each receipt's in the node's order."""
        outcomes = ([self.transaction_outcome] if self.transaction_outcome is not None else []) + list(
            self.receipts_outcome
        )
        return [line for o in outcomes for line in o.logs]

    @property
    def is_final(self) -> bool:
        return self.final_execution_status == "FINAL"


class EndpointUsage(BaseModel):
    """One endpoint's figures, shared by every client of the process that names it."""

    model_config = ConfigDict(frozen=True)

    url: str  # without query, user info or token-like path segments (they may carry API keys)
    in_use: bool
    requests_last_60s: int
    requests_total: int
    rate_limited_total: int  # HTTP 429 answers
    failures_total: int  # transport failures: refused, timed out, 5xx, not JSON-RPC
    failovers: int  # requests it passed on (429, failure, or no budget) that a later endpoint took
    cooling_until: AwareDatetime | None  # after a 429: not asked before this
    demoted_until: AwareDatetime | None  # after failures: asked only after the others before this
    budget_per_min: int | None  # None: no client-side limit
    budget_burst: int | None
    tokens_available: int | None  # requests it may take now; None: unlimited


class RpcUsage(BaseModel):
    """`NearRpcClient.usage()`, for a daemon's `/state`."""

    model_config = ConfigDict(frozen=True)

    url: str  # the endpoint in use (the one that answered last)
    endpoints: list[EndpointUsage]


# --- budget ------------------------------------------------------------------------------------------


class RpcBudget:
    """A client-side request budget for one endpoint: a token bucket holding at most `burst`
    tokens, refilled at `per_min` tokens a minute, plus a cap of `per_min` requests in any 60 s
    (half-open windows). The cap keeps a full bucket from adding `burst` to a minute's refill, so
    `per_min` is never exceeded in any minute and `burst` never at any instant.

    Pure: every method takes the monotonic time `now` (seconds) from the caller."""

    def __init__(self, per_min: int, burst: int) -> None:
        for name, value in (("per_min", per_min), ("burst", burst)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RpcBudget {name} must be an int >= 1, got {value!r}")
        self.per_min = per_min
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None
        self._granted: deque[float] = deque()

    def _refill(self, now: float) -> None:
        if self._at is None:
            self._at = now
        elif now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_min / WINDOW_S)
            self._at = now
        while self._granted and self._granted[0] + WINDOW_S <= now:
            self._granted.popleft()

    def available(self, now: float) -> int:
        """Requests that may be sent now."""
        self._refill(now)
        return max(0, min(math.floor(self._tokens + _EPS), self.per_min - len(self._granted)))

    def wait_s(self, now: float) -> float:
        """Seconds until a request may be sent (0 if one may be now)."""
        self._refill(now)
        wait = 0.0
        if self._tokens + _EPS < 1.0:
            wait = (1.0 - self._tokens) * WINDOW_S / self.per_min
        over = len(self._granted) - self.per_min
        if over >= 0:
            frees_at = self._granted[over] + WINDOW_S
            window_wait = frees_at - now
            while now + window_wait < frees_at:  # float rounding: be sure it has left at now + wait
                window_wait = math.nextafter(window_wait, math.inf)
            wait = max(wait, window_wait)
        return max(0.0, wait)

    def try_take(self, now: float) -> bool:
        """Take a token for a request sent now; False (nothing taken) if none may be."""
        self._refill(now)
        if self._tokens + _EPS < 1.0 or len(self._granted) >= self.per_min:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        self._granted.append(now)
        return True

    def tighten(self, per_min: int, burst: int) -> None:
        """Another client asked for this endpoint's budget: the lowest figures win."""
        other = RpcBudget(per_min, burst)  # validates
        self.per_min = min(self.per_min, other.per_min)
        self.burst = min(self.burst, other.burst)
        self._tokens = min(self._tokens, float(self.burst))


# --- endpoints ---------------------------------------------------------------------------------------


def parse_endpoints(urls: str | Sequence[str]) -> tuple[str, ...]:
    """One URL, a comma-separated list, or a sequence of URLs (each may itself be a list): the
    endpoints in order of preference, blanks dropped, duplicates (ignoring a trailing `/`) once."""
    items = [urls] if isinstance(urls, str) else list(urls)
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"NEAR RPC endpoint must be a string, got {item!r}")
        for part in item.split(","):
            url = part.strip()
            if url and _key(url) not in seen:
                seen.add(_key(url))
                out.append(url)
    if not out:
        raise ValueError("NEAR RPC needs at least one endpoint URL")
    return tuple(out)


def redact_url(url: str) -> str:
    """`url` as it may be shown: no user info, query or fragment, and path segments that look like
    API keys (16+ characters of letters, digits, `-`, `_`) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    path = "/".join("***" if re.fullmatch(r"[A-Za-z0-9_-]{16,}", seg) else seg for seg in parts.path.split("/"))
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _key(url: str) -> str:
    return url.strip().rstrip("/")


def _backoff_s(consecutive: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2.0 ** max(0, consecutive - 1))


class _Endpoint:
    """One endpoint's shared state: budget, cooldown, demotion and counters."""

    def __init__(self, url: str) -> None:
        self.url = url  # as the first client named it; the registry key is `_key(url)`
        self.budget: RpcBudget | None = None
        self.sent: deque[float] = deque()
        self.requests_total = 0
        self.rate_limited_total = 0
        self.failures_total = 0
        self.failovers = 0
        self.cooling_until: float | None = None  # monotonic
        self.demoted_until: float | None = None  # monotonic
        self.clients = 0  # open clients naming it: the registry forgets it when the last closes
        self._consecutive_429 = 0
        self._consecutive_failures = 0

    def cooling_left(self, now: float) -> float:
        return max(0.0, self.cooling_until - now) if self.cooling_until is not None else 0.0

    def demoted(self, now: float) -> bool:
        return self.demoted_until is not None and now < self.demoted_until

    def ready_in(self, now: float) -> float:
        return max(self.cooling_left(now), self.budget.wait_s(now) if self.budget is not None else 0.0)

    def requests_last_60s(self, now: float) -> int:
        while self.sent and self.sent[0] + WINDOW_S <= now:
            self.sent.popleft()
        return len(self.sent)

    def record_sent(self, now: float) -> None:
        self.requests_total += 1
        self.sent.append(now)
        self.requests_last_60s(now)

    def on_answer(self) -> None:
        self._consecutive_429 = 0
        self._consecutive_failures = 0
        self.demoted_until = None

    def on_429(self, now: float, retry_after: float | None) -> float:
        self.rate_limited_total += 1
        self._consecutive_429 += 1
        # `retry_after` comes from `retry_after_s`, which caps it at an hour
        delay = retry_after if retry_after is not None else _backoff_s(self._consecutive_429)
        until = now + delay
        self.cooling_until = until if self.cooling_until is None else max(self.cooling_until, until)
        return delay

    def on_failure(self, now: float) -> None:
        self.failures_total += 1
        self._consecutive_failures += 1
        self.demoted_until = now + _backoff_s(self._consecutive_failures)

    def usage(self, now: float, wall_now: datetime, *, in_use: bool) -> EndpointUsage:
        def wall(at: float | None) -> datetime | None:
            return wall_now + timedelta(seconds=at - now) if at is not None and at > now else None

        return EndpointUsage(
            url=redact_url(self.url),
            in_use=in_use,
            requests_last_60s=self.requests_last_60s(now),
            requests_total=self.requests_total,
            rate_limited_total=self.rate_limited_total,
            failures_total=self.failures_total,
            failovers=self.failovers,
            cooling_until=wall(self.cooling_until),
            demoted_until=wall(self.demoted_until),
            budget_per_min=self.budget.per_min if self.budget is not None else None,
            budget_burst=self.budget.burst if self.budget is not None else None,
            tokens_available=self.budget.available(now) if self.budget is not None else None,
        )


# Every client of the process that names an endpoint shares its `_Endpoint` (see the docstring).
# endpoints named by an open client (or one never closed); a closed client lets go of its own
_ENDPOINTS: dict[str, _Endpoint] = {}


def _release(endpoint: _Endpoint) -> None:
    endpoint.clients -= 1
    key = _key(endpoint.url)
    if endpoint.clients <= 0 and _ENDPOINTS.get(key) is endpoint:
        del _ENDPOINTS[key]


def _register(url: str, per_min: int | None, burst: int | None) -> _Endpoint:
    key = _key(url)
    endpoint = _ENDPOINTS.get(key)
    if endpoint is None:
        endpoint = _Endpoint(url)
        _ENDPOINTS[key] = endpoint
    endpoint.clients += 1
    if per_min is not None:
        burst = burst if burst is not None else min(per_min, DEFAULT_BURST)
        if endpoint.budget is None:
            endpoint.budget = RpcBudget(per_min, burst)
        else:
            endpoint.budget.tighten(per_min, burst)
    return endpoint


class _Http429(Exception):
    def __init__(self, text: str, retry_after: str | None) -> None:
        super().__init__(text)
        self.text = text
        self.retry_after = retry_after


# --- client ----------------------------------------------------------------------------------------


class NearRpcClient:
    """Async client for `intents.near` views, blocks and transaction status over NEAR JSON-RPC
    endpoints in order of preference, within a client-side budget per endpoint (module docstring).

    `url`: one URL, a comma-separated list (as `QL_NEAR_RPC_URL` holds it) or a sequence.
    `budget_per_min` (None: no limit of this client's own) and `budget_burst` (None:
    min(per_min, 5); ignored without per_min) set each endpoint's `RpcBudget`. `clock` (monotonic
    seconds) and `wall_clock` (aware UTC, for Retry-After dates and usage()) are for tests."""

    def __init__(
        self,
        url: str | Sequence[str],
        contract_id: str = DEFAULT_CONTRACT,
        *,
        timeout_s: float = 10.0,
        finality: Finality = "final",
        session: aiohttp.ClientSession | None = None,
        budget_per_min: int | None = None,
        budget_burst: int | None = None,
        agent: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.urls: tuple[str, ...] = parse_endpoints(url)
        self._endpoints: tuple[_Endpoint, ...] = tuple(_register(u, budget_per_min, budget_burst) for u in self.urls)
        self.url = self.urls[0]  # the endpoint in use: the one that answered last
        self.contract_id = contract_id
        self.timeout_s = timeout_s
        self.finality: Finality = finality
        self._clock = clock
        self._wall_clock = wall_clock
        self._session = session
        self._owns_session = session is None
        # sent as User-Agent: a provider (and the simulator) can tell the daemons of one host apart
        self._headers = {"User-Agent": agent} if agent else None
        self._ids = itertools.count(1)
        self.last_block_height: int | None = None  # the block of the last view read
        self.last_block_hash: str | None = None
        self._released = False

    async def __aenter__(self) -> NearRpcClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if not self._released:  # the shared endpoint state outlives no client that used it
            self._released = True
            for endpoint in self._endpoints:
                _release(endpoint)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def usage(self) -> RpcUsage:
        """Per endpoint: requests in the last 60 s and in total, 429s, failures, failovers,
        cooldown, budget and tokens left. The figures are the process's, not this client's."""
        now, wall_now = self._clock(), self._wall_clock()
        current = _key(self.url)
        return RpcUsage(
            url=redact_url(self.url),
            endpoints=[
                e.usage(now, wall_now, in_use=_key(u) == current)
                for u, e in zip(self.urls, self._endpoints, strict=True)
            ],
        )

    # --- transport --------------------------------------------------------------------------------

    async def _send(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """One POST to one endpoint: the JSON-RPC document, or `_Http429`, `NearRpcUnavailable`
        (the endpoint failed) or a `NearRpcRequestError` (it answered with a refusal)."""
        session = self._get_session()
        where = redact_url(url)
        try:
            async with session.post(
                url, json=body, headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                text = await resp.text()
        except TimeoutError:
            raise NearRpcUnavailable(f"NEAR RPC timed out after {self.timeout_s}s ({where})") from None
        except aiohttp.ClientError as exc:
            raise NearRpcUnavailable(f"NEAR RPC unreachable: {exc.__class__.__name__}: {exc} ({where})") from None
        except UnicodeDecodeError:
            raise NearRpcBadResponse(f"NEAR RPC answered with a body that is not text ({where})") from None
        if status == 429:
            raise _Http429(text[:200], retry_after)
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: pathologically deep nesting
            doc = None
        error = doc.get("error") if isinstance(doc, dict) else None
        if status != 200:
            # nearcore answers request-validation errors (our request was wrong) with a 4xx and a
            # JSON-RPC error body: that is a refusal. Anything else not-200 (5xx, 408, a proxy's
            # page) is the venue being unavailable.
            if 400 <= status < 500 and status != 408 and isinstance(error, Mapping):
                raise _request_error(error)
            raise NearRpcUnavailable(f"NEAR RPC HTTP {status} ({where}): {text[:200]}", status=status)
        if not isinstance(doc, dict):
            raise NearRpcBadResponse(f"NEAR RPC answered with a non-JSON-RPC body ({where}): {text[:200]}")
        return doc

    async def _call(self, method: str, params: Any) -> dict[str, Any]:
        """Send one JSON-RPC request to the first endpoint that may take it (module docstring)."""
        body = {"jsonrpc": "2.0", "id": str(next(self._ids)), "method": method, "params": params}
        now = self._clock()
        # healthy endpoints first, then the demoted ones, each group in order of preference
        order = sorted(self._endpoints, key=lambda e: e.demoted(now))
        passed_on: list[_Endpoint] = []
        failure: NearRpcUnavailable | None = None
        limited = False
        for endpoint in order:
            now = self._clock()
            if endpoint.cooling_left(now) > 0:
                continue
            if endpoint.budget is not None and not endpoint.budget.try_take(now):
                passed_on.append(endpoint)
                continue
            endpoint.record_sent(now)
            for earlier in passed_on:
                earlier.failovers += 1
            passed_on.clear()
            try:
                doc = await self._send(endpoint.url, body)
            except _Http429 as exc:
                endpoint.on_429(self._clock(), retry_after_s(exc.retry_after, self._wall_clock()))
                limited = True
                passed_on.append(endpoint)
                continue
            except NearRpcUnavailable as exc:
                endpoint.on_failure(self._clock())
                failure = exc
                passed_on.append(endpoint)
                continue
            except NearRpcError:
                endpoint.on_answer()  # a refusal is an answer: the endpoint works
                self.url = endpoint.url
                raise
            endpoint.on_answer()
            self.url = endpoint.url
            return doc
        if failure is not None:
            raise failure
        raise self._rate_limited(limited)

    def _rate_limited(self, answered_429: bool) -> NearRpcRateLimited:
        now = self._clock()
        waits = [e.ready_in(now) for e in self._endpoints]
        parts = []
        for url, endpoint, wait in zip(self.urls, self._endpoints, waits, strict=True):
            why = "cooling after 429" if endpoint.cooling_left(now) > 0 else "budget spent" if wait > 0 else "429"
            parts.append(f"{redact_url(url)}: {why}, {wait:.3g}s")
        retry = min(waits)
        return NearRpcRateLimited(
            f"NEAR RPC rate-limited: no endpoint may be asked now ({'; '.join(parts)}); retry in {retry:.3g}s",
            retry_after_s=retry,
            status=429 if answered_429 else None,
        )

    @staticmethod
    def _result(doc: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        """The `result` object, or the top-level `error` raised as the venue's answer."""
        if doc.get("error") is not None:
            error = doc["error"]
            if isinstance(error, Mapping):
                raise _request_error(error)
            raise NearRpcRequestError(str(error), {"message": str(error)})
        result = doc.get("result")
        if not isinstance(result, Mapping):
            raise NearRpcBadResponse(f"NEAR RPC {what} response has no result object: {str(doc)[:200]}")
        return result

    # --- methods ----------------------------------------------------------------------------------

    async def query(
        self,
        method_name: str,
        args: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
        finality: Finality | None = None,
        block_id: int | str | None = None,
    ) -> ViewResult:
        """`query` / `call_function` on `account_id` (the contract by default), docs/near-rpc.md
        ("`query` / `call_function`").

        Reads at `block_id` if given, else at `finality` (the client's setting by default).
        """
        params: dict[str, Any] = {
            "request_type": "call_function",
            "account_id": account_id or self.contract_id,
            "method_name": method_name,
            "args_base64": base64.b64encode(json.dumps(dict(args or {}), separators=(",", ":")).encode()).decode(),
        }
        if block_id is not None:
            params["block_id"] = block_id
        else:
            params["finality"] = finality or self.finality
        result = self._result(await self._call("query", params), "query")
        if result.get("error") is not None:
            # Legacy form: a contract failure reported inside `result` (docs/near-rpc.md).
            raise _contract_error(str(result["error"]), result.get("block_height"))
        raw, height, block_hash = result.get("result"), result.get("block_height"), result.get("block_hash")
        if (
            not isinstance(raw, list)
            or not all(isinstance(b, int) and 0 <= b <= 255 for b in raw)
            or not isinstance(height, int)
            or not isinstance(block_hash, str)
        ):
            raise NearRpcBadResponse(f"NEAR RPC call_function result has the wrong shape: {str(result)[:200]}")
        try:
            value = json.loads(bytes(raw).decode("utf-8"))
        except (ValueError, RecursionError):
            raise NearRpcBadResponse(f"view {method_name} returned bytes that are not JSON") from None
        logs = result.get("logs") or []
        if not isinstance(logs, list):
            raise NearRpcBadResponse(f"NEAR RPC call_function logs are not a list: {str(logs)[:200]}")
        self.last_block_height, self.last_block_hash = height, block_hash
        return ViewResult(value=value, block_height=height, block_hash=block_hash, logs=[str(x) for x in logs])

    async def block(self, *, finality: Finality | None = None, block_id: int | str | None = None) -> BlockHeader:
        """The header of the block at `block_id` (a height or a hash) if given, else the latest
        at `finality` (the client's setting by default). Does not touch `last_block_height`."""
        params: dict[str, Any] = (
            {"block_id": block_id} if block_id is not None else {"finality": finality or self.finality}
        )
        result = self._result(await self._call("block", params), "block")
        header = result.get("header")
        if not isinstance(header, Mapping):
            raise NearRpcBadResponse(f"NEAR RPC block result has no header: {str(result)[:200]}")
        height, block_hash, prev_hash = header.get("height"), header.get("hash"), header.get("prev_hash")
        if not _is_int(height) or height < 0 or not _is_str(block_hash) or not _is_str(prev_hash):
            raise NearRpcBadResponse(f"NEAR RPC block header has the wrong shape: {str(header)[:200]}")
        return BlockHeader(height=height, hash=block_hash, timestamp_ns=_timestamp_ns(header), prev_hash=prev_hash)

    async def tx_status(self, tx_hash: str, sender_account_id: str, wait_until: TxWaitUntil = "FINAL") -> TxStatus:
        """`tx`: the status of transaction `tx_hash` sent by `sender_account_id` (it picks the
        shard), waiting on the node's side until `wait_until`. An unknown transaction raises
        `NearTxUnknown`. Above `NONE` a node waits for an unknown transaction until its own
        timeout (docs/near-rpc.md, "tx"), and a node that gave up waiting (`TIMEOUT_ERROR`, HTTP
        408) or a client timeout is tried on the next endpoint: to ask whether a transaction
        exists at all, pass `wait_until="NONE"`."""
        params = {"tx_hash": tx_hash, "sender_account_id": sender_account_id, "wait_until": wait_until}
        result = self._result(await self._call("tx", params), "tx")
        return _tx_status(result, tx_hash, sender_account_id)

    # --- typed views (docs/verifier.md §9) --------------------------------------------------------

    async def mt_batch_balance_of(
        self, account_id: str, token_ids: Sequence[str], *, block_id: int | str | None = None
    ) -> list[int]:
        """Balances in base units, in `token_ids` order (the view returns u128 strings)."""
        r = await self.query(
            "mt_batch_balance_of", {"account_id": account_id, "token_ids": list(token_ids)}, block_id=block_id
        )
        if not isinstance(r.value, list) or len(r.value) != len(token_ids):
            raise NearRpcBadResponse(f"mt_batch_balance_of returned {r.value!r} for {len(token_ids)} tokens")
        return [_u128(v, "mt_batch_balance_of") for v in r.value]

    async def mt_balance_of(self, account_id: str, token_id: str) -> int:
        r = await self.query("mt_balance_of", {"account_id": account_id, "token_id": token_id})
        return _u128(r.value, "mt_balance_of")

    async def has_public_key(self, account_id: str, public_key: str) -> bool:
        r = await self.query("has_public_key", {"account_id": account_id, "public_key": public_key})
        return _typed(r.value, bool, "has_public_key")

    async def public_keys_of(self, account_id: str) -> list[str]:
        r = await self.query("public_keys_of", {"account_id": account_id})
        if not isinstance(r.value, list) or not all(isinstance(k, str) for k in r.value):
            raise NearRpcBadResponse(f"public_keys_of returned {r.value!r}")
        return list(r.value)

    async def is_nonce_used(
        self,
        account_id: str,
        nonce_b64: str,
        *,
        finality: Finality | None = None,
        block_id: int | str | None = None,
    ) -> bool:
        """Whether the verifier has the nonce, read at `block_id` / `finality` as `query` reads.
        Only proof of "not executed" before the nonce's deadline (it may be cleaned up after)."""
        r = await self.query(
            "is_nonce_used", {"account_id": account_id, "nonce": nonce_b64}, finality=finality, block_id=block_id
        )
        return _typed(r.value, bool, "is_nonce_used")

    async def current_salt(self) -> str:
        """The current salt as hex (e.g. `252812b3`), for versioned nonces (docs/verifier.md §3)."""
        r = await self.query("current_salt", {})
        salt = _typed(r.value, str, "current_salt")
        if not re.fullmatch(r"[0-9a-f]{8}", salt):
            raise NearRpcBadResponse(f"current_salt returned {salt!r}, not 4 bytes of hex")
        return salt

    async def is_valid_salt(self, salt_hex: str) -> bool:
        r = await self.query("is_valid_salt", {"salt": salt_hex})
        return _typed(r.value, bool, "is_valid_salt")

    async def fee(self) -> int:
        """The protocol fee in pips (1 pip = 0.0001 %, docs/verifier.md §8)."""
        r = await self.query("fee", {})
        fee = _typed(r.value, int, "fee")
        if isinstance(fee, bool) or not 0 <= fee <= 1_000_000:
            raise NearRpcBadResponse(f"fee returned {fee!r}, not pips")
        return fee


def _request_error(error: Mapping[str, Any]) -> NearRpcError:
    data, msg = error.get("data"), error.get("message")
    cause = _mapping(error.get("cause"))
    info = _mapping(cause.get("info"))
    if cause.get("name") == "CONTRACT_EXECUTION_ERROR":
        vm_error = info.get("vm_error")
        text = vm_error if isinstance(vm_error, str) else data if isinstance(data, str) else str(msg)
        return _contract_error(text, info.get("block_height"))
    # nearcore puts the human text in `data` ("account x does not exist while viewing"); `message`
    # is the generic "Server error".
    text = data if isinstance(data, str) else msg if isinstance(msg, str) else json.dumps(dict(error))
    if cause.get("name") == "UNKNOWN_ACCOUNT":
        return NearRpcUnknownAccount(text, error)
    if cause.get("name") == "UNKNOWN_TRANSACTION":
        return NearTxUnknown(text, error)
    return NearRpcRequestError(text, error)


def _mapping(value: object) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: object) -> TypeGuard[str]:
    """A non-empty string."""
    return isinstance(value, str) and bool(value)


def _timestamp_ns(header: Mapping[str, Any]) -> int:
    """`timestamp_nanosec` (a decimal string, nearcore `dec_format`), else the legacy number
    `timestamp` (same nanoseconds as a JSON number)."""
    nanos = header.get("timestamp_nanosec")
    if isinstance(nanos, str) and nanos.isascii() and nanos.isdigit() and len(nanos) <= 20:
        return int(nanos)
    if _is_int(nanos) and nanos >= 0:
        return nanos
    legacy = header.get("timestamp")
    if nanos is None and _is_int(legacy) and legacy >= 0:
        return legacy
    raise NearRpcBadResponse(f"NEAR RPC block header timestamp is not nanoseconds: {nanos!r} / {legacy!r}")


def _outcome(value: Any, what: str) -> ExecutionOutcome:
    if not isinstance(value, Mapping):
        raise NearRpcBadResponse(f"NEAR RPC tx {what} is not an object: {str(value)[:200]}")
    outcome = value.get("outcome")
    if not isinstance(outcome, Mapping):
        raise NearRpcBadResponse(f"NEAR RPC tx {what} has no outcome: {str(value)[:200]}")
    ident, block_hash, executor = value.get("id"), value.get("block_hash"), outcome.get("executor_id")
    logs = outcome.get("logs", [])
    if (
        not _is_str(ident)
        or not _is_str(block_hash)
        or not (executor is None or isinstance(executor, str))
        or not isinstance(logs, list)
        or not all(isinstance(line, str) for line in logs)
    ):
        raise NearRpcBadResponse(f"NEAR RPC tx {what} has the wrong shape: {str(value)[:200]}")
    return ExecutionOutcome(
        id=ident, block_hash=block_hash, executor_id=executor, logs=logs, status=outcome.get("status")
    )


def _tx_status(result: Mapping[str, Any], tx_hash: str, sender_account_id: str) -> TxStatus:
    final_status = result.get("final_execution_status")
    if final_status is not None and not isinstance(final_status, str):
        raise NearRpcBadResponse(f"NEAR RPC tx final_execution_status is {final_status!r}")
    status = result.get("status")
    outcome: TxOutcome = "pending"
    success_value: str | None = None
    failure: Any = None
    if isinstance(status, Mapping) and "SuccessValue" in status:
        success_value = status["SuccessValue"]
        if not isinstance(success_value, str):
            raise NearRpcBadResponse(f"NEAR RPC tx SuccessValue is {success_value!r}, not base64 text")
        outcome = "success"
    elif isinstance(status, Mapping) and "Failure" in status:
        outcome, failure = "failure", status["Failure"]
    elif status is not None and status not in ("NotStarted", "Started", "Unknown"):
        raise NearRpcBadResponse(f"NEAR RPC tx status has the wrong shape: {str(status)[:200]}")
    transaction = result.get("transaction")
    hash_seen = transaction.get("hash") if isinstance(transaction, Mapping) else None
    tx_outcome = result.get("transaction_outcome")
    receipts = result.get("receipts_outcome", [])
    if not isinstance(receipts, list):
        raise NearRpcBadResponse(f"NEAR RPC tx receipts_outcome is not a list: {str(receipts)[:200]}")
    return TxStatus(
        tx_hash=hash_seen if _is_str(hash_seen) else tx_hash,
        sender_account_id=sender_account_id,
        final_execution_status=final_status,
        outcome=outcome,
        success_value=success_value,
        failure=failure,
        transaction_outcome=_outcome(tx_outcome, "transaction_outcome") if tx_outcome is not None else None,
        receipts_outcome=[_outcome(r, f"receipts_outcome[{i}]") for i, r in enumerate(receipts)],
    )


def _u128(value: Any, what: str) -> int:
    # a balance: a u128 decimal string (docs/verifier.md §9), zero allowed, never a JSON number
    try:
        return parse_u128(value)
    except ValueError as exc:
        raise NearRpcBadResponse(f"{what} returned {repr(value)[:100]}: {exc}") from None


def _typed(value: object, kind: type[_T], what: str) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NearRpcBadResponse(f"{what} returned {value!r}, expected {kind.__name__}")
    return value


def client_from_settings(settings: CoreSettings, *, timeout_s: float, daemon: str) -> NearRpcClient:
    """The daemon's one NEAR RPC client: its endpoints, verifier and budget from the settings;
    `daemon` names it in the User-Agent (`quoteloop-<daemon>`)."""
    return NearRpcClient(
        settings.near_rpc_url,
        settings.verifier_contract,
        timeout_s=timeout_s,
        budget_per_min=settings.near_rpc_budget_per_min,
        budget_burst=settings.near_rpc_budget_burst,
        agent=f"quoteloop-{daemon}",
    )
