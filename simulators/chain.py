"""The simulated NEAR chain's clock: blocks produced in time, and how far `final` trails.

Real NEAR produces a block about every 0.6 s, and a `final` read sees the chain a few blocks
behind the head (`optimistic`): a snapshot read right after a fill can predate it (see
docs/near-rpc.md, "Finality"; NEAR docs "RPC API: finality", nearcore doomslug/BFT finality).
The simulated verifier records every state change at the block it executes in, so the NEAR RPC
simulator can serve each read as of the block its finality names, with heights and hashes that
advance with time, not with reads.

A change made now executes in the block being produced (`pending_height()` = head + 1): it is
visible to `optimistic` reads once that block is produced, and to `final` reads
`final_lag_blocks` blocks later.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import base58

GENESIS_HEIGHT = 150_000_000
# NEAR mainnet: ~0.6 s blocks since the 2025 protocol upgrades (docs.near.org "Blocks and
# chunks"); a block is final about two to three blocks after it is produced.
DEFAULT_BLOCK_TIME_S = 0.6
DEFAULT_FINAL_LAG_BLOCKS = 3
# how many blocks back a non-archival node still answers reads at a block id (a few epochs on
# mainnet; kept small here, reads older than this answer GARBAGE_COLLECTED_BLOCK)
DEFAULT_KEEP_BLOCKS = 2_000


def block_hash(height: int) -> str:
    return base58.b58encode(hashlib.sha256(f"sim-block-{height}".encode()).digest()).decode()


@dataclass
class Chain:
    """Heights as a function of time. `clock` is monotonic seconds, `wall` Unix seconds."""

    block_time_s: float = DEFAULT_BLOCK_TIME_S
    final_lag_blocks: int = DEFAULT_FINAL_LAG_BLOCKS
    keep_blocks: int = DEFAULT_KEEP_BLOCKS
    genesis: int = GENESIS_HEIGHT
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _t0: float = field(init=False)
    _wall0: float = field(init=False)
    _hashes: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.block_time_s <= 0:
            raise ValueError("block_time_s must be positive")
        if self.final_lag_blocks < 0:
            raise ValueError("final_lag_blocks must be >= 0")
        self._t0 = self.clock()
        self._wall0 = self.wall()

    def head(self) -> int:
        """The latest produced block (what an `optimistic` read sees)."""
        return self.genesis + int((self.clock() - self._t0) / self.block_time_s)

    def final(self) -> int:
        return max(self.genesis, self.head() - self.final_lag_blocks)

    def near_final(self) -> int:
        return max(self.genesis, self.head() - min(1, self.final_lag_blocks))

    def pending_height(self) -> int:
        """The block a transaction executed now lands in."""
        return self.head() + 1

    def at_finality(self, finality: str) -> int:
        return {"final": self.final, "optimistic": self.head, "near-final": self.near_final}[finality]()

    def oldest_kept(self) -> int:
        return max(self.genesis, self.head() - self.keep_blocks)

    def now(self) -> datetime:
        """The chain's wall clock (what block timestamps are made of)."""
        return datetime.fromtimestamp(self._wall0 + (self.clock() - self._t0), UTC)

    def timestamp_ns(self, height: int) -> int:
        return int((self._wall0 + (height - self.genesis) * self.block_time_s) * 1e9)

    def hash_of(self, height: int) -> str:
        h = block_hash(height)
        self._hashes[h] = height
        return h

    def height_of_hash(self, value: str) -> int | None:
        """The height of a block hash this chain produced (every hash of a kept block resolves)."""
        found = self._hashes.get(value)
        if found is not None:
            return found
        for height in range(self.head(), self.oldest_kept() - 1, -1):
            if self.hash_of(height) == value:
                return height
        return None

    def wait_s_until(self, height: int, finality: str = "final") -> float:
        """Seconds until a read at `finality` sees `height` (0 if it already does)."""
        lag = {"final": self.final_lag_blocks, "optimistic": 0, "near-final": min(1, self.final_lag_blocks)}[finality]
        at = self._t0 + (height + lag - self.genesis) * self.block_time_s
        return max(0.0, at - self.clock())

    async def reached(self, height: int, finality: str = "final") -> None:
        """Return once a read at `finality` sees block `height` (blocks come with time)."""
        while (wait := self.wait_s_until(height, finality)) > 0:
            await asyncio.sleep(wait)
