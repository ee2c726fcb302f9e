"""NEAR Intents: the solver relay (WebSocket and RPC), NEP-413 signing, and NEAR RPC views of
the `intents.near` verifier. Wire facts: `shared/docs/protocols/near-intents.md`."""
