"""The simulated verifier's records, each a small class `VerifierState` (`simulators/verifier.py`)
composes: token balances with their recent history, public keys, salts and nonces.

They hold data and answer questions about it; the block heights they stamp come from the caller,
and the contract's checks and error strings live in `simulators/verifier_rules.py`. Section
numbers are those of `docs/verifier.md` (§n below).
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable

from daemons.venues.near_intents.nep413 import b64_nonce, implicit_account_id
from simulators.verifier_rules import ERR_INSUFFICIENT_BALANCE, U128_MAX, VerifierError

_IMPLICIT = re.compile(r"^[0-9a-f]{64}$")


class Ledger:
    """Balances per account and token, and for each the changes made at the kept blocks, so a
    read at an older block can undo what came after it."""

    def __init__(self) -> None:
        self._balances: dict[str, dict[str, int]] = {}
        # (account, token) -> [(height, delta)] for the kept blocks: reads at an older block
        self._history: dict[tuple[str, str], deque[tuple[int, int]]] = {}

    def balance(self, account_id: str, token_id: str) -> int:
        return self._balances.get(account_id, {}).get(token_id, 0)

    def balance_at(self, account_id: str, token_id: str, height: int) -> int:
        """The balance as a read at block `height` sees it (changes made after it undone)."""
        later = sum(d for h, d in self._history.get((account_id, token_id), ()) if h > height)
        return self.balance(account_id, token_id) - later

    def balances_of(self, account_id: str) -> dict[str, int]:
        return {t: a for t, a in self._balances.get(account_id, {}).items() if a}

    def add(self, account_id: str, token_id: str, delta: int, *, height: int, oldest_kept: int) -> None:
        """Move a balance by `delta` at block `height`, forgetting history older than `oldest_kept`.
        A result below zero or above u128 is `insufficient balance or overflow`."""
        new = self.balance(account_id, token_id) + delta
        if not 0 <= new <= U128_MAX:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)
        self._balances.setdefault(account_id, {})[token_id] = new
        history = self._history.setdefault((account_id, token_id), deque())
        history.append((height, delta))
        while history and history[0][0] < oldest_kept:
            history.popleft()

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {a: {t: str(v) for t, v in b.items() if v} for a, b in self._balances.items()}


class KeyRing:
    """Public keys per account. An implicit account (64 hex chars) also owns its own key until
    it removes it (§10)."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, None]] = {}  # insertion-ordered sets
        self._implicit_removed: set[str] = set()

    @staticmethod
    def implicit_owner(account_id: str, public_key: str) -> bool:
        if not _IMPLICIT.match(account_id):
            return False
        try:
            return implicit_account_id(public_key) == account_id
        except ValueError:
            return False

    def add(self, account_id: str, public_key: str) -> None:
        """Register a key the account does not have yet (the caller checks that)."""
        if self.implicit_owner(account_id, public_key):
            self._implicit_removed.discard(account_id)  # re-activating the implicit key
        else:
            self._keys.setdefault(account_id, {})[public_key] = None

    def remove(self, account_id: str, public_key: str) -> None:
        """Drop a key the account has (the caller checks that)."""
        if self.implicit_owner(account_id, public_key):
            # An implicit account can opt out of its own key (contract comment, §10).
            self._implicit_removed.add(account_id)
        else:
            self._keys[account_id].pop(public_key, None)

    def has(self, account_id: str, public_key: str) -> bool:
        """Registered keys, plus the implicit account's own key unless it was removed (§10)."""
        if public_key in self._keys.get(account_id, {}):
            return True
        return self.implicit_owner(account_id, public_key) and account_id not in self._implicit_removed

    def stored(self, account_id: str) -> list[str]:
        return list(self._keys.get(account_id, {}))

    def snapshot(self) -> dict[str, list[str]]:
        return {a: list(k) for a, k in self._keys.items()}


def check_salt_format(salt_hex: str) -> None:
    """A salt is 4 bytes as 8 lowercase hex chars; anything else is a `ValueError`."""
    try:
        ok = len(bytes.fromhex(salt_hex)) == 4 and salt_hex == salt_hex.lower()
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"salt must be 8 lowercase hex chars, got {salt_hex!r}")


