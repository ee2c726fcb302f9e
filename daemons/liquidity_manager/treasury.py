"""The treasury configuration (`QL_TREASURY_FILE`, TOML or JSON): which assets the treasury funds
and withdraws, through which POA chains, and the labelled external wallets it deals with.

Pure: parsing, validation and the route and wallet answers the service asks for. Validation is
strict at load, so a wrong file stops the daemon at start with a message naming the entry, not
at the first funding request:

- every asset is in the asset registry and has a POA funding route; every chain listed for it is
  that route's chain (nBTC has no supported route today: listing it is refused with the
  registry's reason);
- wallet labels are unique; a wallet's chain is a treasury chain; its address fits the chain's
  address format; the assets it names are treasury assets on that chain.

At request time `route()` refuses, with a reason the operator can act on, an unknown asset, an
asset with no supported route, an unknown chain, a chain that does not fund the asset, and a
route the treasury file does not list; `destination()` accepts only a labelled wallet.

Example (TOML)::

    [[assets]]
    asset_id = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
    chains = ["eth:100"]

    [[wallets]]
    label = "gnosis-treasury"
    chain = "eth:100"
    address = "0x1111111111111111111111111111111111111111"
    purpose = "both"          # funding source, withdrawal destination, or both
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemons.core.assets import REGISTRY, Asset, UnknownAsset, UnsupportedFundingRoute, lookup

# The POA chains some registry asset is funded through: anything else is an unknown chain.
KNOWN_CHAINS: frozenset[str] = frozenset(a.poa_chain for a in REGISTRY.values() if a.poa_chain)

_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BTC_BECH32 = re.compile(r"^(bc1|BC1)[02-9ac-hj-np-zAC-HJ-NP-Z]{6,87}$")
_BTC_BASE58 = re.compile(r"^[13][1-9A-HJ-NP-Za-km-z]{25,34}$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")

Purpose = Literal["funding", "withdrawal", "both"]


class TreasuryFileError(Exception):
    """The treasury file is missing or invalid; the message names the file and the entry."""


class RouteRefused(Exception):
    """A request the treasury cannot serve; `reason` says why in one line, `code` classifies it."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def address_fits_chain(chain: str, address: str) -> bool:
    """Whether `address` has the shape of an address on `chain` (no checksum verification)."""
    if chain.startswith("eth:"):
        return _EVM_ADDRESS.match(address) is not None
    if chain.startswith("btc:"):
        # bech32 is all one case; mixed case is invalid (BIP 173)
        if _BTC_BECH32.match(address):
            return address == address.lower() or address == address.upper()
        return _BTC_BASE58.match(address) is not None
    return bool(address) and len(address) <= 128 and not any(c.isspace() for c in address)


def same_address(chain: str, a: str, b: str) -> bool:
    """EVM and bech32 addresses compare case-insensitively; base58 ones exactly."""
    if chain.startswith("eth:") or a.lower().startswith("bc1"):
        return a.lower() == b.lower()
    return a == b


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TreasuryAsset(_Model):
    asset_id: str
    # POA chains this asset is funded and withdrawn through (today exactly its registry route)
    chains: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _routable(self) -> TreasuryAsset:
        try:
            route_chain = lookup(self.asset_id).funding_chain()
        except (UnknownAsset, UnsupportedFundingRoute) as exc:
            raise ValueError(str(exc)) from None
        if not self.chains:
            raise ValueError(f"{self.asset_id}: list its chains (it is funded through {route_chain!r})")
        for chain in self.chains:
            if chain != route_chain:
                raise ValueError(f"{self.asset_id} is funded through chain {route_chain!r}, not {chain!r}")
        if len(set(self.chains)) != len(self.chains):
            raise ValueError(f"{self.asset_id}: a chain is listed twice")
        return self

    @property
    def asset(self) -> Asset:
        return lookup(self.asset_id)


class TreasuryWallet(_Model):
    """An external wallet the operator funds from or withdraws to, known by its label."""

    label: str
    chain: str
    address: str
    # treasury assets this wallet holds; empty: every treasury asset on its chain
    assets: tuple[str, ...] = ()
    purpose: Purpose = "both"
    note: str | None = Field(default=None, max_length=500)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError("a wallet label is 1-64 of a-z 0-9 _ . - and starts with a letter or digit")
        return value

    @model_validator(mode="after")
    def _address(self) -> TreasuryWallet:
        if not address_fits_chain(self.chain, self.address):
            raise ValueError(f"wallet {self.label!r}: {self.address!r} is not an address on chain {self.chain!r}")
        return self

    def serves(self, asset_id: str, purpose: Literal["funding", "withdrawal"]) -> bool:
        return (not self.assets or asset_id in self.assets) and self.purpose in (purpose, "both")


@dataclass(frozen=True)
class Route:
    """A treasury asset and the POA chain that moves it."""

    asset: Asset
    chain: str

    @property
    def asset_id(self) -> str:
        return self.asset.asset_id


