"""The executor's control socket: arm (the signer checked again), disarm (optionally cancelling
live answers through the relay), an operator's verdict on an undecided answer, and `/state`.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from daemons.core.arming import DisarmBody
from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.db import DB_ERRORS
from daemons.core.events import now_utc
from daemons.core.state_models import TradeExecutorFields, conform
from daemons.trade_executor.answer import cancel_payload
from daemons.trade_executor.gates import price_problem
from daemons.trade_executor.ledger import (
    LedgerRow,
    LedgerState,
)
from daemons.trade_executor.settlement import (
    cancel_succeeded,
)
from daemons.trade_executor.signer import authorize, load_key
from daemons.venues.near_intents.relay_rpc import (
    RelayPublishFailed,
    RelayRpcClientError,
)

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor

S = LedgerState


class ResolveBody(OperatorAction):
    """An operator's verdict on an undecided answer, with the evidence as the reason."""

    command_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["settled", "expired"]
    reason: str = Field(min_length=1, max_length=2000)


class Controls:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def authorize_signer(self) -> None:
        before = self.ex.signer.status
        if self.ex.key is not None and self.ex.cfg.signer_account_id:
            self.ex.signer = await authorize(self.ex.cfg.signer_account_id, self.ex.key, self.ex.rpc, now_utc())
            if (
                self.ex.signer.status == "unverified"
            ):  # the node could not say: asked again in a second, not every sweep
                self.ex.sweep.signer_retry_at = asyncio.get_running_loop().time() + 1.0
        if self.ex.signer.status != before or not self.ex.signer.ready:
            log = self.ex.log.info if self.ex.signer.ready else self.ex.log.error
            log(
                "signer_status",
                status=self.ex.signer.status,
                detail=self.ex.signer.detail,
                account_id=self.ex.signer.account_id,
                public_key=self.ex.signer.public_key,
            )
        self.ex.notify_status()

    async def _check_arm(self) -> None:
        # read the key file again: the operator may have just fixed it
        self.ex.key, self.ex.signer = load_key(self.ex.cfg.signer_account_id, self.ex.cfg.signer_key_file)
        await self.authorize_signer()
        if not self.ex.signer.ready:
            raise ControlError(409, f"signer {self.ex.signer.status}: {self.ex.signer.detail}")
        if not self.ex.db.healthy:
            raise ControlError(409, f"ledger unavailable: {self.ex.db.error}")
        if self.ex.relay is None:
            raise ControlError(409, f"relay unavailable: {self.ex.relay_error}")

    async def _on_disarm(self, body: DisarmBody, caller: Caller) -> dict[str, Any]:
        self.ex.notify_status()
        if not body.cancel_live:
            return {}
        return {"cancel_live": await self._cancel_live(caller)}

    async def _cancel_live(self, caller: Caller) -> dict[str, Any]:
        now = now_utc()
        targets = [
            a
            for a in self.ex.book.answers.values()
            if a.nonce is not None and a.deadline is not None and a.deadline > now
        ]
        ids = [a.command_id for a in targets]
        relay: dict[str, Any]
        if not targets:
            relay = {"status": "nothing_live"}
        elif self.ex.key is None or self.ex.relay_rpc is None:
            relay = {
                "status": "error",
                "error": f"cannot sign or publish: signer {self.ex.signer.status}, relay {self.ex.relay_error or 'ok'}",
            }
        else:
            payloads = [
                cancel_payload(
                    self.ex.key,
                    a.signer_id or self.ex.cfg.signer_account_id or "",
                    base64.b64decode(a.nonce or ""),
                    a.deadline or now,
                    self.ex.cfg.verifier_contract,
                ).signed_data
                for a in targets
            ]
            try:
                published = await self.ex.relay_rpc.publish_intents(payloads)
                relay = {
                    "status": "OK",
                    "intent_hashes": published.intent_hashes,
                    "already_processed": published.already_processed,
                }
            except RelayPublishFailed as exc:
                relay = {"status": "FAILED", "reason": exc.reason, "code": exc.code}
            except RelayRpcClientError as exc:
                relay = {"status": "error", "error": str(exc)}
        record = {
            **relay,
            "command_ids": ids,
            "quote_hashes": [a.quote_hash for a in targets],
            "nonces": [a.nonce for a in targets],
            "operator": caller.operator,
        }
        if targets:
            if cancel_succeeded(relay):
                for a in targets:
                    self.ex.book.update(a.command_id, cancel_requested=True)
            try:
                await self.ex.ledger().record_cancel(ids, now, record)
            except DB_ERRORS as exc:
                self.ex.db_lost(exc)
                record["ledger"] = f"not recorded: {exc}"
        self.ex.audit.record("cancel_live", caller, str(relay["status"]), record)
        self.ex.log.warning("cancel_live", status=relay["status"], answers=len(ids), operator=caller.operator)
        return {"requested": len(ids), "command_ids": ids, "relay": relay}

    def routes(self) -> list[Route]:
        return [
            *self.ex.arm.routes(check_arm=self._check_arm, on_disarm=self._on_disarm),
            Route(
                "POST",
                "/resolve",
                self._operator_resolve,
                "Record an operator's verdict on an answer the chain could not decide (audited)",
                ResolveBody,
                body_optional=False,
            ),
        ]

    async def _operator_resolve(self, _r: Any, body: ResolveBody, caller: Caller) -> dict[str, Any]:
        """An `undecided` answer (past its deadline, beyond what the node can tell) takes a
        verdict; until then its hold is kept. Settled or expired, the hold goes: an answer that
        old is in every snapshot by now. An answer expired by relay silence (`no_quote_status`)
        takes `settled` only (the operator found the fill the relay never reported); its hold
        stays until a snapshot covers it, as any settlement's."""
        cid = body.command_id
        if not self.ex.db.healthy:
            raise ControlError(503, f"ledger unavailable: {self.ex.db.error}")
        silent = False
        if cid not in self.ex.undecided or cid not in self.ex.book.answers:
            row = await self.ex.ledger().get(cid)
            silent = row is not None and row.state is S.EXPIRED and row.resolved_by == "no_quote_status"
            if not (silent and body.outcome == "settled"):
                self.ex.audit.record("resolve", caller, "refused: not undecided", {"command_id": cid})
                raise ControlError(
                    409,
                    f"answer {cid} is not undecided; only an answer the chain could not decide takes an "
                    "operator's verdict (see undecided in GET /state), and an answer expired by relay "
                    "silence only `settled`",
                )
        with self.ex.busy.working(cid):
            at = now_utc()
            settled = body.outcome == "settled"

            def noted(moved: LedgerRow) -> None:
                self.ex.undecided.discard(cid)
                self.ex.audit.record("resolve", caller, body.outcome, {"command_id": cid, "quote_id": moved.quote_id})
                self.ex.log.warning(
                    "answer_resolved_by_operator",
                    command_id=cid,
                    quote_id=moved.quote_id,
                    state=body.outcome,
                    operator=caller.operator,
                )

            # an undecided answer is old enough to be in every snapshot: its hold goes, settled or
            # not; a silence expiry corrected to settled keeps waiting for its covering snapshot
            moved = await self.ex.publisher.step(
                cid,
                S.SETTLED if settled else S.EXPIRED,
                at,
                settled_hold=silent,
                noted=noted,
                resolved_by="operator",
                resolution={"operator": caller.operator, "reason": body.reason, "recorded_at": at},
                reason=f"recorded by the operator: {body.reason}",
                reason_code="operator_settled" if settled else "operator_expired",
            )
            if moved is None:
                raise ControlError(409, f"answer {cid} changed meanwhile; see GET /state")
        return {"command_id": cid, "state": body.outcome}

    def state(self) -> dict[str, Any]:
        now = now_utc()
        relay = self.ex.relay.state() if self.ex.relay is not None else {}
        return conform(
            TradeExecutorFields,
            {
                **self.ex.arm.state(),
                "connected": {
                    "relay": self.ex.relay is not None and self.ex.relay.connected,
                    "postgres": self.ex.db.healthy,
                    "kafka": self.ex.kafka_link.healthy,
                    "inventory_feed": self.ex.inventory.error is None,
                    "price_feed": self.ex.prices.error is None,
                    "near_rpc": self.ex.near_rpc.healthy,
                },
                "authoritative": self.ex.db.healthy and self.ex.relay is not None and self.ex.relay.connected,
                "blocked_reason": self.blocked_reason(now),
                "signer": self.ex.signer.model_dump(mode="json"),
                "ledger": {
                    "available": self.ex.db.healthy,
                    "error": self.ex.db.error,
                    "recovered_at": self.ex.recovered_at,
                },
                "relay": {"error": self.ex.relay_error, **relay},
                "near_rpc_error": self.ex.near_rpc.error,
                "near_rpc": self.ex.rpc.usage().model_dump(mode="json"),
                "inputs": {
                    "inventory": self.ex.inventory.state(now),
                    "price": self.ex.prices.state(now),
                    "salt": {
                        "salt": self.ex.salt.get(now),
                        "age_s": self.ex.salt.age_s(now),
                        "max_age_s": self.ex.salt.max_age_s,
                        "invalidations": self.ex.salt.invalidations,
                    },
                },
                "last_command_seen": self.ex.last_command,
                "last_request_sent": self.ex.last_request,
                "last_venue_response": self.ex.last_venue_response,
                "in_flight": len(self.ex.tasks),
                "undecided": sorted(self.ex.undecided),
                "silence_audit": {"queued": len(self.ex.audits), **self.ex.audit_counts},
                "completed": self.ex.completed,
                "live_answers": [a.view() for a in self.ex.book.answers.values()],
                # settled (or expired by relay silence: `state`), held until a snapshot's
                # results_through reaches `needs` (None: not yet known)
                "settled_holds": [
                    {
                        "command_id": cid,
                        "state": "expired" if cid in self.ex.book.silent else "settled",
                        "asset_id": asset,
                        "amount": str(amount),
                        "needs": needs,
                    }
                    for cid, (needs, asset, amount) in self.ex.book.settled.items()
                ],
                # signed, never sent, held until their deadlines
                "withheld": [
                    {"command_id": cid, "asset_id": asset, "amount": str(amount), "deadline": deadline}
                    for cid, (deadline, asset, amount) in self.ex.book.withheld.items()
                ],
                "reserved": {k: str(v) for k, v in self.ex.book.reserved_by_asset().items()},
                "live_exposure": {a: str(self.ex.book.live_exposure(a)) for a in self.ex.pair.token_ids},
                "ceilings": self.ex.ceilings.model_dump(mode="json") | {"file": str(self.ex.cfg.ceilings_file)},
                "errors": dict(self.ex.errors),
                "refusals": dict(self.ex.refusals),
                "results": dict(self.ex.results),
                "pending_statuses": len(self.ex.pending_statuses),
                "limits": {
                    "answer_margin_ms": self.ex.cfg.executor_answer_margin_ms,
                    "relay_answer_timeout_s": self.ex.cfg.executor_relay_answer_timeout_s,
                    "inventory_max_age_ms": self.ex.cfg.executor_inventory_max_age_ms,
                    "max_min_deadline_ms": self.ex.cfg.executor_max_min_deadline_ms,
                    "settle_grace_ms": self.ex.cfg.executor_settle_grace_ms,
                },
            },
        )

    def blocked_reason(self, now: datetime) -> str | None:
        """Why a command arriving now would not be answered, or None."""
        if not self.ex.db.healthy:
            return f"ledger unavailable (commands wait in Kafka): {self.ex.db.error}"
        g = self.ex.gate_inputs(now)
        for problem, why in (
            (g.draining, "draining"),
            (g.paused, "paused"),
            (not g.armed, "disarmed"),
            (g.audit_impaired is not None, f"audit history impaired: {g.audit_impaired}"),
            (g.signer_problem is not None, g.signer_problem),
            (not g.relay_connected, "relay disconnected"),
        ):
            if problem:
                return why
        stale_price = price_problem(self.ex.prices.latest, now, self.ex.ceilings.max_price_age_ms)
        if stale_price is not None:
            return stale_price.reason
        inv = self.ex.inventory.latest
        if inv is None:
            return "no inventory snapshot yet"
        if inv.stale or inv.age_ms_at(now) > self.ex.cfg.executor_inventory_max_age_ms:
            return f"inventory snapshot {inv.inventory_id} is stale"
        return None
