"""Settings shared by every daemon (pydantic-settings, env prefix `QL_`).

The names here are the contract with operators and tests (docs/design.md §9, "Settings every
deployment sets"). Defaults point at the real production endpoints; the local stack and the
tests override them through the environment. Each daemon subclasses `CoreSettings` with its own
fields, so one class per daemon plus this shared one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from daemons.core.assets import DEFAULT_BTC_ASSET_ID, REGISTRY

PAIR = "BTC/EURe"


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QL_", extra="ignore", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # SASL/SCRAM-SHA-512 login on the broker: this process's principal and a file holding its
    # password (a secret: owner-only, or a systemd credential). Unset: no login (a broker that
    # requires one refuses the connection).
    kafka_username: str | None = None
    kafka_password_file: Path | None = None
    # How long the broker holds a fetch that has nothing to return. It answers the moment a
    # record arrives, so this bounds idle fetch traffic, not latency: 20 ms here cost the broker
    # ~22 % of a core with the stack idle.
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=5_000)
    # A consumer off the hot path (history-writer, inventory-sync) gets its messages in batches,
    # at most this late: one fetch answer per message was most of the broker's CPU under load.
    kafka_batch_wait_ms: int = Field(default=200, ge=1, le=5_000)
    # Offsets are committed to the broker at most this often (and on revocation and stop); a crash
    # replays at most this much, which every consumer here tolerates (see core/bus.py).
    kafka_commit_interval_ms: int = Field(default=1_000, ge=0, le=60_000)
    # The collector's young-generation threshold: net new container objects between passes. A
    # pass walks every young object still alive, so a daemon holding large batches in flight
    # wants it above their size (history-writer), or every batch is walked once more.
    gc_young_threshold: int = Field(default=50_000, ge=700)
    database_url: str = "postgresql://quoteloop@/quoteloop?host=/run/postgresql"
    control_dir: Path = Path("/run/quoteloop")
    # Optional loopback TCP control port; it always requires the bearer token in the file below.
    control_tcp_port: int | None = None
    control_token_file: Path | None = None
    # Optional loopback TCP port serving only `GET /metrics` (Prometheus cannot scrape a Unix
    # socket); off by default. No token: it is read-only and binds 127.0.0.1 (daemons/core/metrics.py).
    metrics_tcp_port: int | None = Field(default=None, ge=1, le=65535)
    # Who may open the control socket (read: status, reports): its group; unset, the daemon's
    # own. Who may also act (arm, limits, funding, withdrawals): members of this group, root and
    # the daemon's user (daemons/core/control.py `may_act`).
    control_socket_group: str | None = None
    control_act_group: str | None = "quoteloop-act"

    relay_ws_url: str = "wss://solver-relay-v2.chaindefuser.com/ws"
    relay_rpc_url: str = "https://solver-relay-v2.chaindefuser.com/rpc"
    relay_jwt_file: Path | None = None
    # reconnect pacing for relay connections: capped backoff under a reconnect budget
    # (docs/near-intents-relay.md §8)
    relay_backoff_initial_s: float = Field(default=1.0, gt=0)
    relay_backoff_max_s: float = Field(default=60.0, gt=0)
    relay_reconnect_budget: int = Field(default=120, ge=1)
    relay_reconnect_window_s: float = Field(default=600.0, gt=0)
    relay_max_frame_bytes: int = Field(default=1 << 20, ge=1024)
    # NEAR JSON-RPC endpoints, comma-separated, in order of preference (the client fails over
    # along the list). Production providers from docs.near.org api/rpc/providers: the
    # `*.near.org` endpoints are deprecated and limited to about 30 requests/min per IP
    # (docs.near.org api/rpc/setup), so a `near.org` host is refused unless
    # `near_rpc_allow_deprecated` is set (docs/near-rpc.md).
    near_rpc_allow_deprecated: bool = False
    near_rpc_url: str = "https://free.rpc.fastnear.com,https://near.lava.build,https://near.drpc.org"
    # The client-side budget of each endpoint (daemons/venues/near_intents/near_rpc.py RpcBudget):
    # at most `per_min` requests in any 60 s and `burst` at once, shared by every client of the
    # process; an endpoint out of budget is passed over for the next one rather than earn a 429.
    # 30/min is the deprecated near.org per-IP limit and well under the per-second free tiers the
    # providers page quotes (dRPC 100/s, BlockPI 20/s; FASTNEAR and Lava publish none). A daily
    # quota needs less: 1RPC's 20k requests/day is about 13/min (docs/near-rpc.md). The budget is
    # per process: daemons on one host share its IP, so the provider sees their sum.
    near_rpc_budget_per_min: int = Field(default=30, ge=1)
    near_rpc_budget_burst: int = Field(default=5, ge=1)
    verifier_contract: str = "intents.near"
    poa_bridge_url: str = "https://bridge.chaindefuser.com/rpc"
    kraken_ws_url: str = "wss://ws.kraken.com/v2"
    coingecko_url: str = "https://api.coingecko.com/api/v3"
    coingecko_api_key_file: Path | None = None
    signer_account_id: str | None = None
    signer_key_file: Path | None = None
    # the root-owned hard ceilings strategy-engine and trade-executor hold to (core/ceilings.py)
    ceilings_file: Path = Path("/etc/quoteloop/ceilings.toml")

    pair: str = PAIR
    # Which BTC the pair trades: nBTC (canonical since 2026-05) or the legacy POA BTC.
    btc_asset_id: str = DEFAULT_BTC_ASSET_ID
    # Instance name in the envelope's `producer`; defaults to the host name at runtime.
    instance: str | None = None
    log_level: str = "INFO"

    # Topic layout, applied by `qlctl topics ensure` (idempotent).
    topic_partitions: int = Field(default=1, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)

    # Strict audit mode: strategy and executor refuse to act while history is impaired.
    strict_audit: bool = False

    @field_validator("btc_asset_id")
    @classmethod
    def _known_btc(cls, value: str) -> str:
        asset = REGISTRY.get(value)
        if asset is None or asset.symbol != "BTC":
            btcs = ", ".join(a.asset_id for a in REGISTRY.values() if a.symbol == "BTC")
            raise ValueError(f"btc_asset_id must be one of: {btcs}")
        return value

    @field_validator("near_rpc_url")
    @classmethod
    def _near_rpc_urls(cls, value: str, info: ValidationInfo) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls:
            raise ValueError("near_rpc_url needs at least one URL (comma-separated for several)")
        for i, url in enumerate(urls, 1):
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
            if parts.scheme not in ("http", "https") or not host:
                # not the URL itself: an endpoint URL may carry an API key
                raise ValueError(f"near_rpc_url: entry {i} of {len(urls)} is not an http(s) URL with a host")
            # near_rpc_allow_deprecated is declared before near_rpc_url, so it is validated first
            if (host == "near.org" or host.endswith(".near.org")) and not info.data.get("near_rpc_allow_deprecated"):
                raise ValueError(
                    f"near_rpc_url: {host} is a deprecated near.org RPC endpoint, limited to about 30"
                    " requests/min per IP (docs.near.org api/rpc/setup); use providers from"
                    " docs.near.org api/rpc/providers, or set QL_NEAR_RPC_ALLOW_DEPRECATED=true"
                )
        return ",".join(urls)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value
