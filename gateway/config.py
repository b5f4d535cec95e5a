"""YAML + environment → frozen, validated settings.

Nothing happens at import time: `load_settings(path)` reads the file,
interpolates `${VAR}` / `${VAR:-default}` in string values, applies the
`GATEWAY_*` overrides and validates. Every problem becomes a `ConfigError`
whose message starts with the key path, e.g.
`deployments.support-bot.versions.v2.provider: unknown provider 'opnai'`.

Why one module over 400 lines: it is the whole configuration schema, read
top to bottom in the order of the file it validates; `gateway.policy` and
`gateway.durations` already hold the parts other modules use on their own.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.durations import Duration, DurationOrZero, parse_duration
from gateway.errors import ConfigError
from gateway.fields import anthropic_refusal
from gateway.models import Deployment, RolloutState, Version, WireApi
from gateway.policy import RolloutPolicy
from gateway.translators.chat_responses import responses_refusal

__all__ = ["Duration", "DurationOrZero", "RolloutPolicy", "Settings", "load_settings", "parse_duration",
           "settings_from_dict"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    return value


def check_storable(value: object, what: str) -> None:
    """Refuse text a database cannot store, anywhere in `value` (strings, and the keys and items of
    mappings and lists): NUL (PostgreSQL text and JSON refuse it) or an unpaired surrogate (not UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{what} must not contain NUL characters")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{what} must not contain unpaired surrogates (text that is not UTF-8)") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_storable(key, what)
            check_storable(item, what)
    elif isinstance(value, list | tuple):
        for item in value:
            check_storable(item, what)


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    # One request body: 32 MiB serves vision calls (a 1.5 MB photo is about 2 MB
    # of base64 JSON) and is Anthropic's own Messages API limit.
    max_body_bytes: int = Field(33_554_432, ge=1024)
    # All request bodies a worker holds at once (read, parsed, sent upstream,
    # until the answer ends); beyond it, 503 with Retry-After. Memory stays flat.
    max_body_bytes_in_flight: int = Field(268_435_456, ge=1024)
    # Upstream calls in flight per worker; beyond it the proxy answers 503 at once.
    max_concurrency: int = Field(1024, ge=1)
    # Proxy calls per minute per client (its token's name, or its address without
    # client tokens); beyond it, 429 with Retry-After. None: no limit.
    rate_limit_per_minute: int | None = Field(None, ge=1)
    # On SIGTERM, readiness answers 503 while new calls are still accepted for this long (0: stop accepting at once).
    drain_delay: DurationOrZero = 5.0
    # Then the listener closes and calls in flight get this long to finish; calls still running are
    # ended with a 503 or an SSE error event (0: at once).
    shutdown_grace: DurationOrZero = 30.0
    cors_origins: tuple[str, ...] = ()
    # The header a user id is read from when the body carries none (see gateway.inbound).
    user_id_header: str = Field("x-user-id", pattern=r"^[A-Za-z0-9-]{1,64}$")

    @model_validator(mode="after")
    def _one_body_fits(self) -> ServerSettings:
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise _KeyError("max_body_bytes_in_flight", "must be at least max_body_bytes, or no such body fits")
        return self

    @field_validator("user_id_header")
    @classmethod
    def _lower(cls, name: str) -> str:
        return name.lower()


class SimulatedModel(_Frozen):
    """How one upstream model of a `kind: simulated` provider behaves (see `gateway.simulator`)."""

    latency_ms: float = Field(300.0, ge=0, description="median time to the first token, in milliseconds")
    latency_spread: float = Field(
        0.3, ge=0, le=3, description="spread of that time: the sigma of a log-normal (0: always the median)"
    )
    tokens_per_second: float = Field(
        150.0, gt=0, description="how fast the answer's tokens come after the first one"
    )
    completion_tokens: int = Field(120, ge=1, description="average length of an answer, in tokens")
    error_rate: float = Field(
        0.0, ge=0, le=1, description="share of calls answered with the API's HTTP 500 server error"
    )
    quality: float = Field(
        0.85, ge=0, le=1, description="average quality of the answers, as a simulated judge scores them"
    )
    judge: bool = Field(
        False, description='answer as an LLM judge: a verdict {"score", "reason"} on the answer it is shown'
    )


