"""Wiring for `python -m daemons.history_writer`."""

from daemons.core.runtime import main
from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings

if __name__ == "__main__":
    main(HistoryWriter, HistoryWriterSettings)