class TreasuryConfig(_Model):
    assets: tuple[TreasuryAsset, ...] = Field(min_length=1)
    wallets: tuple[TreasuryWallet, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> TreasuryConfig:
        ids = [a.asset_id for a in self.assets]
        if len(set(ids)) != len(ids):
            raise ValueError("an asset is listed twice")
        labels = [w.label for w in self.wallets]
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        if dupes:
            raise ValueError(f"wallet labels must be unique: {', '.join(dupes)}")
        for wallet in self.wallets:
            on_chain = {a.asset_id for a in self.assets if wallet.chain in a.chains}
            if not on_chain:
                raise ValueError(f"wallet {wallet.label!r}: chain {wallet.chain!r} is not a treasury chain")
            unknown = [a for a in wallet.assets if a not in on_chain]
            if unknown:
                raise ValueError(
                    f"wallet {wallet.label!r}: {', '.join(unknown)} not a treasury asset on {wallet.chain}"
                )
        return self

    # --- answers ------------------------------------------------------------------------------

    @property
    def routes(self) -> list[Route]:
        return [Route(a.asset, chain) for a in self.assets for chain in a.chains]

    @property
    def chains(self) -> list[str]:
        return sorted({chain for a in self.assets for chain in a.chains})

    def route(self, asset_id: str, chain: str | None = None) -> Route:
        """The route for a funding or withdrawal request, or `RouteRefused` saying why not.

        The registry's answer comes first (unknown asset, no supported route), then the chain
        (unknown, or not the one that funds the asset), then the treasury file (not listed)."""
        try:
            asset = lookup(asset_id)
            route_chain = asset.funding_chain()
        except UnknownAsset as exc:
            raise RouteRefused("unknown_asset", str(exc)) from None
        except UnsupportedFundingRoute as exc:
            raise RouteRefused("unsupported_route", str(exc)) from None
        if chain is not None and chain not in KNOWN_CHAINS:
            raise RouteRefused("unknown_chain", f"unknown chain {chain!r}: the POA chains are {sorted(KNOWN_CHAINS)}")
        chain = chain or route_chain
        if chain != route_chain:
            raise RouteRefused(
                "unsupported_route", f"{asset_id} is funded through chain {route_chain!r}, not {chain!r}"
            )
        entry = next((a for a in self.assets if a.asset_id == asset_id), None)
        if entry is None or chain not in entry.chains:
            raise RouteRefused(
                "not_in_treasury", f"{asset_id} on {chain} is not a route of the treasury file (QL_TREASURY_FILE)"
            )
        return Route(asset, chain)

    def wallet(self, label: str) -> TreasuryWallet | None:
        return next((w for w in self.wallets if w.label == label), None)

    def funding_source(self, route: Route, label: str | None) -> TreasuryWallet | None:
        """The labelled wallet an operator says a transfer came from (optional)."""
        if label is None:
            return None
        wallet = self.wallet(label)
        if wallet is None:
            raise RouteRefused("unknown_wallet", f"no wallet labelled {label!r} in the treasury file")
        if wallet.chain != route.chain or not wallet.serves(route.asset_id, "funding"):
            raise RouteRefused(
                "wallet_mismatch", f"wallet {label!r} is not a funding wallet for {route.asset_id} on {route.chain}"
            )
        return wallet

    def destination(self, route: Route, label: str | None, address: str | None) -> TreasuryWallet:
        """The withdrawal destination: only a labelled wallet of the route's chain that takes the
        asset. Named by label, by address, or both (then they must agree)."""
        if label is None and address is None:
            raise RouteRefused("unknown_wallet", "a withdrawal names its destination wallet (label or address)")
        if label is not None:
            wallet = self.wallet(label)
            if wallet is None:
                raise RouteRefused("unknown_wallet", f"no wallet labelled {label!r} in the treasury file")
            if address is not None and not same_address(wallet.chain, wallet.address, address):
                raise RouteRefused("wallet_mismatch", f"address {address!r} is not the address of wallet {label!r}")
        else:
            assert address is not None
            wallet = next(
                (w for w in self.wallets if w.chain == route.chain and same_address(w.chain, w.address, address)), None
            )
            if wallet is None:
                raise RouteRefused(
                    "unknown_wallet",
                    f"{address!r} is not a labelled treasury wallet on {route.chain}: "
                    "withdrawals go to listed wallets only",
                )
        if wallet.chain != route.chain or not wallet.serves(route.asset_id, "withdrawal"):
            raise RouteRefused(
                "wallet_mismatch",
                f"wallet {wallet.label!r} is not a withdrawal destination for {route.asset_id} on {route.chain}",
            )
        return wallet

    def view(self) -> dict[str, Any]:
        return {
            "assets": [
                {
                    "asset_id": a.asset_id,
                    "symbol": a.asset.symbol,
                    "decimals": a.asset.decimals,
                    "chains": list(a.chains),
                }
                for a in self.assets
            ],
            "wallets": [
                {
                    "label": w.label,
                    "chain": w.chain,
                    "address": w.address,
                    "assets": list(w.assets),
                    "purpose": w.purpose,
                    "note": w.note,
                }
                for w in self.wallets
            ],
        }


def parse_treasury(text: str, fmt: Literal["toml", "json"], source: str = "treasury file") -> TreasuryConfig:
    try:
        raw: Any = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise TreasuryFileError(f"{source}: not valid {fmt.upper()}: {exc}") from None
    try:
        return TreasuryConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise TreasuryFileError(f"{source}: {where}: {first['msg']}") from None


def load_treasury(path: Path | None) -> TreasuryConfig:
    """Read `QL_TREASURY_FILE`: `.json` is JSON, anything else TOML."""
    if path is None:
        raise TreasuryFileError("QL_TREASURY_FILE is not set")
    try:
        text = path.read_text()
    except OSError as exc:
        raise TreasuryFileError(f"QL_TREASURY_FILE: cannot read {path}: {exc.strerror or exc}") from None
    return parse_treasury(text, "json" if path.suffix.lower() == ".json" else "toml", f"QL_TREASURY_FILE {path}")
