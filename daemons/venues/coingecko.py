"""CoinGecko `/simple/price` client: the fallback and cross-check BTC/EUR price, and the EURe/EUR
sanity check, for market-reference-ingest.

Wire truth, with its sources: `docs/coingecko.md` (§n below). One request shape:
`ids=<ids>&vs_currencies=eur&include_last_updated_at=true&precision=full`. Prices are `Decimal`
parsed from the response text and `last_updated_at` (UNIX seconds) becomes an aware UTC datetime:
CoinGecko serves a cached aggregate (§3), so freshness is judged by that field, never by when we
asked. A missing coin (`{}`) is an error, not an empty answer (§2). On HTTP 429 the client
honours `retry-after` (seconds or an HTTP date), then `x-ratelimit-reset`, else waits at least
60 s (§4), and refuses to call again before `retry_not_before`, so a throttled key is not
burned further. The API key is read from a file (`QL_COINGECKO_API_KEY_FILE`), sent in the plan's
header (§1) and never logged, repr'd or put in an exception.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr

from daemons.core.events import now_utc
from daemons.core.http import retry_after_s
from daemons.core.logs import get_logger

DEMO_BASE_URL = "https://api.coingecko.com/api/v3"  # keyless public and Demo share it (§1)
PRO_BASE_URL = "https://pro-api.coingecko.com/api/v3"
KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}  # §1
BTC_ID = "bitcoin"
# §6: the post-migration EURe id; "monerium-eur-money" is the legacy token. UNCONFIRMED live.
EURE_ID = "monerium-eur-money-2"
VS_EUR = "eur"
DEFAULT_BACKOFF_S = 60.0  # §4: no usable header -> at least 60 s (freqtrade 60, hummingbot 63)

Plan = Literal["public", "demo", "pro"]


# --- errors -------------------------------------------------------------------------------------


class CoinGeckoError(Exception):
    """Anything that kept us from a usable price."""


class CoinGeckoTimeout(CoinGeckoError):
    """No complete answer within the client's timeout."""


class CoinGeckoConnectionError(CoinGeckoError):
    """The request never got an HTTP answer (refused, reset, DNS, TLS)."""


class CoinGeckoHTTPError(CoinGeckoError):
    def __init__(self, status: int, error_code: int | None, message: str | None) -> None:
        code = f" (code {error_code})" if error_code else ""
        super().__init__(f"HTTP {status}{code}" + (f": {message}" if message else ""))
        self.status = status
        self.error_code = error_code
        self.message = message


class CoinGeckoAuthError(CoinGeckoHTTPError):
    """401/403, or the key/host mismatch codes 10002, 10010, 10011 (§5)."""


class CoinGeckoRateLimited(CoinGeckoError):
    def __init__(self, retry_not_before: datetime, source: str) -> None:
        super().__init__(f"rate limited until {retry_not_before.isoformat()} ({source})")
        self.retry_not_before = retry_not_before
        self.source = source  # "retry-after", "x-ratelimit-reset", "default" or "cooling_off"


class CoinGeckoResponseError(CoinGeckoError):
    """HTTP 200 whose body is not the `/simple/price` shape we asked for."""


class CoinGeckoUnknownId(CoinGeckoError):
    """§2: an unknown id is silently left out of the answer (`{}` when it was the only one)."""

    def __init__(self, missing: Sequence[str], found: dict[str, CoinPrice]) -> None:
        super().__init__(f"unknown or unpriced coin id(s): {', '.join(missing)}")
        self.missing = tuple(missing)
        self.found = found


# --- parsed results -----------------------------------------------------------------------------


class CoinPrice(BaseModel):
    model_config = ConfigDict(frozen=True)

    coin_id: str
    vs_currency: str
    price: Decimal
    last_updated_at: AwareDatetime  # CoinGecko's own update time (UTC), the freshness that counts
    received_at: AwareDatetime

    def age(self, now: datetime) -> timedelta:
        # a CoinGecko clock slightly ahead of ours must not read as negative age
        return max(now - self.last_updated_at, timedelta(0))


class CoinGeckoQuote(BaseModel):
    """One batched poll: BTC/EUR (required) and EURe/EUR (sanity check only, docs/reference-prices.md §6)."""

    model_config = ConfigDict(frozen=True)

    btc_eur: CoinPrice
    eure_eur: CoinPrice | None
    eure_error: str | None = None


