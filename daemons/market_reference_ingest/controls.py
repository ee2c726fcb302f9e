"""market-reference-ingest's control socket and `/state`: `POST /refresh` polls CoinGecko now
(429 while a rate-limit cool-off runs, 502 when the poll fails), and the state shows each
source, the evaluated price, the conflict latch, the EURe basis and publishing.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from daemons.core.control import Caller, ControlError, OperatorAction, Route, json_response
from daemons.core.events import ms_since
from daemons.core.state_models import MarketReferenceFields, conform

if TYPE_CHECKING:
    from daemons.market_reference_ingest.service import MarketReferenceIngest


def _age_ms(now: datetime, then: datetime | None) -> int | None:
    return None if then is None else ms_since(then, now)


class Controls:
    def __init__(self, ex: MarketReferenceIngest) -> None:
        self.ex = ex

    def routes(self) -> list[Route]:
        ex = self.ex

        async def refresh(_r: Any, _b: OperatorAction, caller: Caller) -> Any:
            if ex.drain_requested.is_set():
                raise ControlError(409, "service is draining")
            if ex.coingecko.client is None:
                raise ControlError(409, f"CoinGecko is unavailable: {ex.coingecko.blocked}")
            outcome = await ex.coingecko.poll("refresh")
            ex.audit.record("refresh", caller, outcome.result, {"error": outcome.error})
            body = {
                "polled": outcome.sent,
                "result": outcome.result,
                "error": outcome.error,
                "retry_not_before": outcome.retry_not_before,
                "coingecko": self.coingecko_latest(ex.clock()),
            }
            if outcome.result == "rate_limited":
                return json_response(body, status=429)
            if outcome.result == "failed":
                return json_response(body, status=502)
            return body

        return [
            Route(
                "POST",
                "/refresh",
                refresh,
                "Poll CoinGecko now (refused with 429 during a rate-limit cool-off)",
                OperatorAction,
            ),
        ]

    def coingecko_latest(self, now: datetime) -> dict[str, Any]:
        cg = self.ex.cg
        return {
            "btc_eur": cg.btc_eur,
            "last_updated_at": cg.btc_updated_at,
            "age_ms": _age_ms(now, cg.btc_updated_at),
            "eure_eur": cg.eure_eur,
            "eure_last_updated_at": cg.eure_updated_at,
            "eure_age_ms": _age_ms(now, cg.eure_updated_at),
        }

    def state(self) -> dict[str, Any]:
        ex = self.ex
        now = ex.clock()
        price = ex.current
        tick = ex.kraken_tick
        polls = ex.coingecko
        kafka_error = ex.kafka_link.error
        kraken_client = ex.kraken.state()
        cg_client = polls.client.state() if polls.client is not None else None
        decisionable = price is not None and price.decisionable
        return conform(
            MarketReferenceFields,
            {
                "connected": {
                    "kraken": kraken_client["connected"],
                    "coingecko": ex.cg.reachable,
                    "kafka": kafka_error is None,
                },
                # a consumer may act on the published price only when this is true
                "authoritative": decisionable and kafka_error is None and not ex.paused,
                "decisionable": decisionable,
                "blocked_reason": (price.status_reason if price is not None and not price.decisionable else None),
                "fallback_in_use": price is not None and price.fallback_used,
                "source": price.source if price is not None else None,
                "evaluated_at": ex.evaluated_at,
                "price": price.model_dump(mode="json") if price is not None else None,
                "conflict": {
                    "active": ex.policy_state.conflict,
                    "since": ex.policy_state.conflict_since,
                    "divergence_pct": price.cross_check_divergence_pct if price is not None else None,
                    "tolerance_pct": ex.policy_cfg.conflict_tolerance_pct,
                    "clear_pct": ex.policy_cfg.conflict_clear_pct,
                },
                "kraken": {
                    "state": price.kraken_state if price is not None else None,
                    "fresh": price is not None and price.kraken_fresh,
                    "latest": None
                    if tick is None
                    else {
                        "bid": tick.bid,
                        "ask": tick.ask,
                        "mid": price.mid if price is not None else None,
                        "received_at": tick.received_at,
                        "source_time": tick.source_time,
                        "age_ms": _age_ms(now, tick.received_at),
                    },
                    "ticks": ex.counts["ticks"],
                    "discarded_ticks": dict(ex.discarded),
                    "client": kraken_client,
                },
                "coingecko": {
                    "state": price.coingecko_state if price is not None else None,
                    "fresh": price is not None and price.coingecko_fresh,
                    "blocked_reason": polls.blocked,
                    "latest": self.coingecko_latest(now),
                    "poll_error": ex.cg.poll_error,
                    "last_poll_at": polls.last_poll_at,
                    "last_poll_trigger": polls.last_trigger,
                    "last_success_at": polls.last_success_at,
                    "next_poll_at": polls.next_poll_at,
                    "retry_not_before": cg_client["retry_not_before"] if cg_client else None,
                    "rate_limited": bool(cg_client and cg_client["rate_limited"]),
                    "eure_error": polls.eure_error,
                    "client": cg_client,
                },
                "eure": {
                    "basis": price.eure_basis if price is not None else None,
                    "rate": price.eure_eur_rate if price is not None else None,
                    "state": price.eure_state if price is not None else None,
                    "observed": ex.cg.eure_eur,
                    "tolerance_pct": ex.policy_cfg.eure_tolerance_pct,
                },
                "publishing": {
                    "last_published_at": ex.last_published_at,
                    "last_event_id": ex.last_event_id,
                    "emit_interval_s": ex.cfg.market_emit_interval_s,
                },
                "counts": dict(ex.counts),
                "policy": dataclasses.asdict(ex.policy_cfg),
            },
        )
