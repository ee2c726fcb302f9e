"""NEAR Intents: the solver relay (WebSocket and RPC), NEP-413 signing, and NEAR RPC views of
the `intents.near` verifier. Wire facts: `docs/near-intents-relay.md`, `docs/verifier.md` and
`docs/near-rpc.md`."""
