"""The strategy's control socket and what it shows: arm and disarm (`ArmSwitch`), the threshold
and limits (validated, audited, never beyond the root-owned ceilings), `/state` and the health
reasons `/healthz` gives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field

from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.events import Dec, now_utc
from daemons.core.state_models import StrategyEngineFields, conform
from daemons.strategy_engine.gates import Limits, ceiling_breach, inventory_view, price_view
from daemons.strategy_engine.settings import MAX_THRESHOLD

if TYPE_CHECKING:
    from daemons.strategy_engine.service import StrategyEngine


class ThresholdBody(OperatorAction):
    model_config = ConfigDict(extra="forbid")
    threshold_pct: Dec
    target_edge_pct: Dec | None = None


class LimitsBody(OperatorAction):
    model_config = ConfigDict(extra="forbid")
    min_notional_eure: Dec | None = None
    max_notional_eure: Dec | None = None
    answer_window_ms: int | None = Field(default=None, ge=100, le=3000)
    max_deadline_ms: int | None = Field(default=None, ge=1000)
    price_max_age_ms: int | None = Field(default=None, ge=1)
    inventory_max_age_ms: int | None = Field(default=None, ge=1)


def limits_view(lim: Limits) -> dict[str, Any]:
    """The limits as `/threshold`, `/limits`, `/state` and the audit show them."""
    return {
        "threshold_pct": str(lim.threshold_pct),
        "target_edge_pct": str(lim.target_edge_pct),
        "min_notional_eure": str(lim.min_notional_eure),
        "max_notional_eure": str(lim.max_notional_eure),
        "answer_window_ms": lim.answer_window_ms,
        "max_deadline_ms": lim.max_deadline_ms,
        "price_max_age_ms": lim.price_max_age_ms,
        "inventory_max_age_ms": lim.inventory_max_age_ms,
        "buffer": {k: str(v) for k, v in lim.buffer.items()},
    }


class Controls:
    def __init__(self, ex: StrategyEngine) -> None:
        self.ex = ex

    def routes(self) -> list[Route]:
        ex = self.ex

        async def threshold(_r: Any, body: ThresholdBody, caller: Caller) -> Any:
            target = (
                body.target_edge_pct
                if body.target_edge_pct is not None
                else max(body.threshold_pct, ex.limits.target_edge_pct)
            )
            if not (0 < body.threshold_pct <= MAX_THRESHOLD) or not (0 < target <= MAX_THRESHOLD):
                raise ControlError(422, f"threshold and target edge must be in (0, {MAX_THRESHOLD}] percent")
            if target < body.threshold_pct:
                raise ControlError(422, "target_edge_pct must be >= threshold_pct")
            new = replace(ex.limits, threshold_pct=body.threshold_pct, target_edge_pct=target)
            self._within_ceilings(new)
            old = limits_view(ex.limits)
            ex.limits = new
            ex.audit.record("threshold", caller, "set", {"from": old, "to": limits_view(ex.limits)})
            return limits_view(ex.limits)

        async def limits(_r: Any, body: LimitsBody, caller: Caller) -> Any:
            changes = body.model_dump(exclude_none=True, exclude={"operator", "reason"})
            if not changes:
                raise ControlError(400, "nothing to change: give at least one limit")
            new = replace(ex.limits, **changes)
            if new.min_notional_eure < 0 or new.max_notional_eure <= 0:
                raise ControlError(422, "notional limits must be positive")
            if new.min_notional_eure > new.max_notional_eure:
                raise ControlError(422, "min_notional_eure must be <= max_notional_eure")
            self._within_ceilings(new)
            old = limits_view(ex.limits)
            ex.limits = new
            ex.audit.record("limits", caller, "set", {"from": old, "to": limits_view(ex.limits)})
            return limits_view(ex.limits)

        async def show(_r: Any, _b: Any, _c: Caller) -> Any:
            return limits_view(ex.limits)

        return [
            *ex.arm.routes(),
            Route("GET", "/threshold", show, "Threshold, target edge and limits"),
            Route(
                "PUT",
                "/threshold",
                threshold,
                "Set the gross-edge threshold (and target edge)",
                ThresholdBody,
                body_optional=False,
            ),
            Route("GET", "/limits", show, "Threshold, target edge and limits"),
            Route(
                "PUT",
                "/limits",
                limits,
                "Set notional caps, answer window and freshness bounds",
                LimitsBody,
                body_optional=False,
            ),
        ]

    def _within_ceilings(self, limits: Limits) -> None:
        breach = ceiling_breach(limits, self.ex.ceilings)
        if breach is not None:
            raise ControlError(
                403,
                f"refused: {breach} (root-owned {self.ex.cfg.ceilings_file}; no control API raises "
                "a ceiling, lowering a limit is always allowed)",
            )

    def inputs(self) -> dict[str, Any]:
        """The price and inventory held, as `/state` shows them and the health reasons judge them."""
        ex = self.ex
        now = now_utc()
        pv = price_view(ex.price, now) if ex.price is not None else None
        iv = inventory_view(ex.inventory) if ex.inventory is not None else None
        return {
            "price": None
            if pv is None
            else {
                "event_id": pv.event_id,
                "age_ms": pv.age_ms,
                "decisionable": pv.decisionable,
                "source": pv.source,
                "reason": pv.not_decisionable_reason,
                "stale": pv.age_ms > ex.limits.price_max_age_ms,
            },
            "inventory": None
            if iv is None
            else {
                "inventory_id": iv.inventory_id,
                "age_ms": iv.age_ms_at(now),
                "stale": iv.stale or iv.age_ms_at(now) > ex.limits.inventory_max_age_ms,
            },
        }

    def health_reasons(self) -> list[str]:
        reasons = []
        inputs = self.inputs()
        if inputs["price"] is None:
            reasons.append("no_price")
        elif inputs["price"]["stale"] or not inputs["price"]["decisionable"]:
            reasons.append("price_not_decisionable")
        if inputs["inventory"] is None:
            reasons.append("no_inventory")
        elif inputs["inventory"]["stale"]:
            reasons.append("inventory_stale")
        if self.ex.audit_impaired:
            reasons.append(f"audit_impaired: {self.ex.audit_impaired}")
        reasons += self.ex.kafka_link.reason("kafka_unavailable")
        return reasons

    def state(self) -> dict[str, Any]:
        ex = self.ex
        reasons = ex.reasons()
        return conform(
            StrategyEngineFields,
            {
                **ex.arm.state(),
                "limits": limits_view(ex.limits),
                "ceilings": ex.ceilings.model_dump(mode="json") | {"file": str(ex.cfg.ceilings_file)},
                "inputs": self.inputs(),
                "connected": {"kafka": ex.kafka_link.healthy},
                "authoritative": not reasons,
                "blocked_reason": "disarmed" if not ex.arm.armed else ("; ".join(reasons) or None),
                "latest_decision": ex.latest_decision,
                "latest_rejection": ex.latest_rejection,
                "reason_counters": dict(ex.counters),
                "reserved": {k: str(v) for k, v in ex.reservations.reserved().items()},
                "reservations": ex.reservations.view(),
                "inventory_snapshots_behind": ex.inventory_behind,
            },
        )
