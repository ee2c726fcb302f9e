"""trade-executor: signs and sends quote answers from pre-funded inventory, durably idempotent."""