class SimulationSettings(_Frozen):
    """The upstream a `kind: simulated` provider pretends to be."""

    api: Literal["chat_completions", "messages"] = Field(
        "chat_completions",
        description="wire format: OpenAI's chat completions, or Anthropic's Messages API",
    )
    seed: int | None = Field(None, description="seed of the random draws, for repeatable runs; none: random")
    models: dict[str, SimulatedModel] = Field(
        default_factory=dict,
        description="behaviour per upstream model name; a model not listed behaves like the defaults",
    )


# Simulated providers need no URL; this one is never resolved (`.invalid` is reserved, RFC 2606).
SIMULATED_BASE_URL = "http://simulated.invalid"


class ProviderSettings(_Frozen):
    kind: Literal["openai", "anthropic", "simulated"]
    base_url: str  # set for simulated providers, which take none
    api_key: SecretStr = SecretStr("")
    # The deadline of one call from its arrival: retries, the wait and streaming included.
    timeout_s: float = Field(60.0, gt=0, description="total deadline of one upstream call")
    connect_timeout_s: float = Field(5.0, gt=0)
    # Longest silence between two chunks of a stream that has started; it does not
    # bound the wait for the first byte or for a plain answer.
    idle_timeout_s: float = Field(30.0, gt=0)
    # Longest wait for the answer's first byte (the headers; a stream's first chunk),
    # from the call's arrival. None: only timeout_s bounds it.
    first_byte_timeout_s: float | None = Field(None, gt=0)
    max_connections: int = Field(256, ge=1)
    retries: int = Field(2, ge=0, le=5)
    headers: dict[str, str] = Field(default_factory=dict)
    # Streamed calls to an OpenAI-compatible upstream carry `stream_options`
    # (`include_usage`, so the record has token counts). Some upstreams refuse
    # the field: false never sends it, the client's own included; a stream's
    # usage is then recorded only when the upstream reports it unasked.
    stream_options: bool = True
    # The HTTP stack: aiohttp's client, used directly, is the cheapest per call
    # (see the README's performance section); httpx's own transport is the fallback.
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    # Link-local and cloud-metadata addresses are refused unless this is set.
    allow_unsafe_url: bool = False

    # kind: simulated only: the upstream it pretends to be.
    simulation: SimulationSettings | None = None
    api: WireApi = Field(
        "chat_completions",
        description="the API the provider speaks upstream: `chat_completions` or `responses` (OpenAI's Responses "
                    "API) for kind openai (default `chat_completions`), `messages` for kind anthropic (its default "
                    "and only one); a simulated provider speaks its `simulation.api`. A call whose API is the "
                    "provider's goes natively, any other is translated through chat completions",
    )

    @model_validator(mode="before")
    @classmethod
    def _kind_fits(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {**data, "api": _wire_api(data)}
        if data.get("kind") == "simulated":
            if "base_url" in data:
                raise _KeyError("base_url", "a simulated provider has no base_url")
            return {**data, "base_url": SIMULATED_BASE_URL, "simulation": data.get("simulation") or {}}
        if data.get("simulation") is not None:
            raise _KeyError("simulation", "only a provider of kind simulated takes a simulation")
        return data

    @model_validator(mode="after")
    def _safe_url(self) -> ProviderSettings:
        try:
            check_upstream_url(self.base_url, allow_unsafe=self.allow_unsafe_url)
        except ValueError as exc:
            raise _KeyError("base_url", str(exc)) from None
        return self


# The wire APIs each provider kind can speak; the first is its default.
PROVIDER_APIS: dict[str, tuple[str, ...]] = {"openai": ("chat_completions", "responses"), "anthropic": ("messages",)}


def _wire_api(data: dict[str, Any]) -> Any:
    """A provider's `api`: its kind's default when absent; an API its kind does not speak stops the start."""
    kind, api = data.get("kind"), data.get("api")
    if kind == "simulated":
        simulation = data.get("simulation")
        simulated = simulation.get("api", "chat_completions") if isinstance(simulation, dict) else getattr(
            simulation, "api", "chat_completions")
        if api is not None and api != simulated:
            raise _KeyError("api", f"a simulated provider speaks its simulation.api ({simulated!r}); "
                                   f"set simulation.api instead of api {api!r}")
        return simulated
    apis = PROVIDER_APIS.get(kind) if isinstance(kind, str) else None
    if apis is None or api is None:
        return api if apis is None else apis[0]
    if api not in apis:
        raise _KeyError("api", f"a provider of kind {kind} speaks {' or '.join(apis)}, not {api!r}")
    return api


def check_upstream_url(url: str, *, allow_unsafe: bool) -> None:
    """Refuse URLs that could leak the provider key somewhere unintended."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base_url must be http or https, got {parts.scheme or 'nothing'!r}")
    if not parts.hostname:
        raise ValueError("base_url has no host")
    if "@" in parts.netloc or parts.username or parts.password:
        raise ValueError("base_url must not carry credentials ('@'); use api_key")
    if parts.fragment or "#" in url:
        raise ValueError("base_url must not have a fragment ('#')")
    if parts.query:
        raise ValueError("base_url must not have a query string")
    if allow_unsafe:
        return
    host = parts.hostname.lower().rstrip(".")
    if host in _METADATA_HOSTS:
        raise ValueError(f"base_url host {host!r} is a cloud metadata service (allow_unsafe_url to permit)")
    address = _address_of(host)
    if address is None:
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        raise ValueError(f"base_url address {host} is link-local or unroutable (allow_unsafe_url to permit)")


def _address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host literal denotes, including the numeric forms resolvers accept (2852039166, 0xa9fea9fe)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


class PriceSettings(_Frozen):
    """USD per 1M tokens; cache prices default to the input price."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)


class FewShotMessage(_Frozen):
    role: Literal["user", "assistant"]
    content: str


class VersionSettings(_Frozen):
    provider: str
    model: str = Field(min_length=1)
    system_prompt: str = ""
    few_shot: tuple[FewShotMessage, ...] = ()
    # Chat request fields the version sets over the app's (null: removes the app's); on an Anthropic
    # provider only fields its translation takes (the README's field table), else the version does not load.
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_mode: Literal["replace", "prepend", "append"] = "replace"
    # A JSON schema the answers must satisfy; the `json` evaluator checks it.
    response_schema: dict[str, Any] | None = None

    def to_version(self, name: str) -> Version:
        return Version(
            name=name,
            provider=self.provider,
            model=self.model,
            system_prompt=self.system_prompt,
            few_shot=tuple({"role": shot.role, "content": shot.content} for shot in self.few_shot),
            params=dict(self.params),
            prompt_mode=self.prompt_mode,
            response_schema=self.response_schema,
        )

    @field_validator("response_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            import jsonschema  # only when a version declares a schema: it is a heavy import

            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return schema

    @model_validator(mode="after")
    def _storable(self) -> VersionSettings:
        stored = {"provider": self.provider, "model": self.model, "system_prompt": self.system_prompt,
                  "few_shot": [shot.content for shot in self.few_shot], "params": self.params,
                  "response_schema": self.response_schema}
        for name, value in stored.items():
            check_storable(value, name)
        return self

    @field_validator("params")
    @classmethod
    def _no_routing_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        reserved = {"model", "messages", "stream", "stream_options"} & params.keys()
        if reserved:
            raise ValueError(f"params may not set {', '.join(sorted(reserved))}")
        return params


class EvaluatorSettings(_Frozen):
    """A built-in evaluator; its scores are recorded as source `evaluator:<name>`."""

    type: Literal["non_empty", "refusal", "json", "length", "regex"]
    name: str | None = None  # defaults to the type
    min_chars: int = Field(0, ge=0)  # length
    max_chars: int | None = Field(None, ge=1)  # length
    must_match: str | None = None  # regex
    must_not_match: str | None = None  # regex
    languages: tuple[Literal["en", "de", "fr", "es"], ...] = ("en", "de", "fr", "es")  # refusal

    @field_validator("must_match", "must_not_match")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @property
    def source(self) -> str:
        return f"evaluator:{self.name or self.type}"


class JudgeSettings(_Frozen):
    """An LLM that scores sampled answers against a rubric."""

    provider: str
    model: str = Field(min_length=1)
    sample_rate: float = Field(0.05, ge=0, le=1)
    max_per_minute: int = Field(60, ge=1)
    max_concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(30.0, gt=0)
    rubric: str | None = None  # None: the shipped default rubric
    # The shadow stage's pairwise comparison of two answers; None: the shipped default
    # (gateway.evaluators.DEFAULT_PAIRWISE_RUBRIC). It must ask for {"winner": "A" | "B" | "tie"}.
    pairwise_rubric: str | None = None
    params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0})


