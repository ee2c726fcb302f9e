"""The venues as liquidity-manager last saw them: the POA bridge, the relay RPC and NEAR RPC.

Each venue's health is a `Link`: `venue_unavailable` (a warning, with the venue's own error
text) once per outage, `venue_recovered` when it answers again. An error that no open action
would retry is cleared by a read-only probe each poll. The bridge's token records (minimums,
fee) are cached here for a few minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from daemons.core.events import now_utc
from daemons.core.health import Link
from daemons.liquidity_manager.treasury import Route as TreasuryRoute
from daemons.venues.near_intents.near_rpc import NearRpcError
from daemons.venues.near_intents.relay_rpc import RelayRpcClientError
from daemons.venues.poa_bridge import SupportedToken, SupportedTokens

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager

VENUES = ("poa_bridge", "relay_rpc", "near_rpc")
_PROBE_HASH = "1" * 44  # a well-formed intent hash nobody published: get_status answers NOT_FOUND
_TOKENS_TTL = timedelta(minutes=5)


class Venues:
    def __init__(self, ex: LiquidityManager) -> None:
        self.ex = ex
        self.links = {
            venue: Link(ex.log, down="venue_unavailable", up="venue_recovered", level="warning", venue=venue)
            for venue in VENUES
        }
        self._tokens: dict[str, tuple[datetime, SupportedTokens]] = {}

    def ok(self, venue: str) -> None:
        self.links[venue].ok()

    def failed(self, venue: str, exc: BaseException) -> None:
        self.links[venue].fail(str(exc) or exc.__class__.__name__)

    def up(self, venue: str) -> bool:
        return self.links[venue].healthy

    def errors(self) -> dict[str, dict[str, Any]]:
        """Each failing venue's error and since when, in the order they began failing."""
        failing = [(venue, link) for venue, link in self.links.items() if link.error is not None]
        failing.sort(key=lambda item: item[1].since or now_utc())
        return {venue: {"error": link.error, "since": link.since} for venue, link in failing}

    def health_reasons(self) -> list[str]:
        return [reason for venue in sorted(self.links) for reason in self.links[venue].reason(f"{venue}_unavailable")]

    async def probe(self) -> None:
        """A relay or NEAR RPC error with no withdrawal left to retry it would stay up forever:
        ask a read-only question so the error clears when the venue is back."""
        if not self.up("relay_rpc") and self.ex.relay is not None:
            try:
                await self.ex.relay.get_status(_PROBE_HASH)
            except RelayRpcClientError as exc:
                self.failed("relay_rpc", exc)
            else:
                self.ok("relay_rpc")
        if not self.up("near_rpc"):
            try:
                await self.ex.near.current_salt()
            except NearRpcError as exc:
                self.failed("near_rpc", exc)
            else:
                self.ok("near_rpc")

    async def bridge_token(self, route: TreasuryRoute) -> SupportedToken | None:
        """The bridge's record of the route's token (minimums, fee), cached for a few minutes;
        raises `PoaBridgeError` when the bridge cannot say."""
        cached = self._tokens.get(route.chain)
        if cached is None or now_utc() - cached[0] > _TOKENS_TTL:
            cached = (now_utc(), await self.ex.bridge.supported_tokens([route.chain]))
            self._tokens[route.chain] = cached
        return cached[1].by_intents_id(route.asset_id)
