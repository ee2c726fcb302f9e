"""Venue simulators: TEST INFRASTRUCTURE, never imported by a daemon.

Each speaks one venue's real wire protocol back (verifying what the real venue would verify),
runs on loopback, and has a small control endpoint under `/_sim/` for tests to inject faults
and read what it saw. `python -m simulators` starts them all.
"""
