"""Wiring for `python -m daemons.near_intents_ingest`."""

from daemons.core.runtime import main
from daemons.near_intents_ingest.service import IngestSettings, NearIntentsIngest

if __name__ == "__main__":
    main(NearIntentsIngest, IngestSettings)
