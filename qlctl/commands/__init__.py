"""One module per qlctl command group; each is thin over `qlctl.client` and `qlctl.output`."""