class QualitySettings(_Frozen):
    sample_rate: float = Field(0.0, ge=0, le=1)  # share of answered calls the evaluators see
    evaluators: tuple[EvaluatorSettings, ...] = ()
    judge: JudgeSettings | None = None

    @field_validator("evaluators")
    @classmethod
    def _unique(cls, evaluators: tuple[EvaluatorSettings, ...]) -> tuple[EvaluatorSettings, ...]:
        sources = [evaluator.source for evaluator in evaluators]
        duplicates = sorted({source for source in sources if sources.count(source) > 1})
        if duplicates:
            raise ValueError(f"evaluator names must be unique: {', '.join(duplicates)} (set `name`)")
        return evaluators


class EvaluationSettings(_Frozen):
    queue_size: int = Field(1000, ge=1)  # samples waiting; beyond it they are skipped and counted
    workers: int = Field(2, ge=1, le=64)


class ShadowingSettings(_Frozen):
    """The shadow stage's background dispatcher (per worker process)."""

    # Copies waiting to be sent to the canary; beyond it they are dropped and counted.
    queue_size: int = Field(1000, ge=1)
    # Copies sent (and evaluated, and judged) at once.
    workers: int = Field(4, ge=1, le=64)


class DeploymentSettings(_Frozen):
    stable: str
    canary: str | None = None
    versions: dict[str, VersionSettings]
    policy: RolloutPolicy = RolloutPolicy()
    quality: QualitySettings = QualitySettings()
    # Requests without a user id: "stable" (sticky, deterministic) or
    # "random" (split by the percentage per request, not sticky).
    anonymous: Literal["stable", "random"] = "stable"

    @field_validator("versions")
    @classmethod
    def _version_names(cls, versions: dict[str, VersionSettings]) -> dict[str, VersionSettings]:
        if not versions:
            raise ValueError("a deployment needs at least one version")
        for name in versions:
            check_name(name, "version name")
        return versions

    @model_validator(mode="after")
    def _slots_exist(self) -> DeploymentSettings:
        if self.stable not in self.versions:
            raise _KeyError("stable", f"unknown version {self.stable!r}")
        if self.canary is not None:
            if self.canary not in self.versions:
                raise _KeyError("canary", f"unknown version {self.canary!r}")
            if self.canary == self.stable:
                raise _KeyError("canary", "must differ from stable")
        return self


