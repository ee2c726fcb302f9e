"""market-reference-ingest daemon: Kraken BTC/EUR (primary) and CoinGecko (fallback and
cross-check) into `ref.market_price`, the fair BTC/EURe rate per direction (docs/design.md §3)."""
