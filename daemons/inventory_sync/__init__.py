"""inventory-sync: credited balances inside the `intents.near` verifier, apart from pending
treasury movements, published as `state.intent_inventory` (docs/design.md §1)."""