class AlertSettings(_Frozen):
    webhooks: tuple[str, ...] = ()

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, webhooks: tuple[str, ...]) -> tuple[str, ...]:
        for url in webhooks:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"webhook {url!r} is not an http(s) URL")
        return webhooks


class RecorderSettings(_Frozen):
    batch_size: int = Field(500, ge=1, le=10_000)
    flush_interval: Duration = 0.5
    # Records held in memory at most (the database away or slow); beyond it the oldest half goes to the spool.
    max_buffer: int = Field(20_000, ge=10)
    spool_dir: str = "./spool"
    spool_max_bytes: int = Field(1_073_741_824, ge=0)
    # Longest pause between write attempts while the database is down.
    max_backoff: Duration = 30.0


class DatabaseSettings(_Frozen):
    pool_size: int = Field(5, ge=1)
    max_overflow: int = Field(5, ge=0)
    pool_timeout: Duration = 5.0
    statement_timeout: Duration = 5.0
    # PostgreSQL: the longest a rollout check's statements may run (per-user sums over a whole
    # stage); the checks use a pool of their own with this bound.
    check_timeout: Duration = 120.0
    # How often each replica checks the rollout state for changes.
    refresh_interval: Duration = 1.0
    # Longest wait of /readyz for the database to answer its probe; beyond it, "unavailable".
    probe_timeout: Duration = 1.0
    # Apply pending migrations at start and when the database becomes reachable; false: only
    # `canary-gateway migrate` does (e.g. a migration job), and a schema behind is logged.
    migrate: bool = True
    # PostgreSQL: what stands between the gateway and the server. `none`: the server itself, or a
    # pooler in session mode. `transaction`: a pooler in transaction mode (PgBouncer's
    # `pool_mode = transaction`), which hands the server connection to another client after each
    # transaction: no named prepared statements are kept, and the statement timeouts are set in
    # each transaction (`SET LOCAL`) instead of at connect. Ignored on SQLite.
    pooler: Literal["none", "transaction"] = "none"


class RetentionSettings(_Frozen):
    """How long stored rows are kept, and how often the upkeep runs (one replica at a time does each step)."""

    # Request records, and the minute aggregates built from them; null: forever. PostgreSQL drops
    # whole daily partitions once their day is this old; SQLite deletes in batches.
    records: Duration | None = 30 * 86400.0
    # Quality scores (by when the score was made); null: forever.
    scores: Duration | None = 30 * 86400.0
    # The rollout events (the audit trail); null (the default): forever.
    events: Duration | None = None
    # How often the upkeep runs: the next days' partitions (PostgreSQL), then retention.
    interval: Duration = 3600.0
    # Rows per delete statement (SQLite, and PostgreSQL's default and legacy partitions): each is
    # a short transaction of its own, so the record writer never waits long behind one.
    batch_size: int = Field(5000, ge=1, le=1_000_000)


