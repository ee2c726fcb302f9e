"""`RelaySimulator`: the relay simulator as tests, `python -m simulators` and the benchmarks drive
it — the wire (`protocol.py`) and the load driver (`load.py`) behind the `/_sim/` control API.

Routes, beside every simulator's `GET /_sim/seen`, `POST /_sim/reset` and `POST /_sim/fault`
(`simulators/base.py`; the relay's faults are listed in `protocol.py`):

- `POST /_sim/quote`: one quote request (`emit_quote`'s keyword arguments); `POST /_sim/send`:
  arbitrary text to every connection (or `conn_id`'s).
- `POST /_sim/scenario`: a request stream (`start_scenario`'s keyword arguments);
  `POST /_sim/scenario/pause` `{"paused": true|false}` holds or resumes every stream.
- `POST /_sim/settle {"quote_id", "pick"?}`: close a quote's window now (the taker picks).
- `POST /_sim/status`: script `get_status` for an intent hash.
- `POST /_sim/disconnect`: close every live WebSocket now (`code`, `message` optional).
- `POST /_sim/config`: set `RelaySimConfig` fields on the running simulator.
- `POST /_sim/release`: send the replies the `hold_responses` fault held.
- `GET /_sim/timing`: per quote id, the send wall time and the request-to-answer delay
  (`?clear=1` starts over; `?summary=1` only counts and loads).
- `GET /_sim/book?answers_from=N&requests_from=M`: the answer book (`answer_book.py`), with the
  held replies and the counters.
- `POST /_sim/load {"rate_per_s", "duration_s", "templates"}`: a paced request load
  (`start_load`).
- `POST /_sim/credit {"account_id", "asset_id", "amount"}`: deposit straight into the simulated
  verifier (funding a benchmark run beyond what the runner credits).

`GET /_sim/seen` carries, beside what every simulator shows: the connections and their
subscriptions, the counters, the settlements, the guaranteed queues (unacknowledged and
acknowledged seqs), the scenarios' progress and the verifier's snapshot.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulators.relay.load import RelayLoad


class RelaySimulator(RelayLoad):
    """The solver relay v2 simulator: `/ws`, `POST /rpc` and the `/_sim/` routes."""

    def venue_routes(self, app: web.Application) -> None:
        super().venue_routes(app)
        app.router.add_post("/_sim/quote", self._sim_quote)
        app.router.add_post("/_sim/send", self._sim_send)
        app.router.add_post("/_sim/scenario", self._sim_scenario)
        app.router.add_post("/_sim/scenario/pause", self._sim_scenario_pause)
        app.router.add_post("/_sim/settle", self._sim_settle)
        app.router.add_post("/_sim/status", self._sim_status)
        app.router.add_post("/_sim/disconnect", self._sim_disconnect)
        app.router.add_post("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/release", self._sim_release)
        app.router.add_get("/_sim/timing", self._sim_timing)
        app.router.add_get("/_sim/book", self._sim_book)
        app.router.add_post("/_sim/load", self._sim_load)
        app.router.add_post("/_sim/credit", self._sim_credit)

    def extra_sim_state(self) -> dict[str, Any]:
        return {
            "connections": [
                {
                    "id": c.id,
                    "instance_id": c.instance_id,
                    "subscriptions": {
                        s: {"kind": v.kind, "filter": v.filter, "guaranteed": v.guaranteed} for s, v in c.subs.items()
                    },
                }
                for c in self.conns.values()
            ],
            "counts": dict(self.counts),
            "quotes": len(self.quotes),
            "settlements": [
                {"quote_hash": s.quote_hash, "intent_hash": s.intent_hash, "tx_hash": s.tx_hash}
                for s in self.settlements
            ],
            "unacked": {i: list(q.unacked) for i, q in self.queues.items()},
            "acked": {i: list(q.acked) for i, q in self.queues.items()},
            "scenarios": {str(k): v for k, v in self.scenario_results.items()},
            "verifier": self.verifier.snapshot(),
        }

    # --- handlers -----------------------------------------------------------------------------

    async def _sim_quote(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = await self.emit_quote(**body)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    async def _sim_send(self, request: web.Request) -> web.Response:
        body = await request.json()
        sent = await self.send_raw(body["text"], conn_id=body.get("conn_id"))
        return web.json_response({"sent": sent})

    async def _sim_scenario(self, request: web.Request) -> web.Response:
        body = await request.json()
        sid = self.start_scenario(**body)
        return web.json_response({"scenario_id": sid})

    async def _sim_scenario_pause(self, request: web.Request) -> web.Response:
        """`{"paused": true}` holds every running scenario before its next item; false resumes."""
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("paused"), bool):
            return web.json_response({"error": 'body must be {"paused": true|false}'}, status=400)
        self.pause_scenarios(body["paused"])
        return web.json_response({"paused": body["paused"]})

    async def _sim_settle(self, request: web.Request) -> web.Response:
        body = await request.json()
        outcome = await self.close_quote(body["quote_id"], pick=body.get("pick"))
        return web.json_response(outcome)

    async def _sim_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.set_status(
            body["intent_hash"], body["status"], tx_hash=body.get("hash"), status_details=body.get("status_details")
        )
        return web.json_response({"ok": True})

    async def _sim_disconnect(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        closed = await self.close_all(
            code=int(body.get("code", 1012)), message=str(body.get("message", "sim disconnect"))
        )
        return web.json_response({"closed": closed})

    async def _sim_release(self, _request: web.Request) -> web.Response:
        return web.json_response({"released": await self.release_held()})

    async def _sim_timing(self, request: web.Request) -> web.Response:
        if request.query.get("summary") == "1":
            # counts and loads only: a caller polling a run in progress does not pay (nor make
            # the simulator pay) for every answer so far on each poll
            answered = sum(1 for qid in self.answer_delay_ns if qid in self.request_sent)
            return web.json_response(
                {
                    "sent": len(self.request_sent),
                    "answered": answered,
                    "unanswered": len(self.request_sent) - answered,
                    "loads": {str(k): v for k, v in self.loads.items()},
                }
            )
        body = {
            "sent": len(self.request_sent),
            "answers": {
                qid: {"sent_wall": self.request_sent[qid][1], "delay_ns": ns}
                for qid, ns in self.answer_delay_ns.items()
                if qid in self.request_sent
            },
            "unanswered": [qid for qid in self.request_sent if qid not in self.answer_delay_ns],
            "loads": {str(k): v for k, v in self.loads.items()},
        }
        if request.query.get("clear") == "1":
            self.request_sent.clear()
            self.answer_delay_ns.clear()
        return web.json_response(body)

    async def _sim_book(self, request: web.Request) -> web.Response:
        try:
            answers_from = max(0, int(request.query.get("answers_from", "0")))
            requests_from = max(0, int(request.query.get("requests_from", "0")))
        except ValueError:
            return web.json_response({"error": "answers_from and requests_from are integers"}, status=400)
        return web.json_response(
            {
                **self.book.page(answers_from, requests_from),
                "held_replies": len(self._held),
                "counts": dict(self.counts),
            }
        )

    async def _sim_load(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            load_id = self.start_load(
                rate_per_s=float(body["rate_per_s"]),
                duration_s=float(body["duration_s"]),
                templates=list(body["templates"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"load_id": load_id})

    async def _sim_credit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.verifier.deposit(str(body["account_id"]), str(body["asset_id"]), int(body["amount"]))
        return web.json_response(
            {"balance": str(self.verifier.balance(str(body["account_id"]), str(body["asset_id"])))}
        )

    async def _sim_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        for key, value in body.items():
            if not hasattr(self.config, key):
                return web.json_response({"error": f"unknown config {key}"}, status=400)
            setattr(self.config, key, value)
        return web.json_response({"ok": True})