class SaltBook:
    """The contract's salts (§3): one current salt, and every salt still valid (the current one
    and previous ones not invalidated), in the order they became current."""

    def __init__(self, salt_hex: str | None = None) -> None:
        current = salt_hex if salt_hex is not None else secrets.token_bytes(4).hex()
        check_salt_format(current)
        self._current = current
        self._valid: dict[str, None] = {current: None}

    @property
    def current(self) -> str:
        return self._current

    def valid(self) -> list[str]:
        return list(self._valid)

    def is_valid(self, salt_hex: str) -> bool:
        return salt_hex in self._valid

    def rotate(self, new_salt_hex: str | None = None) -> str:
        """`update_current_salt`: a new current salt; previous salts stay valid (contract
        SaltManager doc comment: "previous salt remains valid"). Returns the new salt."""
        new = new_salt_hex if new_salt_hex is not None else secrets.token_bytes(4).hex()
        check_salt_format(new)
        while new_salt_hex is None and new in self._valid:
            new = secrets.token_bytes(4).hex()
        self._current = new
        self._valid[new] = None
        return new

    def invalidate(self, salts: Iterable[str]) -> str:
        """`invalidate_salts`: drop the given salts; a new current one if the current went.
        Returns the current salt."""
        for salt in salts:
            self._valid.pop(salt, None)
        if self._current not in self._valid:
            self._current = ""
            self.rotate()
        return self._current


class NonceBook:
    """Nonces per account: committed on chain (with the height they were committed at), cleaned
    by the garbage collector (kept while reads at older blocks may still see them), and burned by
    the relay in memory only (docs/near-intents-relay.md §7.5), which the on-chain view ignores."""

    def __init__(self) -> None:
        # account -> nonce -> the height it was committed at
        self._committed: dict[str, dict[bytes, int]] = {}
        # cleaned nonces, kept for reads at older blocks: (account, nonce) -> (committed, cleaned)
        self._cleaned: dict[tuple[str, bytes], tuple[int, int]] = {}
        self._relay_burned: dict[str, set[bytes]] = {}

    def taken(self, account_id: str, nonce: bytes) -> bool:
        """Committed and not cleaned, or burned by the relay: settlement refuses it."""
        return nonce in self._committed.get(account_id, {}) or nonce in self._relay_burned.get(account_id, set())

    def used_at(self, account_id: str, nonce: bytes, height: int) -> bool:
        """The on-chain view at block `height`: committed at or before it and not cleaned by then."""
        committed = self._committed.get(account_id, {}).get(nonce)
        if committed is not None:
            return committed <= height
        cleaned = self._cleaned.get((account_id, nonce))
        return cleaned is not None and cleaned[0] <= height < cleaned[1]

    def commit(self, account_id: str, nonce: bytes, height: int) -> None:
        self._committed.setdefault(account_id, {})[nonce] = height

    def burn(self, account_id: str, nonce: bytes) -> None:
        self._relay_burned.setdefault(account_id, set()).add(nonce)

    def clean(self, cleanable: Callable[[bytes], bool], *, height: int, oldest_kept: int) -> int:
        """Remove the committed nonces `cleanable` picks, as cleaned at block `height`, and forget
        cleaned ones older than `oldest_kept`. Returns how many were cleaned now."""
        cleaned = 0
        for account_id, nonces in self._committed.items():
            for nonce in [n for n in nonces if cleanable(n)]:
                self._cleaned[(account_id, nonce)] = (nonces.pop(nonce), height)
                cleaned += 1
        for key in [k for k, (_c, gone) in self._cleaned.items() if gone < oldest_kept]:
            del self._cleaned[key]
        return cleaned

    def snapshot_committed(self) -> dict[str, list[str]]:
        return {a: sorted(b64_nonce(n) for n in s) for a, s in self._committed.items()}

    def snapshot_relay_burned(self) -> dict[str, list[str]]:
        return {a: sorted(b64_nonce(n) for n in s) for a, s in self._relay_burned.items()}