class LoggingSettings(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


def _tokens(value: object) -> object:
    # An unset ${VAR} leaves an empty token: treat it as "not configured".
    if isinstance(value, Mapping):
        return {name: token for name, token in value.items() if token not in (None, "")}
    return value


# The paths the gateway answers itself; a pass-through route may not shadow them.
SERVED_PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/v1/models",
                "/v1/feedback")
DEFAULT_PASSTHROUGH_ROUTES = ("/v1/embeddings", "/v1/moderations", "/v1/completions", "/v1/audio/*",
                              "/v1/images/*", "/v1/models/*")
_ROUTE = re.compile(r"^/v1(/[A-Za-z0-9._-]+)+(/\*)?$")


class PassthroughSettings(_Frozen):
    """Paths of an OpenAI base URL relayed as they are to one provider (see `gateway.passthrough`).

    `routes` are paths; one ending in `/*` covers every path below it
    (`/v1/models` is read as `/v1/models/*`: the list is always the
    gateway's). No provider: no pass-through (the routes answer 404).
    """

    provider: str | None = Field(
        None, description="the provider (kind openai) these routes go to, with its key; none: pass-through is off"
    )
    routes: tuple[str, ...] = Field(
        DEFAULT_PASSTHROUGH_ROUTES,
        description="paths relayed; a path ending in /* covers every path below it (/v1/models means /v1/models/*)",
    )

    @field_validator("routes")
    @classmethod
    def _paths(cls, routes: tuple[str, ...]) -> tuple[str, ...]:
        # The gateway lists the models (its deployments) itself; "/v1/models" means retrieving one of the others.
        routes = tuple(dict.fromkeys("/v1/models/*" if route == "/v1/models" else route for route in routes))
        for route in routes:
            if not _ROUTE.match(route) or len(route) > 64:
                raise ValueError(f"route {route!r} must be a path under /v1/ of at most 64 characters, "
                                 "optionally ending in /*")
            if route in SERVED_PATHS:
                raise ValueError(f"route {route!r} is served by the gateway itself")
        return routes


class Settings(_Frozen):
    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    admin_tokens: Annotated[dict[str, SecretStr], BeforeValidator(_tokens)] = Field(default_factory=dict)
    client_tokens: Annotated[dict[str, SecretStr], BeforeValidator(_tokens)] = Field(default_factory=dict)
    # Salt for hashing user ids before they are stored; set it to correlate across restarts.
    user_id_salt: SecretStr = SecretStr("")
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    recorder: RecorderSettings = RecorderSettings()
    retention: RetentionSettings = RetentionSettings()
    logging: LoggingSettings = LoggingSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    pricing: dict[str, PriceSettings] = Field(default_factory=dict)
    alerts: AlertSettings = AlertSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    shadowing: ShadowingSettings = ShadowingSettings()
    deployments: dict[str, DeploymentSettings] = Field(default_factory=dict)
    passthrough: PassthroughSettings = PassthroughSettings()

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB")
        return url

    @field_validator("deployments")
    @classmethod
    def _deployment_names(cls, deployments: dict[str, DeploymentSettings]) -> dict[str, DeploymentSettings]:
        for name in deployments:
            check_name(name, "deployment name")
        return deployments

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for name, deployment in self.deployments.items():
            for version_name, version in deployment.versions.items():
                if version.provider not in self.providers:
                    raise _KeyError(
                        f"deployments.{name}.versions.{version_name}.provider",
                        f"unknown provider {version.provider!r}",
                    )
                refused = params_refusal(version.params, self.providers[version.provider])
                if refused is not None:
                    raise _KeyError(f"deployments.{name}.versions.{version_name}.params.{refused[0]}", refused[1])
            judge = deployment.quality.judge
            if judge is not None and judge.provider not in self.providers:
                raise _KeyError(f"deployments.{name}.quality.judge.provider", f"unknown provider {judge.provider!r}")
            refused = params_refusal(judge.params, self.providers[judge.provider]) if judge is not None else None
            if refused is not None:
                raise _KeyError(f"deployments.{name}.quality.judge.params.{refused[0]}", refused[1])
        provider = self.passthrough.provider
        if provider is not None:
            if provider not in self.providers:
                raise _KeyError("passthrough.provider", f"unknown provider {provider!r}")
            if self.providers[provider].kind != "openai":
                raise _KeyError("passthrough.provider", f"provider {provider!r} must be of kind openai "
                                "(pass-through relays OpenAI's API)")
        return self


