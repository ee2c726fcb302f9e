"""`GET /metrics`: every daemon's live attributes in the Prometheus text format, read at scrape time.

One `CollectorRegistry` per service (never the library's global default registry), holding the
process collector (`quoteloop_process_*`, among them `quoteloop_process_start_time_seconds`) and a
`ServiceCollector`. The collector owns no state and runs no task: at each scrape it builds a
`MetricSet`, the runtime adds what every daemon has (`Service.core_metrics`), then the daemon adds its
own (`Service.metrics`, which hands the set to `daemon_metrics` in the daemon's own `metrics.py`:
one function per daemon reading the service's attributes directly, not `state()`).
Nothing in a daemon waits on Prometheus; a scrape is a synchronous read of attributes.

Every name is under the `quoteloop_` namespace; labels are `daemon` (always), and where they apply
`asset`, `reason`, `venue`. Money is a gauge in base units (satoshis, EURe's 18-decimal units): the
exposition format carries float64 only, so an amount above 2**53 base units loses its last digits
here. That is acceptable for alerts and graphs and nowhere else: the ledger, the events and `/state`
keep exact integers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from daemons.core.logs import get_logger

NAMESPACE = "quoteloop"
# The text format every Prometheus reads (Debian bookworm's 2.42 among them); what
# `generate_latest` writes for these names (plain `[a-z_]` names, nothing to escape).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = get_logger("metrics")


class MetricSet:
    """The metrics of one scrape. A family is created by its first sample, with the label names
    of that sample (after `daemon`); every later sample of the family must use the same names."""

    def __init__(self, daemon: str) -> None:
        self.daemon = daemon
        self._families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        self._labels: dict[str, tuple[str, ...]] = {}

    def _family(self, kind: str, name: str, doc: str, labels: Mapping[str, str]) -> tuple[Metric, tuple[str, ...]]:
        full = f"{NAMESPACE}_{name}"
        names = ("daemon", *labels)
        family = self._families.get(full)
        if family is None:
            family = (
                GaugeMetricFamily(full, doc, labels=names)
                if kind == "gauge"
                else CounterMetricFamily(full, doc, labels=names)
            )
            self._families[full] = family
            self._labels[full] = names
        elif self._labels[full] != names:
            raise ValueError(f"{full}: labels {names} differ from the family's {self._labels[full]}")
        return family, names

    def gauge(self, name: str, doc: str, value: float | int | bool | None, **labels: str) -> None:
        """A gauge sample; a `None` value (not known) is left out rather than invented."""
        family, _names = self._family("gauge", name, doc, labels)
        if value is not None:
            assert isinstance(family, GaugeMetricFamily)
            family.add_metric([self.daemon, *labels.values()], float(value))

    def counter(self, name: str, doc: str, value: float | int, **labels: str) -> None:
        """A counter sample; `name` without `_total` (the library adds it)."""
        family, _names = self._family("counter", name, doc, labels)
        assert isinstance(family, CounterMetricFamily)
        family.add_metric([self.daemon, *labels.values()], float(value))

    def counters(self, name: str, doc: str, counts: Mapping[str, int], label: str = "reason") -> None:
        """One counter family from a `Counter` of reasons (or results, or outcomes)."""
        self._family("counter", name, doc, {label: ""})  # the family exists even with no sample yet
        for key, value in sorted(counts.items()):
            self.counter(name, doc, value, **{label: str(key)})

    def connected(self, venue: str, up: bool | None) -> None:
        self.gauge("connected", "1 when the daemon's connection to the venue or store works, else 0", up, venue=venue)

    def age(self, name: str, doc: str, now: datetime, then: datetime | None, **labels: str) -> None:
        """Seconds since `then` (absent when never)."""
        self.gauge(name, doc, None if then is None else max(0.0, (now - then).total_seconds()), **labels)

    def families(self) -> Iterator[Metric]:
        yield from self._families.values()


class MetricsSource(Protocol):
    name: str

    def collect_metrics(self, m: MetricSet) -> None: ...


class ServiceCollector(Collector):
    """Reads a service's attributes at every scrape (`collect_metrics`). A bug in one daemon's
    metrics never fails the scrape: it is logged and `quoteloop_metrics_collect_errors` says so,
    beside what was collected before the error."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source
        self.errors = 0

    def collect(self) -> Iterable[Metric]:
        m = MetricSet(self.source.name)
        try:
            self.source.collect_metrics(m)
        except Exception:
            self.errors += 1
            log.exception("metrics_collect_failed", daemon=self.source.name)
        m.counter("metrics_collect_errors", "Scrapes whose daemon metrics raised (a bug: see the log)", self.errors)
        return list(m.families())


