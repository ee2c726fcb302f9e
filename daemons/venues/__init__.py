"""Venue clients: each speaks one venue's real wire protocol and knows nothing of whether its
peer is the real venue or a project simulator. Sources: `shared/docs/protocols/`."""