def params_refusal(params: Mapping[str, Any], provider: ProviderSettings) -> tuple[str, str] | None:
    """The first of a version's (or judge's) `params` its provider cannot take: (name, why), else None.

    A provider speaking Anthropic's Messages API refuses a param whose value
    Anthropic has no counterpart for (`seed`, `n: 2`), or one OpenAI's chat
    request does not know (`gateway.fields.anthropic_refusal`); one speaking
    OpenAI's Responses API refuses the chat params it has no field for
    (`stop`, `seed`, `n: 2`, the penalties, ...) or does not know
    (`gateway.translators.chat_responses.responses_refusal`). A param set to
    null removes the app's parameter and is always taken.
    """
    if provider.api == "chat_completions":
        return None
    for name, value in params.items():
        if value is None:
            continue
        if provider.api == "messages":
            why = anthropic_refusal(name, value)
            if why is not None:
                return name, f"{why} (the provider speaks Anthropic's Messages API)"
        else:
            why = responses_refusal(name, value)
            if why is not None:
                return name, f"{why} (the provider speaks OpenAI's Responses API)"
    return None


class _KeyError(ValueError):
    """A cross-reference error that knows its own key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "GATEWAY_DATABASE_URL": ("database_url",),
    "GATEWAY_HOST": ("server", "host"),
    "GATEWAY_PORT": ("server", "port"),
    "GATEWAY_WORKERS": ("server", "workers"),
    "GATEWAY_LOG_LEVEL": ("logging", "level"),
    "GATEWAY_USER_ID_SALT": ("user_id_salt",),
    "GATEWAY_SPOOL_DIR": ("recorder", "spool_dir"),
    "GATEWAY_MIGRATE": ("database", "migrate"),
}


def load_settings(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, interpolate, override and validate; `path=None` gives the built-in defaults."""
    env = os.environ if environ is None else environ
    raw: object = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    data = _interpolate(raw, env, ())
    assert isinstance(data, dict)
    _apply_overrides(data, env)
    return settings_from_dict(data)


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Validate an already-parsed configuration mapping."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    context = error.get("ctx", {}).get("error")
    if isinstance(context, _KeyError):
        return f"{path}.{context.path}: {context.message}" if path else f"{context.path}: {context.message}"
    message = str(context) if isinstance(context, Exception) else error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    message = message.removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def _interpolate(value: object, env: Mapping[str, str], path: tuple[str, ...]) -> object:
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {key: _interpolate(item, env, (*path, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env, (*path, str(index))) for index, item in enumerate(value)]
    return value


def _apply_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for variable, path in ENV_OVERRIDES.items():
        if env.get(variable):
            section = data
            for key in path[:-1]:
                section = section.setdefault(key, {})
                if not isinstance(section, dict):
                    raise ConfigError(f"{'.'.join(path[:-1])}: must be a mapping")
            section[path[-1]] = env[variable]
    token = env.get("GATEWAY_ADMIN_TOKEN")
    tokens = data.get("admin_tokens")
    if token and not (isinstance(tokens, dict) and any(tokens.values())):
        data["admin_tokens"] = {"admin": token}


def declared_deployments(settings: Settings) -> dict[str, Deployment]:
    """The deployments as the file declares them: the state before any rollout ran."""
    deployments = {}
    for name, declared in settings.deployments.items():
        versions = {
            version_name: version.to_version(version_name) for version_name, version in declared.versions.items()
        }
        policy = declared.policy
        ab_test = policy.mode == "ab_test"
        start = policy.ab.split if ab_test else 0.0 if policy.shadow_stage else policy.stages[0]
        rollout = RolloutState(
            stable=declared.stable,
            canary=declared.canary,
            canary_percent=start if declared.canary else 0.0,
            status="canary" if declared.canary else "stable",
            kind="ab_test" if ab_test and declared.canary else "canary",
            shadow=bool(declared.canary) and policy.shadow_stage and not ab_test,
        )
        deployments[name] = Deployment(name=name, versions=versions, rollout=rollout, anonymous=declared.anonymous,
                                       policy=declared.policy)
    return deployments
