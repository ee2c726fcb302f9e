"""The executor's NEAR RPC reads: the verifier's `current_salt`, the latest final block, a live
answer's nonce outcome and a plain `is_nonce_used`.

Every failure is counted (`rpc_<call>`) and shown on the executor's `near_rpc` health link, every
success clears it. Reads that can wait (deciding expired answers, audits of silence expiries)
spend only what the client's budget holds beyond `executor_rpc_reserve`, which is kept for the
salt and the signer's key check (docs/near-rpc.md).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from daemons.core.events import now_utc
from daemons.trade_executor.settlement import LiveAnswer
from daemons.venues.near_intents.near_rpc import BlockHeader, NearRpcError
from daemons.venues.near_intents.nep413 import datetime_to_ns
from daemons.venues.near_intents.nonce_outcome import HeaderCache, LookupsSpent, NonceOutcome, nonce_outcome

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor


class ChainReads:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex
        self.headers = HeaderCache()
        self.final: BlockHeader | None = None  # read at most every executor_final_block_interval_s
        self.final_read_at = float("-inf")

    def _failed(self, call: str, exc: NearRpcError) -> None:
        self.ex.errors[f"rpc_{call}"] += 1
        self.ex.near_rpc.fail(exc.message, call=call)

    def spare_count(self) -> int | None:
        """Requests the reads that can wait may spend now: what the budget holds beyond the
        reserve. None: no client-side limit."""
        usage = self.ex.rpc.usage()
        current = next((e for e in usage.endpoints if e.in_use), usage.endpoints[0] if usage.endpoints else None)
        if current is None or current.tokens_available is None:
            return None
        return max(0, current.tokens_available - self.ex.cfg.executor_rpc_reserve)

    def spare(self) -> bool:
        spare = self.spare_count()
        return spare is None or spare > 0

    async def current_salt(self, *, refresh: bool = False) -> str | NearRpcError:
        """The verifier's salt from the cache (unless `refresh`), else read and cached; the error
        when it could not be read."""
        salt = None if refresh else self.ex.salt.get(now_utc())
        if salt is not None:
            return salt
        try:
            salt = await self.ex.rpc.current_salt()
        except NearRpcError as exc:
            self._failed("current_salt", exc)
            return exc
        self.ex.near_rpc.ok()
        self.ex.salt.put(salt, now_utc())
        return salt

    async def final_block(self, before_ns: int | None) -> BlockHeader | None:
        """The latest final block, read again at most every `executor_final_block_interval_s`,
        and (with `before_ns`) only while the one in hand is not yet past that instant."""
        loop_now = asyncio.get_running_loop().time()
        final = self.final
        due = loop_now - self.final_read_at >= self.ex.cfg.executor_final_block_interval_s
        if final is None or (due and (before_ns is None or final.timestamp_ns <= before_ns)):
            if not self.spare():
                return final
            try:
                final = await self.ex.rpc.block(finality="final")
            except NearRpcError as exc:
                self._failed("block", exc)
                return None
            self.final, self.final_read_at = final, loop_now
        return final

    async def outcome(self, answer: LiveAnswer, final: BlockHeader) -> NonceOutcome | None:
        """`nonce_outcome` for a live answer; None when NEAR RPC did not answer (counted) or the
        budget has only the reserve left."""
        assert answer.nonce is not None and answer.deadline is not None
        spare = self.spare_count()
        if spare is not None and spare < 2:
            return None
        account = answer.signer_id or self.ex.cfg.signer_account_id or ""
        try:
            # the block search takes at most what is spare, less the is_nonce_used read itself
            outcome = await nonce_outcome(
                self.ex.rpc,
                account,
                answer.nonce,
                datetime_to_ns(answer.deadline),
                final,
                self.headers,
                max_calls=24 if spare is None else min(24, spare - 1),
            )
        except LookupsSpent:
            return None  # the headers read are cached: the next sweep goes on from there
        except NearRpcError as exc:
            self._failed("is_nonce_used", exc)
            return None
        self.ex.near_rpc.ok()
        return outcome

    async def is_nonce_used(self, account: str, nonce: str) -> bool | None:
        """The verifier's word now; None when NEAR RPC did not answer (counted)."""
        try:
            used = await self.ex.rpc.is_nonce_used(account, nonce)
        except NearRpcError as exc:
            self._failed("is_nonce_used", exc)
            return None
        self.ex.near_rpc.ok()
        return used
