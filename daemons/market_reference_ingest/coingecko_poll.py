"""CoinGecko, the fallback and cross-check source: its client (none while the API key file cannot
be read: Kraken alone still prices, and the missing fallback is shown as unhealthy), the
scheduled polls and the operator's refreshes, and what the last polls found.

A poll turns the quote into the service's CoinGecko view (a missing EURe quote keeps the last
one, which then ages into `stale`) or marks the view unreachable with the error's kind; either
way the evaluation is woken. Scheduled polls stop while paused and wait out a 429 cool-off; a
refresh during the cool-off is refused unsent by the client (`PollOutcome.sent` False).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.market_reference_ingest.policy import CoinGeckoView
from daemons.venues.coingecko import (
    CoinGeckoAuthError,
    CoinGeckoClient,
    CoinGeckoConnectionError,
    CoinGeckoError,
    CoinGeckoHTTPError,
    CoinGeckoRateLimited,
    CoinGeckoResponseError,
    CoinGeckoTimeout,
    CoinGeckoUnknownId,
)

if TYPE_CHECKING:
    from daemons.market_reference_ingest.service import MarketReferenceIngest

Trigger = Literal["scheduled", "refresh"]


def error_kind(exc: CoinGeckoError) -> str:
    # most specific first: CoinGeckoAuthError is a CoinGeckoHTTPError
    for cls, kind in (
        (CoinGeckoRateLimited, "rate_limited"),
        (CoinGeckoTimeout, "timeout"),
        (CoinGeckoConnectionError, "connection"),
        (CoinGeckoAuthError, "auth"),
        (CoinGeckoHTTPError, "http"),
        (CoinGeckoUnknownId, "unknown_id"),
        (CoinGeckoResponseError, "bad_response"),
    ):
        if isinstance(exc, cls):
            return kind
    return "error"


@dataclass(frozen=True)
class PollOutcome:
    result: Literal["ok", "rate_limited", "failed"]
    sent: bool = True  # False: refused unsent because a 429 cool-off was still running
    error: str | None = None
    retry_not_before: datetime | None = None


class CoinGeckoPolls:
    def __init__(self, ex: MarketReferenceIngest) -> None:
        self.ex = ex
        self.client: CoinGeckoClient | None = None
        self.blocked: str | None = None  # why there is no client (the API key file)
        self.eure_error: str | None = None
        self.last_poll_at: datetime | None = None
        self.last_trigger: Trigger | None = None
        self.last_success_at: datetime | None = None
        self.next_poll_at: datetime | None = None
        self._lock = asyncio.Lock()

    def open(self) -> None:
        cfg = self.ex.cfg
        api_key = None
        if cfg.coingecko_api_key_file is not None:
            try:
                api_key = read_secret_file(cfg.coingecko_api_key_file, "QL_COINGECKO_API_KEY_FILE")
            except SecretFileError as exc:
                # Kraken alone still prices; the missing fallback and cross-check are shown as unhealthy
                self.blocked = str(exc)
                self.ex.log.error("coingecko_key_unavailable", venue="coingecko", error=self.blocked)
                return
        self.client = CoinGeckoClient(
            cfg.coingecko_url,
            api_key=api_key,
            timeout_s=cfg.market_coingecko_timeout_s,
            default_backoff_s=cfg.market_coingecko_rate_limit_backoff_s,
            stale_after_s=cfg.market_coingecko_stale_after_s,
            eure_stale_after_s=cfg.market_eure_stale_after_s,
            eure_id=cfg.market_coingecko_eure_id,
            clock=self.ex.clock,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def loop(self) -> None:
        """Scheduled polls until drained: every poll interval, or later when a 429 asks for it."""
        while True:
            if not await self.ex.wait_runnable():
                return
            await self.poll("scheduled")
            now = self.ex.clock()
            delay = self.ex.cfg.market_coingecko_poll_interval_s
            retry = self.client.retry_not_before if self.client is not None else None
            if retry is not None and retry > now:
                delay = max(delay, (retry - now).total_seconds())
            self.next_poll_at = now + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ex.drain_requested.wait(), timeout=delay)

    async def poll(self, trigger: Trigger) -> PollOutcome:
        assert self.client is not None
        ex = self.ex
        async with self._lock:  # a refresh and a scheduled poll never overlap
            ex.counts[f"polls_{trigger}"] += 1
            self.last_poll_at = ex.clock()
            self.last_trigger = trigger
            try:
                quote = await self.client.fetch_quote()
            except CoinGeckoError as exc:
                kind = error_kind(exc)
                ex.counts["poll_failures"] += 1
                ex.cg = dataclasses.replace(ex.cg, reachable=False, poll_error=kind)
                ex.wake()
                if isinstance(exc, CoinGeckoRateLimited):
                    return PollOutcome(
                        "rate_limited", exc.source != "cooling_off", f"{kind}: {exc}", exc.retry_not_before
                    )
                return PollOutcome("failed", True, f"{kind}: {exc}")
            eure = quote.eure_eur
            self.eure_error = quote.eure_error
            ex.cg = CoinGeckoView(
                btc_eur=quote.btc_eur.price,
                btc_updated_at=quote.btc_eur.last_updated_at,
                # a missing EURe quote keeps the last one, which then ages into `stale`
                eure_eur=eure.price if eure is not None else ex.cg.eure_eur,
                eure_updated_at=eure.last_updated_at if eure is not None else ex.cg.eure_updated_at,
                reachable=True,
                poll_error=None,
            )
            self.last_success_at = ex.clock()
            ex.wake()
            return PollOutcome("ok")
