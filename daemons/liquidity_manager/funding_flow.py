"""Funding: deposit addresses per treasury route (asked of the POA bridge once, kept), an
operator's recorded transfer checked against the treasury file and refused as a duplicate when
its (chain, tx hash) was seen before, told to the bridge (`notify_deposit`) and followed in
`recent_deposits` until credited, `delayed` past its bound. Pure rules in `funding.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from daemons.core.control import Caller, ControlError
from daemons.core.db import DB_ERRORS
from daemons.core.events import LiquidityAction, now_utc
from daemons.core.tx_hash import normalize_tx_hash
from daemons.liquidity_manager import funding
from daemons.liquidity_manager.bodies import DepositAddressBody, FundingBody
from daemons.liquidity_manager.funding import BridgeDeposit, FundingAttempt
from daemons.liquidity_manager.store import DatabaseDown, DepositAddressRecord
from daemons.liquidity_manager.treasury import Route as TreasuryRoute
from daemons.liquidity_manager.treasury import RouteRefused
from daemons.liquidity_manager.views import amounts_as_text, funding_view
from daemons.venues.poa_bridge import (
    PoaBridgeError,
    PoaBridgeRpcError,
)

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager

_PAGE = 100  # recent_deposits' maximum page (docs/poa-bridge.md §4)


class FundingFlow:
    def __init__(self, ex: LiquidityManager) -> None:
        self.ex = ex

    async def ensure_addresses(self, now: datetime) -> None:
        assert self.ex.treasury is not None
        retry = timedelta(seconds=max(self.ex.cfg.liquidity_poll_interval_s * 10, 60))
        for route in self.ex.treasury.routes:
            if route.chain in self.ex.addresses:
                continue
            last = self.ex.address_errors.get(route.chain)
            if last is not None and now - last["at"] < retry:
                continue  # do not flood the history with the same failure every poll
            with contextlib.suppress(PoaBridgeError):
                await self._request_address(route, operator=None, reason="kept for the treasury route")

    async def _request_address(
        self, route: TreasuryRoute, operator: str | None, reason: str | None
    ) -> DepositAddressRecord:
        """requested → issued | failed; raises `PoaBridgeError` after recording the failure."""
        assert self.ex.account_id is not None
        action_id = str(uuid.uuid4())
        base = LiquidityAction(
            liquidity_action_id=action_id,
            kind="deposit_address",
            status="requested",
            asset_id=route.asset_id,
            chain=route.chain,
            operator=operator,
            reason=reason,
        )
        await self.ex.journal.commit([base])
        try:
            answer = await self.ex.bridge.deposit_address(self.ex.account_id, route.chain)
        except PoaBridgeError as exc:
            self.ex.venues.failed("poa_bridge", exc)
            self.ex.address_errors[route.chain] = {"error": str(exc), "at": now_utc(), "liquidity_action_id": action_id}
            await self.ex.journal.commit(
                [base.model_copy(update={"status": "failed", "reason": f"deposit_address: {exc}"})]
            )
            raise
        self.ex.venues.ok("poa_bridge")
        record = DepositAddressRecord(route.chain, answer.address, answer.memo, action_id, now_utc())
        await self.ex.journal.commit(
            [base.model_copy(update={"status": "issued", "address": answer.address})], address=record
        )
        self.ex.addresses[route.chain] = record
        self.ex.address_errors.pop(route.chain, None)
        return record

    async def notify_recorded(self) -> None:
        for attempt in [a for a in self.ex.funding.values() if a.stage == "recorded"]:
            await self._notify(attempt)

    async def _notify(self, attempt: FundingAttempt) -> None:
        """Tell the bridge about the transfer (an optional speed-up, docs/poa-bridge.md §5); retried
        each poll until accepted or the deposit is seen."""
        address = self.ex.addresses.get(attempt.chain)
        if address is None:
            return
        try:
            await self.ex.bridge.notify_deposit(address.address, attempt.tx_hash, chain=attempt.chain)
        except PoaBridgeError as exc:
            if isinstance(exc, PoaBridgeRpcError):
                self.ex.venues.ok("poa_bridge")  # it answered: the bridge is up, it refused this one
            else:
                self.ex.venues.failed("poa_bridge", exc)
            self.ex.notify_errors[attempt.liquidity_action_id] = str(exc)
            return
        self.ex.venues.ok("poa_bridge")
        self.ex.notify_errors.pop(attempt.liquidity_action_id, None)
        now = now_utc()
        await self.ex.journal.step_funding(
            attempt.liquidity_action_id,
            lambda a: funding.notified(
                dataclasses.replace(a, deposit_address=a.deposit_address or address.address), now
            ),
        )

    async def _recent_deposits(self, chain: str, wanted: set[str]) -> list[BridgeDeposit]:
        """Pages of `recent_deposits` until every wanted tx hash is found or the pages run out."""
        assert self.ex.account_id is not None
        found: list[BridgeDeposit] = []
        for page in range(self.ex.cfg.liquidity_deposit_pages):
            answer = await self.ex.bridge.recent_deposits(self.ex.account_id, chain, limit=_PAGE, offset=page * _PAGE)
            for d in answer.deposits:
                found.append(
                    BridgeDeposit(
                        tx_hash=normalize_tx_hash(d.tx_hash),
                        chain=d.chain or chain,
                        status=d.status,
                        amount=d.amount,
                        asset_id=d.intents_token_id,
                        address=d.address,
                    )
                )
            if len(answer.deposits) < _PAGE or wanted <= {d.tx_hash for d in found}:
                break
        return found

    async def follow(self) -> bool:
        """Apply the bridge's deposits to every watched attempt; False when the bridge failed."""
        assert self.ex.treasury is not None and self.ex.store is not None
        bound = timedelta(seconds=self.ex.cfg.liquidity_credit_delay_s)
        ok = True
        for chain in self.ex.treasury.chains:
            watched = [a for a in self.ex.funding.values() if a.watched and a.chain == chain]
            try:
                listed = funding.deposits_by_tx(await self._recent_deposits(chain, {a.tx_hash for a in watched}))
            except PoaBridgeError as exc:
                self.ex.venues.failed("poa_bridge", exc)
                ok = False
                listed = None
            else:
                self.ex.venues.ok("poa_bridge")
            now = now_utc()
            for attempt in watched:
                deposit = listed.get((chain, attempt.tx_hash)) if listed is not None else None
                await self.ex.journal.step_funding(
                    attempt.liquidity_action_id,
                    functools.partial(funding.advance, deposit=deposit, now=now, bound=bound),
                )
            if listed is not None:
                await self._note_unmatched(chain, listed)
        return ok

    async def _note_unmatched(self, chain: str, listed: dict[tuple[str, str], BridgeDeposit]) -> None:
        assert self.ex.store is not None
        candidates = funding.unmatched(listed, self.ex.funding.values())
        if candidates:
            try:
                recorded = await self.ex.store.recorded_tx_hashes(chain, [d.tx_hash for d in candidates])
            except DB_ERRORS as exc:
                self.ex._db_failed(exc)
                return
            candidates = [d for d in candidates if d.tx_hash not in recorded]
        self.ex.unmatched[chain] = [
            amounts_as_text(dataclasses.asdict(d)) for d in candidates[: self.ex.cfg.liquidity_recent]
        ]

    async def deposit_address(self, body: DepositAddressBody, caller: Caller) -> dict[str, Any]:
        self.ex.controls.guard()
        assert self.ex.treasury is not None
        try:
            route = self.ex.treasury.route(body.asset_id, body.chain)
        except RouteRefused as exc:
            raise await self.ex.controls.refuse("deposit_address", body, caller, 422, exc.code, exc.reason) from None
        held = self.ex.addresses.get(route.chain)
        if held is not None and not body.renew:
            return {
                "asset_id": route.asset_id,
                "chain": route.chain,
                "address": held.address,
                "memo": held.memo,
                "issued_at": held.issued_at,
                "liquidity_action_id": held.liquidity_action_id,
                "existing": True,
            }
        try:
            record = await self._request_address(route, caller.operator, caller.reason)
        except PoaBridgeError as exc:
            raise ControlError(502, f"the POA bridge did not issue an address for {route.chain}: {exc}") from None
        except DatabaseDown:
            raise ControlError(503, "database unavailable: the request could not be recorded") from None
        self.ex.audit.record("deposit_address", caller, "issued", {"chain": route.chain, "address": record.address})
        return {
            "asset_id": route.asset_id,
            "chain": route.chain,
            "address": record.address,
            "memo": record.memo,
            "issued_at": record.issued_at,
            "liquidity_action_id": record.liquidity_action_id,
            "existing": False,
        }

    async def record_funding(self, body: FundingBody, caller: Caller) -> dict[str, Any]:
        self.ex.controls.guard()
        assert self.ex.treasury is not None and self.ex.store is not None and self.ex.account_id is not None
        if body.liquidity_action_id is not None:
            replay = self.ex.funding.get(body.liquidity_action_id) or await self.ex.controls.db(
                self.ex.store.funding_by_id(body.liquidity_action_id)
            )
            if replay is not None:
                if replay.chain != (body.chain or replay.chain) or replay.tx_hash != normalize_tx_hash(body.tx_hash):
                    raise ControlError(409, f"liquidity_action_id {body.liquidity_action_id} names another transfer")
                return {**funding_view(self.ex.funding.get(replay.liquidity_action_id, replay)), "replayed": True}
        try:
            route = self.ex.treasury.route(body.asset_id, body.chain)
            source = self.ex.treasury.funding_source(route, body.wallet_label)
            if not funding.tx_hash_fits_chain(route.chain, body.tx_hash):
                raise RouteRefused("invalid_tx_hash", f"{body.tx_hash!r} is not a transaction hash on {route.chain}")
        except RouteRefused as exc:
            raise await self.ex.controls.refuse(
                "funding",
                body,
                caller,
                422,
                exc.code,
                exc.reason,
                tx_hash=body.tx_hash,
                wallet_label=body.wallet_label,
                amount=body.amount,
            ) from None
        amount = self.ex.controls.base_units(body, route)
        action_id = body.liquidity_action_id or str(uuid.uuid4())
        held = self.ex.addresses.get(route.chain)
        warning = None
        with contextlib.suppress(PoaBridgeError):  # a hint only: the transfer is recorded regardless
            token = await self.ex.venues.bridge_token(route)
            if token is not None and amount < token.min_deposit_amount:
                warning = (
                    f"below the bridge's minimum deposit of {token.min_deposit_amount}: "
                    "it will not be swept until more arrives"
                )
        attempt = funding.record(
            liquidity_action_id=action_id,
            account_id=self.ex.account_id,
            asset_id=route.asset_id,
            chain=route.chain,
            amount=amount,
            tx_hash=body.tx_hash,
            now=now_utc(),
            deposit_address=held.address if held else None,
            wallet_label=source.label if source else None,
            operator=caller.operator,
            note=caller.reason,
        )
        if warning is not None:
            attempt = dataclasses.replace(attempt, reason="; ".join(filter(None, [caller.reason, warning])))
        async with self.ex._state_lock:
            event = attempt.event()
            try:
                original = await self.ex.store.insert_funding(attempt, [self.ex.journal.event(event)])
            except asyncpg.UniqueViolationError:
                raise ControlError(409, f"liquidity_action_id {action_id} is already in use") from None
            except DB_ERRORS as exc:
                self.ex._db_failed(exc)
                raise ControlError(503, "database unavailable: the funding action could not be recorded") from None
            self.ex._db_ok()
            if original is None:
                self.ex.funding[action_id] = attempt
                self.ex._wake_outbox()
                self.ex.journal.log(event)
        if original is not None:
            raise await self._refuse_duplicate(attempt, original, caller)
        self.ex.audit.record(
            "record_funding",
            caller,
            "requested",
            {"liquidity_action_id": action_id, "chain": route.chain, "tx_hash": attempt.tx_hash},
        )
        if held is None:
            with contextlib.suppress(PoaBridgeError, DatabaseDown):
                await self._request_address(route, caller.operator, "needed to notify a funding transfer")
        with contextlib.suppress(DatabaseDown):
            await self._notify(self.ex.funding[action_id])
        self.ex._wake.set()
        return funding_view(self.ex.funding[action_id])

    async def _refuse_duplicate(self, attempt: FundingAttempt, original: str, caller: Caller) -> ControlError:
        action_id = str(uuid.uuid4())
        payload = (
            dataclasses.replace(attempt, liquidity_action_id=action_id)
            .event()
            .model_copy(
                update={
                    "status": "duplicate",
                    "duplicate_of": original,
                    "reason": f"{attempt.chain} transaction {attempt.tx_hash} is already recorded as {original}",
                }
            )
        )
        try:
            await self.ex.journal.emit(payload)
        except DatabaseDown:
            return ControlError(503, "duplicate funding, and the refusal could not be recorded: database unavailable")
        self.ex.refusals.appendleft({**payload.model_dump(mode="json"), "at": now_utc()})
        return ControlError(409, f"duplicate: {payload.reason} [liquidity_action_id {action_id}]")
