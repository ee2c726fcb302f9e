"""qlctl: the operator's command line (Typer + Rich) over the daemons' control sockets and PostgreSQL."""
