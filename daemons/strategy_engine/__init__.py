"""strategy-engine daemon: price every request, gate it, decide, command only when armed."""
