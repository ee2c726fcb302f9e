"""Shared core of every daemon: settings, logging, events, bus, control API, runtime, database."""
