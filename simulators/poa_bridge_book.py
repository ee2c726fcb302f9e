"""The POA bridge simulator's live state (`docs/poa-bridge.md` (§n below)): the scripted
deposits and withdrawals, and their transitions as simulated time passes — a deposit credited
once through the `credit` callback (or failed, or left pending), a withdrawal completed with a
transfer hash (or failed, or left pending).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from simulators.chain import Chain
from simulators.poa_bridge_model import (
    Credit,
    DepositOutcome,
    ScriptError,
    SimClock,
    SimDeposit,
    SimToken,
    SimWithdrawal,
    WithdrawalOutcome,
    deposit_address,
    fake_hash,
)


class BridgeBook:
    """Deposits and withdrawals as the bridge sees them, on `clock`'s time. With the simulated
    `chain`, a deposit shows COMPLETED once the block holding its mint is produced, as the bridge
    sees it on NEAR (without one, at once). `record` notes what happened for `/_sim/seen`."""

    def __init__(
        self,
        credit: Credit,
        clock: SimClock,
        tokens: tuple[SimToken, ...],
        chain: Chain | None,
        record: Callable[..., None],
    ) -> None:
        self.credit = credit
        self.clock = clock
        self.tokens = tokens
        self.chain = chain
        self._record = record
        self.deposits: list[SimDeposit] = []
        self.withdrawals: list[SimWithdrawal] = []
        self._serial = itertools.count(1)

    @property
    def chains(self) -> list[str]:
        return sorted({t.chain for t in self.tokens})

    def token_for(self, chain: str, asset: str) -> SimToken:
        near_id = asset.removeprefix("nep141:")
        for t in self.tokens:
            if t.chain == chain and t.near_token_id == near_id:
                return t
        raise ScriptError(f"the bridge has no token {asset!r} on chain {chain!r}")

    def deposit_address_for(self, account_id: str, chain: str) -> str:
        """Stable per (account, chain): derived, so it survives restarts like the real one."""
        if chain not in self.chains:
            raise ScriptError(f"unsupported chain {chain!r}")
        return deposit_address(account_id, chain)

    def add_deposit(
        self,
        account_id: str,
        chain: str,
        asset: str,
        amount: int,
        *,
        tx_hash: str | None,
        outcome: DepositOutcome,
        credit_after_s: float,
        sender: str | None,
    ) -> SimDeposit:
        """A transfer landed on `account_id`'s deposit address for `chain`."""
        token = self.token_for(chain, asset)
        if amount <= 0:
            raise ScriptError("a deposit has a positive amount")
        tx_hash = tx_hash or self.fake_hash(chain, "deposit")
        if any(d.tx_hash == tx_hash and d.chain == chain for d in self.deposits):
            raise ScriptError(f"deposit {tx_hash!r} already exists")
        now = self.clock.now()
        due = None if outcome == "never_credit" else now + timedelta(seconds=credit_after_s)
        if outcome == "credit" and amount < token.min_deposit_amount:
            due = None  # below the minimum the bridge never sweeps it
        deposit = SimDeposit(
            tx_hash=tx_hash,
            account_id=account_id,
            chain=chain,
            token=token,
            amount=amount,
            address=self.deposit_address_for(account_id, chain),
            outcome=outcome,
            created_at=now,
            due_at=due,
            sender=sender,
        )
        self.deposits.append(deposit)
        self._record(
            "sim_deposit",
            tx_hash=tx_hash,
            account_id=account_id,
            chain=chain,
            amount=str(amount),
            outcome=outcome,
            below_min=amount < token.min_deposit_amount,
        )
        return deposit

    def complete_deposit(self, tx_hash: str) -> SimDeposit:
        """An operator resolves a FAILED (or stuck) deposit: credited once, now COMPLETED."""
        deposit = next((d for d in self.deposits if d.tx_hash == tx_hash), None)
        if deposit is None:
            raise ScriptError(f"no deposit {tx_hash!r}")
        if deposit.status != "COMPLETED":
            self.credit_deposit(deposit)
        return deposit

    def add_withdrawal(
        self,
        withdrawal_hash: str,
        account_id: str,
        chain: str,
        asset: str,
        amount: int,
        address: str,
        *,
        outcome: WithdrawalOutcome,
        complete_after_s: float,
        visible_after_s: float,
    ) -> SimWithdrawal:
        """The burn `withdrawal_hash` (a NEAR tx) was executed; the bridge will pick it up."""
        token = self.token_for(chain, asset)
        now = self.clock.now()
        withdrawal = SimWithdrawal(
            withdrawal_hash=withdrawal_hash,
            account_id=account_id,
            chain=chain,
            token=token,
            amount=amount,
            address=address,
            outcome=outcome,
            created_at=now,
            visible_at=now + timedelta(seconds=visible_after_s),
            due_at=None if outcome == "pending" else now + timedelta(seconds=visible_after_s + complete_after_s),
        )
        self.withdrawals.append(withdrawal)
        self._record("sim_withdrawal", withdrawal_hash=withdrawal_hash, outcome=outcome)
        return withdrawal

    def tick(self) -> None:
        """Apply every transition due by now."""
        now = self.clock.now()
        for d in self.deposits:
            if d.status == "PENDING" and d.due_at is not None and d.due_at <= now:
                if d.outcome == "credit":
                    self.credit_deposit(d)
                elif d.outcome == "fail":
                    d.status = "FAILED"
                    self._record("deposit_failed", tx_hash=d.tx_hash)
        for w in self.withdrawals:
            if w.status == "PENDING" and w.due_at is not None and w.due_at <= now:
                if w.outcome == "complete":
                    w.status = "COMPLETED"
                    w.transfer_tx_hash = self.fake_hash(w.chain, "transfer")
                else:
                    w.status = "FAILED"
                self._record("withdrawal_" + w.status.lower(), withdrawal_hash=w.withdrawal_hash)

    def credit_deposit(self, deposit: SimDeposit) -> None:
        if deposit.credited:
            return
        try:
            self.credit(deposit.account_id, deposit.token.intents_token_id, deposit.amount)
        except Exception as exc:  # the verifier refused: stay PENDING and try again a second later
            self._record("credit_error", tx_hash=deposit.tx_hash, error=repr(exc))
            deposit.due_at = self.clock.now() + timedelta(seconds=1)
            return
        deposit.credited = True
        deposit.mint_height = self.chain.pending_height() if self.chain is not None else None
        deposit.status = "COMPLETED"
        deposit.mint_tx_hash = self.fake_hash("near:mainnet", "mint")
        self._record(
            "deposit_credited",
            tx_hash=deposit.tx_hash,
            account_id=deposit.account_id,
            token_id=deposit.token.intents_token_id,
            amount=str(deposit.amount),
        )

    def next_due_in(self) -> float | None:
        """Seconds until the next scripted transition; None when nothing is due or the clock is
        frozen (only `advance()` moves a frozen clock)."""
        if self.clock.frozen:
            return None
        now = self.clock.now()
        dues = [d.due_at for d in self.deposits if d.status == "PENDING" and d.due_at is not None]
        dues += [w.due_at for w in self.withdrawals if w.status == "PENDING" and w.due_at is not None]
        if not dues:
            return None
        return max(0.0, (min(dues) - now).total_seconds())

    def shown_status(self, d: SimDeposit) -> str:
        if (
            d.status == "COMPLETED"
            and d.mint_height is not None
            and self.chain is not None
            and self.chain.head() < d.mint_height
        ):
            return "PENDING"  # minted in the block being produced
        return d.status

    def visible_withdrawals(self, withdrawal_hash: str) -> list[SimWithdrawal]:
        now = self.clock.now()
        return [w for w in self.withdrawals if w.withdrawal_hash == withdrawal_hash and w.visible_at <= now]

    def fake_hash(self, chain: str, kind: str) -> str:
        return fake_hash(chain, kind, f"{next(self._serial)}|{id(self)}")

    def clear(self) -> None:
        self.deposits.clear()
        self.withdrawals.clear()
        self.clock.reset()

    def state(self) -> dict[str, Any]:
        return {
            "deposits": [
                d.wire(amounts_as_strings=False) | {"outcome": d.outcome, "credited": d.credited} for d in self.deposits
            ],
            "withdrawals": [w.data_list_shape() | {"status": w.status, "outcome": w.outcome} for w in self.withdrawals],
        }
