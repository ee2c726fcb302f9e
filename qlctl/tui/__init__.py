"""`qlctl tui`: the Textual live monitor of the seven daemons.

`view` and `plans` are the pure core (daemon `/state` bodies and report rows in, display rows and
confirmation plans out); `source` is the I/O shell over `qlctl.client` and `qlctl.reports`;
`app` and `confirm` are the Textual screens; `command` is the Typer entry point.
"""
