"""Prometheus collectors, built around an injected registry.

Label values come only from the configuration (deployment, version, provider)
or from fixed sets (status, kind, `api`: chat, responses, messages,
passthrough, and `mode`: live or shadow for calls, canary, shadow or ab_test
for rollouts); never from what a client sent.

Several uvicorn workers: `canary-gateway serve --workers N` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start, so
prometheus-client's multiprocess mode adds every worker's numbers up and
`/metrics` answers the same totals whichever worker serves the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# 50 ms to 120 s: LLM calls are slow, and their tail is long.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "canary_requests",
            "Proxied calls by the version that served them, outcome, the API they came through and mode "
            "(live: served to a user; shadow: a copy sent to a canary in the shadow stage, answered to no one).",
            ["deployment", "version", "status", "api", "mode"],
            registry=r,
        )
        self.refused = Counter(
            "canary_refused_requests",
            "Calls refused before reaching a version, by reason.",
            ["reason"],
            registry=r,
        )
        self.token_counts = Counter(
            "canary_token_counts",
            "Token counts answered (POST /v1/messages/count_tokens): by the version counted for, how "
            "(upstream: the provider's own; estimate: tiktoken) and outcome. Not request records.",
            ["deployment", "version", "source", "status"],
            registry=r,
        )
        self.anonymous = Counter(
            "canary_anonymous_requests",
            "Calls that carried no user id.",
            ["deployment"],
            registry=r,
        )
        self.duration = Histogram(
            "canary_request_duration_seconds",
            "Time from the gateway receiving a call to its last byte sent (a shadow copy: its upstream call).",
            ["deployment", "version", "api", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "canary_time_to_first_token_seconds",
            "Time from the gateway receiving a streamed call to its first answer event.",
            ["deployment", "version", "api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "canary_tokens",
            "Tokens reported by the upstream.",
            ["deployment", "version", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "canary_cost_usd",
            "Cost of answered calls from the pricing table, in US dollars, by mode (live or shadow).",
            ["deployment", "version", "mode"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "canary_upstream_errors",
            "Failed upstream calls by provider and kind.",
            ["provider", "kind"],
            registry=r,
        )
        self.canary_percent = Gauge(
            "canary_percent",
            "Share of users routed to the canary version, in percent.",
            ["deployment"],
            registry=r,
        )
        self.rollout_mode = Gauge(
            "canary_rollout_mode",
            "1 for what the deployment's running rollout does now (mode: canary, shadow or ab_test); 0 otherwise.",
            ["deployment", "mode"],
            registry=r,
        )
        self.shadow_skipped = Counter(
            "canary_shadow_skipped",
            "Sampled calls not copied to the shadow canary, by reason (budget: the per-minute budget; spend_cap: "
            "today's spend cap; queue_full).",
            ["deployment", "reason"],
            registry=r,
        )
        self.quality = Histogram(
            "canary_quality_score",
            "Quality scores in [0, 1] by the version they judge and their source.",
            ["deployment", "version", "source"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.evaluations_skipped = Counter(
            "canary_evaluations_skipped",
            "Sampled answers not evaluated, by reason (queue_full, judge_rate_limit).",
            ["deployment", "reason"],
            registry=r,
        )
        self.judge_calls = Counter(
            "canary_judge_calls",
            "LLM judge calls by outcome (scored, unparsable, failed).",
            ["deployment", "outcome"],
            registry=r,
        )
        self.judge_cost = Counter(
            "canary_judge_cost_usd",
            "Cost of the LLM judge's calls, kept apart from the versions' cost.",
            ["deployment"],
            registry=r,
        )
        self.decisions = Counter(
            "canary_decisions",
            "Rollout check decisions by outcome.",
            ["deployment", "outcome"],
            registry=r,
        )
        self.rollbacks = Counter(
            "canary_rollbacks", "Automatic rollbacks applied.", ["deployment"], registry=r
        )
        self.promotions = Counter(
            "canary_promotions", "Automatic promotions applied.", ["deployment"], registry=r
        )
        self.alerts = Counter(
            "canary_alerts", "Webhook alert deliveries by outcome.", ["outcome"], registry=r
        )
        self.record_queue = Gauge(
            "canary_record_queue_depth",
            "Request records held in memory, waiting to be written.",
            registry=r,
        )
        self.records_written = Counter(
            "canary_records_written", "Request records written to the database.", registry=r
        )
        self.records_spooled = Counter(
            "canary_records_spooled", "Request records written to the on-disk spool.", registry=r
        )
        self.retention_rows = Counter(
            "canary_retention_rows_deleted",
            "Rows deleted because they were older than their retention period (retention.*), by table.",
            ["table"],
            registry=r,
        )
        self.retention_partitions = Counter(
            "canary_retention_partitions_dropped",
            "Daily partitions dropped whole because their day was older than the retention period (PostgreSQL).",
            ["table"],
            registry=r,
        )
        self.partitions_created = Counter(
            "canary_partitions_created",
            "Daily partitions made ahead of their day (PostgreSQL), by table.",
            ["table"],
            registry=r,
        )
        self.maintenance_runs = Counter(
            "canary_maintenance_runs",
            "Runs of the storage upkeep (partitions ahead, retention) by this process, by outcome (ok, error).",
            ["outcome"],
            registry=r,
        )
        self.records_dropped = Counter(
            "canary_records_dropped",
            "Request records lost, by reason.",
            ["reason"],
            registry=r,
        )
        self._series: dict[tuple[str, str, str, str], CallSeries] = {}

    def series(self, deployment: str, version: str, api: str, mode: str = "live") -> CallSeries:
        """The series of calls served by `version` of `deployment` through `api`, prepared once; `mode`:
        `live` for calls served to users, `shadow` for the shadow stage's copies."""
        key = (deployment, version, api, mode)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = CallSeries(self, deployment, version, api, mode)
        return found

    def forget_series(self) -> None:
        """Drop the prepared series (the deployments changed): only current versions stay prepared."""
        self._series = {}


