"""history-writer daemon: all eight topics into append-only PostgreSQL rows."""
