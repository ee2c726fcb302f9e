"""Did a signed intent execute? `is_nonce_used` read where the answer is conclusive.

The verifier executes an intent only in a block whose timestamp is at or before the intent's
deadline, and its garbage-collector role may clean up a versioned nonce only in a block after
that deadline (`is_nonce_cleanable`; docs/near-rpc.md, "Nonce clean-up"). So `is_nonce_used`
read at the last block whose timestamp is at or before the deadline says exactly whether the
intent executed; read at any later block, "false" proves nothing (the nonce may have been used
and cleaned since).

`nonce_outcome` finds that block by height from the latest final block: an estimate from the
block time, then a search (heights can be skipped when a producer misses its slot, so a height
with no block is passed over), and reads the nonce there:

- `used` / `unused`: conclusive;
- `not_yet`: the final block is not past the deadline yet: ask again later;
- `unknown`: the node no longer keeps that block (an archival node would); the caller keeps the
  outcome open and says so.

RPC failures (`NearRpcError`) propagate: nothing was learned. So does `LookupsSpent` when the
search needs more than `max_calls` look-ups (a caller's share of its NEAR RPC budget): the
headers read so far stay in the `HeaderCache`, and the next call goes on from there.
"""

from __future__ import annotations

from enum import StrEnum

from daemons.venues.near_intents.near_rpc import BlockHeader, NearRpcClient, NearRpcRequestError


class LookupsSpent(Exception):
    """The search took the `max_calls` look-ups it was given without finding the block: not an
    outcome, ask again later (the headers read are cached)."""


class NonceOutcome(StrEnum):
    USED = "used"
    UNUSED = "unused"
    NOT_YET = "not_yet"
    UNKNOWN = "unknown"


class HeaderCache:
    """Block headers by height (None: no block at that height), so answers resolved in one sweep
    share their look-ups."""

    def __init__(self, keep: int = 1024) -> None:
        self.keep = keep
        self._by_height: dict[int, BlockHeader | None] = {}

    def known(self, height: int) -> bool:
        return height in self._by_height

    def get(self, height: int) -> BlockHeader | None:
        return self._by_height.get(height)

    def put(self, height: int, header: BlockHeader | None) -> None:
        self._by_height[height] = header
        while len(self._by_height) > self.keep:
            self._by_height.pop(next(iter(self._by_height)))


class _Gone(Exception):
    """The node no longer keeps that block."""


async def _header(rpc: NearRpcClient, height: int, cache: HeaderCache, calls: list[int]) -> BlockHeader | None:
    """The block at `height`, None when the chain skipped that height."""
    if cache.known(height):
        return cache.get(height)
    calls[0] += 1
    try:
        header: BlockHeader | None = await rpc.block(block_id=height)
    except NearRpcRequestError as exc:
        if exc.cause == "GARBAGE_COLLECTED_BLOCK":
            raise _Gone() from None
        if exc.cause != "UNKNOWN_BLOCK":
            raise
        header = None
    cache.put(height, header)
    return header


async def last_block_at_or_before(
    rpc: NearRpcClient,
    deadline_ns: int,
    final: BlockHeader,
    cache: HeaderCache,
    *,
    block_time_ns: int = 600_000_000,
    max_calls: int = 24,
) -> BlockHeader | None:
    """The block with the greatest height whose timestamp is <= `deadline_ns` (timestamps grow
    with height), searching below `final` (which must be past the deadline); None when the node
    no longer keeps it; `LookupsSpent` when `max_calls` look-ups did not find it."""
    calls = [0]
    hi = final  # a block past the deadline
    # a block at or before the deadline: step back from the estimate, doubling the step
    step = max(1, (final.timestamp_ns - deadline_ns) // block_time_ns)
    lo: BlockHeader | None = None
    try:
        while lo is None:
            if calls[0] >= max_calls:
                raise LookupsSpent(f"{max_calls} look-ups")
            height = hi.height - step
            probe = await _header(rpc, height, cache, calls)
            if probe is not None and probe.timestamp_ns <= deadline_ns:
                lo = probe
            elif probe is not None:
                hi = probe
            step *= 2
        # binary search over heights between lo (at or before) and hi (past); `floor`: every
        # height in (lo, floor] has no block
        floor = lo.height
        while hi.height - floor > 1:
            if calls[0] >= max_calls:
                raise LookupsSpent(f"{max_calls} look-ups")
            mid = (floor + hi.height) // 2
            probe = await _header(rpc, mid, cache, calls)
            top = mid  # heights in (probe.height, top] have no block
            if probe is None:
                below = mid - 1  # a skipped height: the nearest block below it, down to floor
                while below > floor and probe is None:
                    probe = await _header(rpc, below, cache, calls)
                    below -= 1
                if probe is None:
                    floor = mid
                    continue
            if probe.timestamp_ns <= deadline_ns:
                lo, floor = probe, top
            else:
                hi = probe
    except _Gone:
        return None
    return lo


async def nonce_outcome(
    rpc: NearRpcClient,
    account_id: str,
    nonce_b64: str,
    deadline_ns: int,
    final: BlockHeader,
    cache: HeaderCache,
    max_calls: int = 24,
) -> NonceOutcome:
    """Whether the intent with this nonce and deadline executed; `final` is the latest final
    block header (read once per sweep by the caller)."""
    if final.timestamp_ns <= deadline_ns:
        return NonceOutcome.NOT_YET
    block = await last_block_at_or_before(rpc, deadline_ns, final, cache, max_calls=max_calls)
    if block is None:
        return NonceOutcome.UNKNOWN
    try:
        used = await rpc.is_nonce_used(account_id, nonce_b64, block_id=block.hash)
    except NearRpcRequestError as exc:
        if exc.cause in ("UNKNOWN_BLOCK", "GARBAGE_COLLECTED_BLOCK"):
            return NonceOutcome.UNKNOWN
        raise
    return NonceOutcome.USED if used else NonceOutcome.UNUSED
