"""near-intents-ingest daemon: the relay's quote stream into raw and normalised demand events."""
