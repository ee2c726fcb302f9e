"""Wiring for `python -m daemons.market_reference_ingest`."""

from daemons.core.runtime import main
from daemons.market_reference_ingest.service import MarketReferenceIngest
from daemons.market_reference_ingest.settings import MarketReferenceSettings

if __name__ == "__main__":
    main(MarketReferenceIngest, MarketReferenceSettings)