def registry_for(source: MetricsSource, *, process: bool = True) -> CollectorRegistry:
    """The service's own registry: its collector and the process collector (namespaced)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(source))
    if process:
        ProcessCollector(namespace=NAMESPACE, registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def metrics_app(render: Callable[[], bytes]) -> web.Application:
    """The loopback metrics listener's application: `GET /metrics` only, no token. It changes
    nothing and binds 127.0.0.1 only. Not the control TCP port: its bearer token also allows
    acting (arm, withdrawals), which a Prometheus server must never hold."""

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app


def near_rpc_metrics(m: MetricSet, usage: RpcUsageLike) -> None:
    """NEAR RPC budget use and 429s per endpoint (`NearRpcClient.usage()`: the process's figures).
    `venue` is the endpoint's URL with anything key-like removed (`redact_url`)."""
    for e in usage.endpoints:
        v = e.url
        m.gauge("near_rpc_in_use", "1 for the endpoint that answered last", e.in_use, venue=v)
        m.gauge(
            "near_rpc_requests_last_60s", "Requests sent to the endpoint in the last 60 s", e.requests_last_60s, venue=v
        )
        m.gauge(
            "near_rpc_budget_per_min", "The endpoint's client-side budget (requests/min)", e.budget_per_min, venue=v
        )
        m.gauge("near_rpc_tokens_available", "Requests the budget allows at once now", e.tokens_available, venue=v)
        m.counter("near_rpc_requests", "Requests sent to the endpoint", e.requests_total, venue=v)
        m.counter("near_rpc_rate_limited", "HTTP 429 answers from the endpoint", e.rate_limited_total, venue=v)
        m.counter("near_rpc_failures", "Transport failures, 5xx and non-JSON-RPC answers", e.failures_total, venue=v)
        m.counter("near_rpc_failovers", "Requests passed on to a later endpoint", e.failovers, venue=v)


class EndpointUsageLike(Protocol):
    url: str
    in_use: bool
    requests_last_60s: int
    requests_total: int
    rate_limited_total: int
    failures_total: int
    failovers: int
    budget_per_min: int | None
    tokens_available: int | None


class RpcUsageLike(Protocol):
    @property
    def endpoints(self) -> Sequence[EndpointUsageLike]: ...


class ProducerLike(Protocol):
    restarts: int
    failures: int


def kafka_producer_metrics(m: MetricSet, producer: ProducerLike) -> None:
    """What every daemon that publishes shows of its Kafka producer (`EventProducer`)."""
    m.counter("kafka_producer_restarts", "Kafka producers replaced after their sender died", producer.restarts)
    m.counter(
        "kafka_send_failures",
        "Kafka sends that failed (not handed over, or not acknowledged by the broker)",
        producer.failures,
    )


def oldest_age_s(since: Iterable[datetime | None], now: datetime) -> float:
    """Seconds since the earliest of `since` (0 when there is none): e.g. how long the oldest
    unknown outcome has been past its deadline, the figure its alert compares with N minutes."""
    known = [t for t in since if t is not None]
    return max(0.0, (now - min(known)).total_seconds()) if known else 0.0


def asset_label(asset_id: str) -> str:
    """The `asset` label: the registry's symbol (BTC, EURe), else the asset id itself."""
    from daemons.core.assets import REGISTRY

    asset = REGISTRY.get(asset_id)
    return asset.symbol if asset is not None else asset_id


def reserved_credited(
    m: MetricSet, assets: Iterable[str], reserved: Mapping[str, int], credited: Mapping[str, int] | None
) -> None:
    """What this daemon holds reserved of each asset against the latest credited (spendable)
    balance it knows; base units, float in the exposition only (see the module's docstring)."""
    for asset_id in assets:
        label = asset_label(asset_id)
        m.gauge("reserved_base_units", "Reserved for live answers, base units", reserved.get(asset_id, 0), asset=label)
        m.gauge(
            "credited_base_units",
            "Credited (spendable) in the latest inventory, base units",
            None if credited is None else credited.get(asset_id, 0),
            asset=label,
        )
