"""The asset registry: every asset quoteloop knows, how many decimals it has, and how (or whether)
it can be funded into the `intents.near` verifier.

Facts, with their sources, are in `docs/assets.md` (§n below); the design rule is `docs/design.md`
§7 (last bullet). quoteloop trades one pair, BTC/EURe, and the BTC side is a setting: nBTC (the
canonical BTC since 2026-05, Omni bridge) by default, or the legacy POA BTC. `ActivePair`
is the one place that turns that setting into answers: which two token ids to watch, which
direction a request is, how many decimals an id has, and which POA chain funds it.

A lookup never guesses. An id outside the registry (or outside the active pair) raises
`UnknownAsset`; an asset or chain with no funding route the project supports raises
`UnsupportedFundingRoute` carrying the reason, so the refusal is visible to the operator.

Amounts are integer base units everywhere; `to_units`/`to_base_units` convert to and from
`Decimal` units exactly (no context rounding, no float), rounding only when the caller names a
direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Decimal
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemons.core.events import Direction

Symbol = Literal["BTC", "EURe"]
Bridge = Literal["poa", "omni"]

NEP141 = "nep141:"

EURE_ID = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
NBTC_ID = "nep141:nbtc.bridge.near"
POA_BTC_ID = "nep141:btc.omft.near"
# nBTC is the canonical BTC since defuse-frontend 6005243 (2026-05-06); btc.omft.near is "BTC (LEGACY)" (§3).
DEFAULT_BTC_ASSET_ID = NBTC_ID


class AssetError(ValueError):
    """A registry lookup that cannot be answered; the message says why."""


class UnknownAsset(AssetError):
    def __init__(self, asset_id: str, detail: str = "not in the asset registry") -> None:
        self.asset_id = asset_id
        super().__init__(f"unknown asset {asset_id!r}: {detail}")


class UnsupportedFundingRoute(AssetError):
    def __init__(self, reason: str, *, asset_id: str | None = None, chain: str | None = None) -> None:
        self.asset_id = asset_id
        self.chain = chain
        self.reason = reason
        subject = asset_id if asset_id is not None else f"chain {chain!r}"
        super().__init__(f"no supported funding route for {subject}: {reason}")


class InexactAmount(ValueError):
    """A Decimal amount has more fractional digits than the asset's decimals allow."""


