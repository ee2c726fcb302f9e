"""`nonce_outcome` against the simulated NEAR node with a chain clock the test moves: an executed
intent whose nonce the verifier's garbage collector cleaned is still found used (read at the
last block at or before its deadline), a never-executed one unused, an early question `not_yet`,
and a deadline older than the node keeps `unknown`. No PostgreSQL or Kafka needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from daemons.venues.near_intents.near_rpc import NearRpcClient
from daemons.venues.near_intents.nep413 import (
    SignerKey,
    b64_nonce,
    datetime_to_ns,
    intents_message,
    sign_intent,
    versioned_nonce,
)
from daemons.venues.near_intents.nonce_outcome import HeaderCache, LookupsSpent, NonceOutcome, nonce_outcome
from simulators.chain import Chain
from simulators.near_rpc import NearRpcSimulator
from simulators.verifier import VerifierState

SALT = "252812b3"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def world(clock: Clock) -> AsyncIterator[tuple[VerifierState, NearRpcClient]]:
    chain = Chain(block_time_s=0.6, final_lag_blocks=3, keep_blocks=200, clock=clock, wall=lambda: 1_800_000_000.0)
    state = VerifierState(salt_hex=SALT, chain=chain, nonce_cleanup_after_s=0.0)
    sim = NearRpcSimulator(state, rate_limit_per_min=None)
    await sim.start()
    async with NearRpcClient(sim.base_url, timeout_s=5.0) as client:
        yield state, client
    await sim.stop()


def _burn(state: VerifierState, key: SignerKey, deadline: datetime, now: datetime) -> str:
    """Execute an intent (an empty one, on chain) with a nonce carrying `deadline`."""
    nonce = versioned_nonce(SALT, deadline)
    signed = sign_intent(key, intents_message(key.implicit_account_id, deadline, []), nonce)
    state.burn_nonces([signed.signed_data], now, on_chain=True)
    return b64_nonce(nonce)


async def _outcome(
    state: VerifierState, client: NearRpcClient, key: SignerKey, nonce: str, deadline: datetime
) -> NonceOutcome:
    final = await client.block(finality="final")
    return await nonce_outcome(client, key.implicit_account_id, nonce, datetime_to_ns(deadline), final, HeaderCache())


async def test_an_executed_intent_whose_nonce_was_cleaned_reads_used(
    world: tuple[VerifierState, NearRpcClient], clock: Clock
) -> None:
    state, client = world
    key = SignerKey.generate()
    deadline = state.chain.now() + timedelta(seconds=3)
    clock.t += 1.0
    nonce = _burn(state, key, deadline, state.chain.now())
    clock.t += 10.0  # the deadline has passed, the collector ran, and final is past the deadline
    assert state.collect_nonces() == 1
    clock.t += 3.0  # the clean-up is final too
    assert await client.is_nonce_used(key.implicit_account_id, nonce) is False  # what fooled us before
    assert await _outcome(state, client, key, nonce, deadline) is NonceOutcome.USED


async def test_a_never_executed_intent_reads_unused_and_an_early_question_not_yet(
    world: tuple[VerifierState, NearRpcClient], clock: Clock
) -> None:
    state, client = world
    key = SignerKey.generate()
    deadline = state.chain.now() + timedelta(seconds=3)
    nonce = b64_nonce(versioned_nonce(SALT, deadline))
    clock.t += 3.5  # past the deadline at the head, but final trails by three blocks
    assert await _outcome(state, client, key, nonce, deadline) is NonceOutcome.NOT_YET
    clock.t += 5.0
    assert await _outcome(state, client, key, nonce, deadline) is NonceOutcome.UNUSED


async def test_an_intent_executed_in_the_last_block_before_its_deadline_reads_used(
    world: tuple[VerifierState, NearRpcClient], clock: Clock
) -> None:
    state, client = world
    key = SignerKey.generate()
    deadline = state.chain.now() + timedelta(seconds=6)
    clock.t += 5.5  # the intent lands in the block just before the deadline
    nonce = _burn(state, key, deadline, state.chain.now())
    clock.t += 20.0
    state.collect_nonces()
    assert await _outcome(state, client, key, nonce, deadline) is NonceOutcome.USED


async def test_a_deadline_older_than_the_node_keeps_is_unknown(
    world: tuple[VerifierState, NearRpcClient], clock: Clock
) -> None:
    state, client = world
    key = SignerKey.generate()
    deadline = state.chain.now() + timedelta(seconds=1)
    nonce = _burn(state, key, deadline, state.chain.now())
    clock.t += 600.0  # 1000 blocks later; the node keeps 200
    assert await _outcome(state, client, key, nonce, deadline) is NonceOutcome.UNKNOWN


async def test_a_search_out_of_look_ups_is_no_outcome_and_goes_on_from_its_cache(
    world: tuple[VerifierState, NearRpcClient], clock: Clock
) -> None:
    """A caller's share of the budget may be smaller than the search needs: that is not
    `unknown` (which would keep a hold for an operator), only 'not yet', and the headers found
    are kept, so the next try needs fewer look-ups."""
    state, client = world
    key = SignerKey.generate()
    deadline = state.chain.now() + timedelta(seconds=3)
    clock.t += 1.0
    nonce = _burn(state, key, deadline, state.chain.now())
    clock.t += 60.0  # ~100 blocks later: a few look-ups are needed
    final = await client.block(finality="final")
    cache = HeaderCache()
    with pytest.raises(LookupsSpent):
        await nonce_outcome(client, key.implicit_account_id, nonce, datetime_to_ns(deadline), final, cache, max_calls=1)
    assert (
        await nonce_outcome(
            client, key.implicit_account_id, nonce, datetime_to_ns(deadline), final, cache, max_calls=24
        )
        is NonceOutcome.USED
    )
