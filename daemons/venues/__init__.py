"""Venue clients: each speaks one venue's real wire protocol and knows nothing of whether its
peer is the real venue or a project simulator. The wire facts each relies on, with their public
sources, are in `docs/` (one file per venue)."""