class Asset(BaseModel):
    """One asset as quoteloop knows it. Exactly one of `poa_chain` / `unsupported_reason` is set:
    either the POA bridge chain that funds it, or why no funding route is supported."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: Symbol
    asset_id: str = Field(pattern=r"^nep141:[a-z0-9_.\-]+$")  # the defuse / intents token id (§1)
    decimals: int = Field(ge=0, le=38)
    name: str
    bridge: Bridge
    # POA chain key used by `deposit_address` / `recent_deposits` (docs/poa-bridge.md §3, §4),
    # e.g. "eth:100" for Gnosis.
    poa_chain: str | None = None
    unsupported_reason: str | None = None
    # The frontend lists the id in DEPRECATED_TOKENS (§3); still quotable, but say so.
    legacy: bool = False

    @model_validator(mode="after")
    def _one_route_answer(self) -> Asset:
        if (self.poa_chain is None) == (self.unsupported_reason is None):
            raise ValueError("an asset has either a poa_chain or an unsupported_reason, not both or neither")
        return self

    @property
    def near_token_id(self) -> str:
        """The unprefixed NEP-141 contract (what `ft_withdraw` and `withdrawal_estimate` take, §1)."""
        return self.asset_id.removeprefix(NEP141)

    @property
    def fundable(self) -> bool:
        return self.poa_chain is not None

    def funding_chain(self) -> str:
        if self.poa_chain is None:
            raise UnsupportedFundingRoute(self.unsupported_reason or "unsupported", asset_id=self.asset_id)
        return self.poa_chain

    def to_units(self, base_units: int) -> Decimal:
        return to_units(base_units, self.decimals)

    def to_base_units(self, units: Decimal | int, rounding: str | None = None) -> int:
        return to_base_units(units, self.decimals, rounding=rounding)


EURE = Asset(
    symbol="EURe",
    asset_id=EURE_ID,
    decimals=18,
    name="Monerium EUR emoney (Gnosis)",
    bridge="poa",
    poa_chain="eth:100",
)
NBTC = Asset(
    symbol="BTC",
    asset_id=NBTC_ID,
    decimals=8,
    name="nBTC (NEAR Omni bridge)",
    bridge="omni",
    unsupported_reason="nBTC moves through the NEAR Omni bridge: no funding route supported yet",
)
# Whether POA still accepts new `btc:mainnet` deposits is UNCONFIRMED (§3); the SDK still maps it.
POA_BTC = Asset(
    symbol="BTC",
    asset_id=POA_BTC_ID,
    decimals=8,
    name="BTC (POA, legacy)",
    bridge="poa",
    poa_chain="btc:mainnet",
    legacy=True,
)

REGISTRY: Mapping[str, Asset] = MappingProxyType({a.asset_id: a for a in (EURE, NBTC, POA_BTC)})
BTC_ASSET_IDS: frozenset[str] = frozenset(a.asset_id for a in REGISTRY.values() if a.symbol == "BTC")


def lookup(asset_id: str) -> Asset:
    """Any registry asset, active or not (e.g. to withdraw legacy BTC after switching to nBTC)."""
    try:
        return REGISTRY[asset_id]
    except KeyError:
        raise UnknownAsset(asset_id) from None


class ActivePair:
    """BTC/EURe with the configured BTC id. Immutable; build it once from the setting."""

    __slots__ = ("_btc", "_eure")

    def __init__(self, btc_asset_id: str = DEFAULT_BTC_ASSET_ID) -> None:
        if btc_asset_id not in BTC_ASSET_IDS:
            raise UnknownAsset(btc_asset_id, f"not a BTC asset of the registry (choose one of {sorted(BTC_ASSET_IDS)})")
        self._btc = REGISTRY[btc_asset_id]
        self._eure = EURE

    def __repr__(self) -> str:
        return f"ActivePair(btc_asset_id={self._btc.asset_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActivePair) and other._btc == self._btc

    def __hash__(self) -> int:
        return hash(self._btc.asset_id)

    @property
    def btc(self) -> Asset:
        return self._btc

    @property
    def eure(self) -> Asset:
        return self._eure

    @property
    def assets(self) -> tuple[Asset, Asset]:
        return (self._btc, self._eure)

    @property
    def token_ids(self) -> tuple[str, str]:
        """(BTC id, EURe id): the relay subscription filter and the balances to read."""
        return (self._btc.asset_id, self._eure.asset_id)

    def asset(self, asset_id: str) -> Asset:
        if asset_id == self._btc.asset_id:
            return self._btc
        if asset_id == self._eure.asset_id:
            return self._eure
        if asset_id in REGISTRY:
            raise UnknownAsset(asset_id, f"in the registry but not in the active pair (BTC is {self._btc.asset_id})")
        raise UnknownAsset(asset_id)

    def decimals(self, asset_id: str) -> int:
        return self.asset(asset_id).decimals

    def direction_of(self, asset_in: str, asset_out: str) -> Direction | None:
        """The direction of a quote request, named from quoteloop's side (docs/design.md §2).

        The request's `asset_in` is what the user offers (quoteloop receives it); `asset_out` is
        what the user wants (quoteloop gives it). None for anything that is not exactly the pair.
        """
        btc, eure = self._btc.asset_id, self._eure.asset_id
        if asset_in == eure and asset_out == btc:
            return "SELL_BTC"
        if asset_in == btc and asset_out == eure:
            return "BUY_BTC"
        return None

    def source_asset(self, direction: Direction) -> Asset:
        """The asset quoteloop gives in `direction`: the one that must be credited to fire."""
        return self._btc if direction == "SELL_BTC" else self._eure

    def received_asset(self, direction: Direction) -> Asset:
        return self._eure if direction == "SELL_BTC" else self._btc

    def funding_chain(self, asset_id: str) -> str:
        """The POA chain that funds `asset_id`; refuses unknown assets and unsupported routes."""
        return self.asset(asset_id).funding_chain()

    def asset_for_chain(self, chain: str) -> Asset:
        """The pair asset funded through POA chain `chain` (for a deposit request named by chain)."""
        for a in self.assets:
            if a.poa_chain == chain:
                return a
        if chain == "btc:mainnet" and not self._btc.fundable:
            # The operator asked for BTC funding while the active BTC has no POA route: say why.
            raise UnsupportedFundingRoute(
                self._btc.unsupported_reason or "unsupported", asset_id=self._btc.asset_id, chain=chain
            )
        supported = sorted(a.poa_chain for a in self.assets if a.poa_chain)
        raise UnsupportedFundingRoute(
            f"no asset of the active pair is funded through chain {chain!r} (supported: {supported})", chain=chain
        )


# --- exact unit conversion -------------------------------------------------------------------

_DIRECTED = {ROUND_FLOOR, ROUND_CEILING, ROUND_DOWN, ROUND_UP}


def to_units(base_units: int, decimals: int) -> Decimal:
    """Base units → Decimal units, exactly: 150000000 sats at 8 decimals → Decimal('1.50000000')."""
    if isinstance(base_units, bool) or not isinstance(base_units, int):
        raise TypeError(f"base units must be int, got {type(base_units).__name__}")
    if decimals < 0:
        raise ValueError("decimals must be >= 0")
    # Built from the digit tuple, so no decimal context (precision 28 by default) can round a u128.
    digits = tuple(int(c) for c in str(abs(base_units)))
    return Decimal((1 if base_units < 0 else 0, digits, -decimals))


def to_base_units(units: Decimal | int, decimals: int, *, rounding: str | None = None) -> int:
    """Decimal units → integer base units.

    Exact by default: a value with more fractional digits than `decimals` raises `InexactAmount`.
    Pass `rounding` (`decimal.ROUND_FLOOR`, `ROUND_CEILING`, `ROUND_DOWN` or `ROUND_UP`) where the
    caller has decided which way the remainder must go (the strategy rounds in quoteloop's favour).
    """
    if isinstance(units, (bool, float)):
        raise TypeError("units must be Decimal or int, never float or bool")
    if isinstance(units, int):
        units = Decimal(units)
    if not isinstance(units, Decimal):
        raise TypeError(f"units must be Decimal, got {type(units).__name__}")
    if not units.is_finite():
        raise ValueError("units must be finite")
    if decimals < 0:
        raise ValueError("decimals must be >= 0")
    if rounding is not None and rounding not in _DIRECTED:
        raise ValueError(f"rounding must be one of {sorted(_DIRECTED)}, got {rounding!r}")
    sign, digits, exponent = units.as_tuple()
    assert isinstance(exponent, int)  # finite
    magnitude = int("".join(map(str, digits)) or "0")
    shift = exponent + decimals
    if shift >= 0:
        value: int = magnitude * 10**shift
        return -value if sign else value
    divisor: int = 10**-shift
    quotient, remainder = divmod(magnitude, divisor)
    if remainder:
        if rounding is None:
            raise InexactAmount(f"{units} has more than {decimals} decimal places")
        away_from_zero = (
            rounding == ROUND_UP or (rounding == ROUND_CEILING and not sign) or (rounding == ROUND_FLOOR and sign)
        )
        if away_from_zero:
            quotient += 1
    return -quotient if sign else quotient
