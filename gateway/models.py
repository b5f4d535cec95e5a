"""Plain domain types shared by every layer; no I/O, no framework imports."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.policy import RolloutPolicy

PromptMode = Literal["replace", "prepend", "append"]
RolloutStatus = Literal["stable", "canary", "promoted", "rolled_back"]
# What a running rollout is: a canary judged and moved by the checks, or an A/B test that is only reported on.
RolloutKind = Literal["canary", "ab_test"]
# What a running rollout is doing now: a canary serving users, a canary in the shadow stage (serving
# no one, answering copies of stable's calls), or an A/B test.
RolloutMode = Literal["canary", "shadow", "ab_test"]
RecordStatus = Literal["ok", "error", "client_cancelled"]
# How a recorded call was made: served to its user (`live`), or a copy of a user's call sent to
# the canary in the shadow stage and answered to no one (`shadow`).
RecordMode = Literal["live", "shadow"]
# The API a call came through: OpenAI chat completions, OpenAI Responses, Anthropic Messages, or pass-through.
Api = Literal["chat", "responses", "messages", "passthrough"]
# The API a provider speaks on the wire: OpenAI chat completions, OpenAI Responses or Anthropic Messages.
WireApi = Literal["chat_completions", "responses", "messages"]
# What services read the time from (tests pass a fixed or stepping one): an aware UTC datetime.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, as an aware UTC datetime: the default `Clock`."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Version:
    """An immutable prompt snapshot; changing anything means a new version."""

    name: str
    provider: str
    model: str
    system_prompt: str = ""
    few_shot: tuple[Mapping[str, str], ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    prompt_mode: PromptMode = "replace"
    # A JSON schema the version's answers must satisfy (checked by the `json` evaluator).
    response_schema: Mapping[str, Any] | None = None

    def content(self) -> dict[str, Any]:
        """Everything that defines the version, in a stable JSON-able shape."""
        content: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "system_prompt": self.system_prompt,
            "few_shot": [dict(message) for message in self.few_shot],
            "params": dict(self.params),
            "prompt_mode": self.prompt_mode,
        }
        if self.response_schema is not None:
            # Only when set, so versions stored before the key existed keep their hash.
            content["response_schema"] = dict(self.response_schema)
        return content

    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of `content()`: equal exactly when two versions send the same thing."""
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RolloutState:
    """Which versions serve a deployment, and how traffic is split between them."""

    stable: str
    canary: str | None = None
    canary_percent: float = 0.0
    stage: int = 0
    status: RolloutStatus = "stable"
    paused: bool = False
    revision: int = 0
    # When the canary percentage last changed: how long the current stage has run.
    stage_started_at: datetime | None = None
    kind: RolloutKind = "canary"
    # In the shadow stage: no user is served by the canary (percent 0); copies of a share of
    # stable's calls are sent to it off the hot path and judged against stable's answers.
    shadow: bool = False

    @property
    def mode(self) -> RolloutMode | None:
        """What the running rollout is doing now; None when none runs."""
        if self.status != "canary" or self.canary is None:
            return None
        return "ab_test" if self.kind == "ab_test" else "shadow" if self.shadow else "canary"

    def public(self) -> dict[str, Any]:
        """The state as audit events and the admin API show it."""
        return {
            "mode": self.mode,
            "stable": self.stable,
            "canary": self.canary,
            "canary_percent": self.canary_percent,
            "stage": self.stage,
            "status": self.status,
            "paused": self.paused,
            "kind": self.kind,
            "shadow": self.shadow,
        }


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    versions: Mapping[str, Version]
    rollout: RolloutState
    anonymous: Literal["stable", "random"] = "stable"
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    """An append-only audit entry: who changed a rollout, from what, to what, and why."""

    deployment: str
    action: str
    actor: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str | None = None
    snapshot: Mapping[str, Any] | None = None
    at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One version's numbers over a time window; None where there is no data.

    Client-cancelled calls are left out; latency percentiles cover answered calls only.
    """

    version: str
    requests: int
    errors: int
    scored: int
    avg_quality: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p50_ttft_ms: float | None
    p95_ttft_ms: float | None
    avg_cost_usd: float | None
    total_cost_usd: float | None
    avg_prompt_tokens: float | None
    avg_completion_tokens: float | None
    # source → (average score, how many scores), for the calls in the window.
    quality_by_source: Mapping[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        """Errors per counted call (0 to 1); None without calls."""
        return self.errors / self.requests if self.requests else None

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "scored": self.scored,
            "avg_quality": self.avg_quality,
            "p50_latency_ms": self.p50_latency_ms,
            "p95_latency_ms": self.p95_latency_ms,
            "p50_ttft_ms": self.p50_ttft_ms,
            "p95_ttft_ms": self.p95_ttft_ms,
            "avg_cost": self.avg_cost_usd,  # the SPEC's wire keys: USD per call, USD in the window
            "total_cost": self.total_cost_usd,
            "avg_prompt_tokens": self.avg_prompt_tokens,
            "avg_completion_tokens": self.avg_completion_tokens,
            "quality_by_source": {
                source: {"avg": average, "count": count}
                for source, (average, count) in sorted(self.quality_by_source.items())
            },
        }


@dataclass(slots=True)
class RequestRecord:
    """One proxied call, tagged with the version that served it.

    Mutable only so that feedback arriving before the record is written can
    still land in it.
    """

    id: str
    created_at: datetime
    deployment: str
    version: str
    user_hash: str | None
    provider: str
    upstream_model: str
    stream: bool
    status: RecordStatus
    http_status: int
    error_kind: str | None
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    quality: float | None = None
    api: Api = "chat"
    # The cost with every input token priced as uncached (see Price.uncached_cost).
    uncached_cost_usd: float | None = None
    mode: RecordMode = "live"
    # A shadow copy: the id of the user's call it copies (stable's record).
    shadow_of: str | None = None


@dataclass(frozen=True, slots=True)
class QualityScore:
    """One score in [0, 1] for a recorded call, from user feedback, an evaluator or the judge."""

    id: str
    request_id: str
    source: str
    score: float
    created_at: datetime
    comment: str | None = None
    # What producing the score cost (the judge's call); never part of the version's cost.
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call. `prompt_tokens` counts every input token, cached ones included."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens; cache prices default to the input price."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float | None:
        """USD for one call's `usage`, cache reads and writes at their prices; None when a token count is missing."""
        if usage.prompt_tokens is None or usage.completion_tokens is None:
            return None
        cached = usage.cache_read_tokens + usage.cache_write_tokens
        fresh = max(usage.prompt_tokens - cached, 0)
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        total = (
            fresh * self.input
            + usage.cache_read_tokens * cache_read
            + usage.cache_write_tokens * cache_write
            + usage.completion_tokens * self.output
        )
        return total / 1_000_000

    def uncached_cost(self, usage: Usage) -> float | None:
        """The cost as if no input token had been read from or written to a prompt cache.

        Rollouts compare this: a new prompt starts with a cold provider cache, so
        its billed cost is higher for a while for reasons that are not the prompt's.
        """
        if usage.prompt_tokens is None or usage.completion_tokens is None:
            return None
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) / 1_000_000