def _error_info(obj: Any) -> tuple[int | None, str | None]:
    """(error_code, message) from the body shapes of §4/§5, or (None, None)."""
    if not isinstance(obj, dict):
        return None, None
    status = obj.get("status")
    if isinstance(obj.get("error"), dict):
        status = obj["error"].get("status", status)
    if isinstance(status, dict):
        code = status.get("error_code")
        return (int(code) if isinstance(code, (int, Decimal)) else None), status.get("error_message")
    if isinstance(obj.get("error"), str):
        return None, obj["error"]
    return None, None


def parse_simple_price(
    body: str | bytes, ids: Sequence[str], vs_currency: str, received_at: datetime
) -> dict[str, CoinPrice]:
    """Parse a `/simple/price` body requested with `include_last_updated_at=true`.

    Raises `CoinGeckoUnknownId` when a requested id is absent (with whatever was found),
    `CoinGeckoResponseError` for any other shape problem. Never returns a float."""
    try:
        obj = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
        raise CoinGeckoResponseError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CoinGeckoResponseError(f"expected an object, got {type(obj).__name__}")
    code, message = _error_info(obj)
    if code is not None or ("error" in obj and message):
        raise CoinGeckoResponseError(f"error body on HTTP 200: code {code}: {message}")
    found: dict[str, CoinPrice] = {}
    missing: list[str] = []
    for coin_id in ids:
        entry = obj.get(coin_id)
        if entry is None or (isinstance(entry, dict) and vs_currency not in entry):
            missing.append(coin_id)
            continue
        if not isinstance(entry, dict):
            raise CoinGeckoResponseError(f"{coin_id}: expected an object")
        price = entry[vs_currency]
        if price is None or isinstance(price, bool) or not isinstance(price, (int, Decimal)):
            # §3: a null value is CoinGecko's own "no current price" signal
            raise CoinGeckoResponseError(f"{coin_id}: no {vs_currency} price ({price!r})")
        price = Decimal(price)
        if not price.is_finite() or price <= 0:
            raise CoinGeckoResponseError(f"{coin_id}: implausible price {price}")
        updated = entry.get("last_updated_at")
        if isinstance(updated, bool) or not isinstance(updated, (int, Decimal)):
            raise CoinGeckoResponseError(f"{coin_id}: last_updated_at missing or not a number")
        try:
            last_updated_at = datetime.fromtimestamp(int(updated), UTC)  # UNIX seconds (§2)
        except (OverflowError, OSError, ValueError):
            raise CoinGeckoResponseError(f"{coin_id}: last_updated_at {updated} is not a plausible time") from None
        found[coin_id] = CoinPrice(
            coin_id=coin_id,
            vs_currency=vs_currency,
            price=price,
            last_updated_at=last_updated_at,
            received_at=received_at,
        )
    if missing:
        raise CoinGeckoUnknownId(missing, found)
    return found


