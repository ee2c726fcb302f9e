"""The relay simulator's load driver: the simulated takers and the quote-request streams, as
`docs/near-intents-relay.md` (§n below) has takers behave.

- The takers: each quote request collects answers for `collection_window_s`, then a taker picks
  one (`pick`: `best` price for the taker, `first`, `none`; sim-only `take_fraction` takes only
  that share of the quotes, evenly spread), settles it with `VerifierState.settle` (funding the
  simulated taker first unless `fund_taker=False`) and has the wire send its `quote_status` (§5).
  `close_quote` closes a quote's window at once (tests use it instead of waiting).
- `start_scenario`: a background stream of quote requests in both directions of the given pairs,
  exact-in and exact-out, other pairs mixed in, both envelopes (§3), repeated quote ids and
  malformed frames, by the given ratios; `pause_scenarios` holds and resumes every stream.
- `start_load`: a fixed mix of request templates at an exact rate for a fixed time (paced on
  absolute times, so a slow send does not lower the rate), for the latency benchmark
  (`bench/latency.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
from typing import Any

from simulators.relay.protocol import (
    BTC,
    EURE,
    PickRule,
    RelayProtocol,
    RelaySimConfig,
)
from simulators.relay.wire import ERR_UNKNOWN_QUOTE, QuoteRecord, event_frame, utcnow
from simulators.verifier import CheckedAnswer, Settlement, VerifierError, VerifierState, gross_up, token_fee_pips


class RelayLoad(RelayProtocol):
    """The wire with its takers and request streams."""

    def __init__(
        self,
        verifier: VerifierState,
        config: RelaySimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(verifier, config, host, port)
        self.settlements: list[Settlement] = []
        self.scenarios: dict[int, asyncio.Task[dict[str, Any]]] = {}
        self.scenario_results: dict[int, dict[str, Any]] = {}
        self._scenario_ids = itertools.count(1)
        self._scenarios_running = asyncio.Event()  # cleared: every scenario waits before its next item
        self._scenarios_running.set()
        self._bg: set[asyncio.Task[Any]] = set()
        self.loads: dict[int, dict[str, Any]] = {}
        self._closed_quotes = 0  # quotes whose window closed, for `take_fraction`

    # --- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        tasks = [*self.scenarios.values(), *self._windows(), *self._bg]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().stop()

    def reset_state(self) -> None:
        for t in (*self.scenarios.values(), *self._windows()):
            t.cancel()
        self.settlements.clear()
        self.scenarios.clear()
        self.scenario_results.clear()
        self.loads.clear()
        super().reset_state()

    def _windows(self) -> list[asyncio.Task[Any]]:
        return [q.window for q in self.quotes.values() if q.window is not None]

    # --- takers ------------------------------------------------------------------------------

    def _quote_tracked(self, quote_id: str) -> None:
        """Open the quote's collection window: when it closes, the taker picks."""
        record = self.quotes[quote_id]

        async def window() -> None:
            await asyncio.sleep(self.config.collection_window_s)
            await self.close_quote(quote_id, from_window=True)

        record.window = asyncio.create_task(window())

    async def close_quote(
        self, quote_id: str, *, pick: PickRule | None = None, from_window: bool = False
    ) -> dict[str, Any]:
        """End a quote's collection window now: the taker picks and settles (or not)."""
        record = self.quotes.get(quote_id)
        if record is None:
            return {"quote_id": quote_id, "settled": False, "error": ERR_UNKNOWN_QUOTE}
        if record.closed:
            return record.outcome or {"quote_id": quote_id, "settled": False}
        record.closed = True
        if record.window is not None and not from_window:
            record.window.cancel()
        rule = pick or self.config.pick
        if pick is None and from_window:
            fraction = min(1.0, max(0.0, float(self.config.take_fraction)))
            n = self._closed_quotes = self._closed_quotes + 1
            if math.floor(n * fraction) == math.floor((n - 1) * fraction):
                rule = "none"
        outcome: dict[str, Any] = {"quote_id": quote_id, "settled": False, "answers": len(record.answers), "rule": rule}
        chosen = self._choose(record, rule)
        if chosen is not None:
            outcome["quote_hash"] = chosen.quote_hash
            now = utcnow()
            try:
                if self.config.fund_taker:
                    self._fund_taker(chosen)
                settlement = self.verifier.settle(chosen, self.config.taker_account_id, now)
            except VerifierError as exc:
                outcome["error"] = exc.message
                self._count("settle_failed")
                self.record("settle_failed", quote_id=quote_id, quote_hash=chosen.quote_hash, error=exc.message)
            else:
                self.settlements.append(settlement)
                self.book.settled(chosen.signer_id, chosen.nonce, settlement.tx_hash)
                self._count("settled")
                # the status goes out once the block holding the execution is produced
                tx = self.verifier.transactions.get(settlement.tx_hash)
                if tx is not None:
                    await self.verifier.chain.reached(tx.height, "optimistic")
                self.set_status(settlement.intent_hash, "SETTLED", tx_hash=settlement.tx_hash)
                outcome.update(settled=True, intent_hash=settlement.intent_hash, tx_hash=settlement.tx_hash)
                await self.broadcast_status(
                    {
                        "quote_hash": chosen.quote_hash,
                        "intent_hash": settlement.intent_hash,
                        "tx_hash": settlement.tx_hash,
                    }
                )
        record.outcome = outcome
        return outcome

    def _choose(self, record: QuoteRecord, rule: PickRule) -> CheckedAnswer | None:
        if not record.answers or rule == "none":
            return None
        if rule == "first":
            return record.answers[0]
        if "exact_amount_in" in record.data:
            # exact in: the taker gives a fixed amount and wants the most out (§7.1 sortQuotes)
            return max(record.answers, key=lambda a: a.amount_out)
        return min(record.answers, key=lambda a: a.amount_in)

    def _fund_taker(self, answer: CheckedAnswer) -> None:
        token_in = next(t for t, d in answer.diff.items() if d > 0)
        needed = gross_up(answer.amount_in, token_fee_pips(token_in, answer.amount_in, self.verifier.fee_pips))
        short = needed - self.verifier.balance(self.config.taker_account_id, token_in)
        if short > 0:
            self.verifier.deposit(self.config.taker_account_id, token_in, short)

    # --- scenario ----------------------------------------------------------------------------

    def pause_scenarios(self, paused: bool) -> None:
        """Hold every running scenario before its next item (`True`), or resume them."""
        if paused:
            self._scenarios_running.clear()
        else:
            self._scenarios_running.set()

    def start_scenario(
        self,
        count: int = 100,
        rate_per_s: float = 100.0,
        pairs: list[list[str]] | None = None,
        sizes: list[int] | None = None,
        sizes_by_asset: dict[str, list[int]] | None = None,  # the fixed side's asset -> its sizes
        exact_out_ratio: float = 0.3,
        other_pairs: list[list[str]] | None = None,
        other_pair_ratio: float = 0.1,
        other_pairs_bypass_filter: bool = True,
        flat_envelope_ratio: float = 0.3,
        string_deadline_ratio: float = 0.1,
        repeat_ratio: float = 0.05,
        malformed_ratio: float = 0.05,
        min_deadline_ms: int = 60_000,
        seed: int = 0,
    ) -> int:
        """Start a background stream of `count` items at `rate_per_s`: quotes in both directions
        of `pairs`, exact-in and exact-out, other pairs mixed in, both envelopes, repeated quote
        ids and malformed frames, by the given ratios. Progress is in `/_sim/seen` `scenarios`;
        `pause_scenarios` holds and resumes every scenario."""
        scenario_id = next(self._scenario_ids)
        rng = random.Random(seed)
        pairs = pairs or [[BTC, EURE]]
        directions = [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]
        others = [tuple(p) for p in (other_pairs or [["nep141:wrap.near", "nep141:usdt.tether-token.near"]])]
        sizes = sizes or [10_000, 100_000, 1_000_000]
        result: dict[str, Any] = {"sent": 0, "done": False, "by_kind": {}}
        self.scenario_results[scenario_id] = result
        sent_ids: list[str] = []

        def bump(kind: str) -> None:
            result["by_kind"][kind] = result["by_kind"].get(kind, 0) + 1

        async def run() -> dict[str, Any]:
            interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
            malformed = [
                '{"jsonrpc":"2.0","method":"event","params":',  # cut off
                "not json at all",
                json.dumps({"jsonrpc": "2.0", "method": "mystery", "params": {}}),
            ]
            for i in range(count):
                await self._scenarios_running.wait()
                roll = rng.random()
                if roll < malformed_ratio:
                    text = malformed[i % len(malformed)]
                    if i % 4 == 3:  # a quote event missing its quote_id, on a real subscription
                        for conn in list(self.conns.values()):
                            for sid, sub in conn.subs.items():
                                if sub.kind == "quote":
                                    await conn.send(
                                        event_frame(
                                            sid,
                                            {
                                                "defuse_asset_identifier_in": BTC,
                                                "defuse_asset_identifier_out": EURE,
                                                "exact_amount_in": "1",
                                                "min_deadline_ms": 60000,
                                            },
                                            "event",
                                        )
                                    )
                    else:
                        await self.send_raw(text)
                    bump("malformed")
                elif roll < malformed_ratio + repeat_ratio and sent_ids:
                    qid = rng.choice(sent_ids)
                    rec = self.quotes.get(qid)
                    if rec is not None:
                        d = rec.data
                        await self.emit_quote(
                            d["defuse_asset_identifier_in"],
                            d["defuse_asset_identifier_out"],
                            d.get("exact_amount_in"),
                            d.get("exact_amount_out"),
                            quote_id=qid,
                            min_deadline_ms=d["min_deadline_ms"],
                        )
                    bump("repeat")
                else:
                    other = rng.random() < other_pair_ratio
                    a, b = rng.choice(others) if other else rng.choice(directions)
                    size = rng.choice(sizes)
                    exact_out = rng.random() < exact_out_ratio
                    if sizes_by_asset:  # drawn after: without it a seed streams what it always did
                        size = rng.choice(sizes_by_asset.get(b if exact_out else a, sizes))
                    out = await self.emit_quote(
                        a,
                        b,
                        exact_amount_in=None if exact_out else size,
                        exact_amount_out=size if exact_out else None,
                        min_deadline_ms=str(min_deadline_ms)
                        if rng.random() < string_deadline_ratio
                        else min_deadline_ms,
                        metadata={"partner_id": "1click"},
                        envelope="subscribe" if rng.random() < flat_envelope_ratio else "event",
                        ignore_filter=other and other_pairs_bypass_filter,
                    )
                    if not other:
                        sent_ids.append(out["quote_id"])  # repeats are of in-filter quotes only
                    bump("other_pair" if other else ("exact_out" if exact_out else "exact_in"))
                result["sent"] = i + 1
                if interval:
                    await asyncio.sleep(interval)
            result["done"] = True
            return result

        self.scenarios[scenario_id] = asyncio.create_task(run())
        return scenario_id

    # --- load --------------------------------------------------------------------------------

    def start_load(self, rate_per_s: float, duration_s: float, templates: list[dict[str, Any]]) -> int:
        """Send `rate_per_s * duration_s` quote requests, cycling through `templates` (keyword
        arguments of `emit_quote`), request i due at start + i / rate. Progress in `loads`."""
        if rate_per_s <= 0 or duration_s <= 0 or not templates:
            raise ValueError("rate_per_s and duration_s must be positive, templates non-empty")
        load_id = next(self._scenario_ids)
        total = int(rate_per_s * duration_s)
        progress: dict[str, Any] = {
            "rate_per_s": rate_per_s,
            "total": total,
            "sent": 0,
            "late_max_ms": 0.0,
            "done": False,
        }
        self.loads[load_id] = progress

        async def run() -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(total):
                due = start + i / rate_per_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:  # behind schedule: record by how much, and send at once
                    progress["late_max_ms"] = max(progress["late_max_ms"], -delay * 1000)
                await self.emit_quote(**templates[i % len(templates)])
                progress["sent"] = i + 1
            progress["elapsed_s"] = loop.time() - start
            progress["done"] = True
            return progress

        task = asyncio.create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return load_id
