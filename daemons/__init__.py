"""quoteloop daemons: one package per daemon, shared code in `daemons.core`."""