class CallSeries:
    """The series one (deployment, version, api, mode) counts its calls in, each looked up once.

    `labels()` validates and hashes the label values under a lock on every
    call; a proxied call updates five to six series, so their children are
    kept here, created at first use (a series never used is never exported).
    """

    __slots__ = (
        "_api",
        "_cost",
        "_deployment",
        "_duration",
        "_metrics",
        "_mode",
        "_requests",
        "_tokens",
        "_ttft",
        "_version",
    )

    def __init__(self, metrics: Metrics, deployment: str, version: str, api: str, mode: str = "live") -> None:
        self._metrics = metrics
        self._deployment = deployment
        self._version = version
        self._api = api
        self._mode = mode
        self._requests: dict[str, Counter] = {}
        self._duration: Histogram | None = None
        self._ttft: Histogram | None = None
        self._tokens: dict[str, Counter] = {}
        self._cost: Counter | None = None

    def requests(self, status: str) -> Counter:
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self._metrics.requests.labels(
                self._deployment, self._version, status, self._api, self._mode)
        return child

    def duration(self) -> Histogram:
        if self._duration is None:
            self._duration = self._metrics.duration.labels(self._deployment, self._version, self._api, self._mode)
        return self._duration

    def ttft(self) -> Histogram:
        if self._ttft is None:
            self._ttft = self._metrics.ttft.labels(self._deployment, self._version, self._api)
        return self._ttft

    def tokens(self, kind: str) -> Counter:
        child = self._tokens.get(kind)
        if child is None:
            child = self._tokens[kind] = self._metrics.tokens.labels(self._deployment, self._version, kind)
        return child

    def cost(self) -> Counter:
        if self._cost is None:
            self._cost = self._metrics.cost.labels(self._deployment, self._version, self._mode)
        return self._cost


def multiprocess_directory() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(metrics: Metrics) -> bytes:
    """The text a scrape gets: this process's registry, or every worker's in multiprocess mode."""
    if multiprocess_directory() is None:
        return generate_latest(metrics.registry)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_process() -> None:
    """Drop this worker's live gauges at exit (multiprocess mode only)."""
    if multiprocess_directory() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