def parse_ratelimit_reset(value: str | None, now: datetime) -> datetime | None:
    """`x-ratelimit-reset` as observed in §4 (`2025-07-25 14:54:00 +0000`), or epoch seconds;
    None if absent, unparsable, beyond what a datetime holds, or not ahead."""
    if not value:
        return None
    value = value.strip()
    moment: datetime | None = None
    if value.isascii() and value.isdigit():
        try:
            moment = datetime.fromtimestamp(int(value), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    else:
        for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                moment = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment if moment > now else None


def rate_limit_until(headers: Any, now: datetime, default_backoff_s: float = DEFAULT_BACKOFF_S) -> tuple[datetime, str]:
    """When a 429 lets us try again, and which signal said so (§4 order)."""
    seconds = retry_after_s(headers.get("retry-after"), now)
    if seconds:  # 0 (or a date already past) says nothing of when: the next signal decides
        return now + timedelta(seconds=seconds), "retry-after"
    moment = parse_ratelimit_reset(headers.get("x-ratelimit-reset"), now)
    if moment is not None:
        return moment, "x-ratelimit-reset"
    return now + timedelta(seconds=default_backoff_s), "default"


def plan_for(base_url: str, has_key: bool) -> Plan:
    if not has_key:
        return "public"
    return "pro" if "pro-api." in base_url else "demo"


def read_api_key(path: str | Path) -> SecretStr:
    key = Path(path).read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError(f"CoinGecko API key file {path} is empty")
    return SecretStr(key)


# --- the client ---------------------------------------------------------------------------------


class CoinGeckoClient:
    """One-shot `/simple/price` requests with typed failures; no polling loop of its own (the
    daemon decides the cadence, at or above the cache interval of §3)."""

    def __init__(
        self,
        base_url: str = DEMO_BASE_URL,
        *,
        api_key: str | SecretStr | None = None,
        api_key_file: str | Path | None = None,
        plan: Plan | None = None,
        timeout_s: float = 10.0,
        default_backoff_s: float = DEFAULT_BACKOFF_S,
        stale_after_s: float = 180.0,  # docs/reference-prices.md §4: 2–3x the 60 s Demo cache
        eure_stale_after_s: float = 3600.0,  # docs/reference-prices.md §6: EURe trades thinly; ~1 h
        eure_id: str = EURE_ID,
        clock: Callable[[], datetime] = now_utc,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if api_key is not None and api_key_file is not None:
            raise ValueError("give the CoinGecko API key or its file, not both")
        key = read_api_key(api_key_file) if api_key_file is not None else api_key
        self._key: SecretStr | None = SecretStr(key) if isinstance(key, str) else key
        self.base_url = base_url.rstrip("/")
        self.plan: Plan = plan or plan_for(self.base_url, self._key is not None)
        if self.plan != "public" and self._key is None:
            raise ValueError(f"CoinGecko plan {self.plan!r} needs an API key")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.default_backoff_s = default_backoff_s
        self.stale_after = timedelta(seconds=stale_after_s)
        self.eure_stale_after = timedelta(seconds=eure_stale_after_s)
        self.eure_id = eure_id
        self.clock = clock
        self._session = session
        self._own_session = session is None
        self._log = get_logger("venues.coingecko", venue="coingecko")
        self._retry_not_before: datetime | None = None
        self._requests = 0
        self._successes = 0
        self._errors: Counter[str] = Counter()
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._last_success_at: datetime | None = None
        self._last_prices: dict[str, CoinPrice] = {}

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> CoinGeckoClient:
        """From `CoreSettings`: `QL_COINGECKO_URL` and `QL_COINGECKO_API_KEY_FILE`."""
        return cls(settings.coingecko_url, api_key_file=settings.coingecko_api_key_file, **kwargs)

    def __repr__(self) -> str:
        configured = self._key is not None
        return f"CoinGeckoClient(base_url={self.base_url!r}, plan={self.plan!r}, key_configured={configured})"

    async def __aenter__(self) -> CoinGeckoClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def retry_not_before(self) -> datetime | None:
        """While set and in the future, every call raises `CoinGeckoRateLimited` unsent."""
        return self._retry_not_before

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self._key is not None and self.plan != "public":
            # §1: the header, not the query string, so the key stays out of URLs and logs
            headers[KEY_HEADERS[self.plan]] = self._key.get_secret_value()
        return headers

    # --- requests -------------------------------------------------------------------------------

    async def simple_price(self, ids: Sequence[str], vs_currency: str = VS_EUR) -> dict[str, CoinPrice]:
        """`GET /simple/price` for `ids` in `vs_currency`; every requested id must come back."""
        now = self.clock()
        if self._retry_not_before is not None:
            if now < self._retry_not_before:
                self._errors["rate_limited_unsent"] += 1
                raise CoinGeckoRateLimited(self._retry_not_before, "cooling_off")
            self._retry_not_before = None
        params = {
            "ids": ",".join(ids),
            "vs_currencies": vs_currency,
            "include_last_updated_at": "true",
            "precision": "full",
        }
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._requests += 1
        try:
            async with self._session.get(
                f"{self.base_url}/simple/price", params=params, headers=self._headers(), timeout=self.timeout
            ) as response:
                body = await response.read()
                received_at = self.clock()
                self._check_status(response.status, response.headers, body, received_at)
                prices = parse_simple_price(body, ids, vs_currency, received_at)
        except TimeoutError:
            self._fail("timeout", f"no answer within {self.timeout.total}s")
            raise CoinGeckoTimeout(f"no answer within {self.timeout.total}s") from None
        except aiohttp.ClientError as exc:
            self._fail("connection", f"{type(exc).__name__}: {exc}")
            raise CoinGeckoConnectionError(f"{type(exc).__name__}: {exc}") from None
        except CoinGeckoUnknownId as exc:
            self._last_prices |= exc.found
            self._fail("unknown_id", str(exc))
            raise
        except CoinGeckoError as exc:
            self._fail(_kind(exc), str(exc))
            raise
        self._successes += 1
        self._last_success_at = received_at
        self._last_prices |= prices
        return prices

    def _check_status(self, status: int, headers: Any, body: bytes, now: datetime) -> None:
        obj: Any = None
        try:
            obj = json.loads(body, parse_float=Decimal)
        except ValueError:
            pass
        code, message = _error_info(obj)
        if status == 429 or code == 429:
            # code 429 on HTTP 200 is a third-party report (§4, UNCONFIRMED): honour it too
            until, source = rate_limit_until(headers, now, self.default_backoff_s)
            self._retry_not_before = until
            self._log.warning("coingecko_rate_limited", retry_not_before=until.isoformat(), source=source)
            raise CoinGeckoRateLimited(until, source)
        if status in (401, 403) or code in (10002, 10010, 10011):
            raise CoinGeckoAuthError(status, code, message)
        if status != 200:
            raise CoinGeckoHTTPError(status, code, message)

    def _fail(self, kind: str, message: str) -> None:
        self._errors[kind] += 1
        self._last_error = f"{kind}: {message}"
        self._last_error_at = self.clock()
        if kind != "rate_limited":
            self._log.warning("coingecko_request_failed", kind=kind, error=message)

    async def btc_eur(self) -> CoinPrice:
        return (await self.simple_price([BTC_ID], VS_EUR))[BTC_ID]

    async def fetch_quote(self) -> CoinGeckoQuote:
        """BTC/EUR and EURe/EUR in one request (§6: batching saves quota). A missing EURe id
        degrades to `eure_eur=None` with the reason; a missing bitcoin raises."""
        ids = [BTC_ID, self.eure_id]
        try:
            prices = await self.simple_price(ids, VS_EUR)
        except CoinGeckoUnknownId as exc:
            if BTC_ID in exc.missing:
                raise
            return CoinGeckoQuote(btc_eur=exc.found[BTC_ID], eure_eur=None, eure_error=str(exc))
        return CoinGeckoQuote(btc_eur=prices[BTC_ID], eure_eur=prices[self.eure_id])

    # --- freshness and health -------------------------------------------------------------------

    def is_stale(self, price: CoinPrice, now: datetime | None = None) -> bool:
        """Stale by CoinGecko's `last_updated_at` (§3), with the EURe bound for the EURe id."""
        bound = self.eure_stale_after if price.coin_id == self.eure_id else self.stale_after
        return price.age(now or self.clock()) > bound

    def state(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "venue": "coingecko",
            "base_url": self.base_url,
            "plan": self.plan,
            "key_configured": self._key is not None,
            "requests": self._requests,
            "successes": self._successes,
            "last_success_at": _iso(self._last_success_at),
            "errors": dict(self._errors),
            "last_error": self._last_error,
            "last_error_at": _iso(self._last_error_at),
            "retry_not_before": _iso(self._retry_not_before),
            "rate_limited": self._retry_not_before is not None and now < self._retry_not_before,
            "prices": {
                coin_id: {
                    "vs_currency": p.vs_currency,
                    "price": str(p.price),
                    "last_updated_at": p.last_updated_at.isoformat(),
                    "age_s": p.age(now).total_seconds(),
                    "stale": self.is_stale(p, now),
                }
                for coin_id, p in self._last_prices.items()
            },
        }


def _kind(exc: CoinGeckoError) -> str:
    return {
        CoinGeckoRateLimited: "rate_limited",
        CoinGeckoAuthError: "auth",
        CoinGeckoHTTPError: "http",
        CoinGeckoResponseError: "bad_response",
    }.get(type(exc), "error")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


__all__ = [
    "BTC_ID",
    "DEMO_BASE_URL",
    "EURE_ID",
    "KEY_HEADERS",
    "PRO_BASE_URL",
    "CoinGeckoAuthError",
    "CoinGeckoClient",
    "CoinGeckoConnectionError",
    "CoinGeckoError",
    "CoinGeckoHTTPError",
    "CoinGeckoQuote",
    "CoinGeckoRateLimited",
    "CoinGeckoResponseError",
    "CoinGeckoTimeout",
    "CoinGeckoUnknownId",
    "CoinPrice",
    "parse_simple_price",
    "rate_limit_until",
    "read_api_key",
]
