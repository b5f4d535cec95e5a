"""The rollout policy: a typed, validated, frozen object on every `Deployment`.

Pure (pydantic only). The configuration file declares it per deployment
(`deployments.NAME.policy`), the database stores it as JSON, and the store
turns it back into a `RolloutPolicy` once when it loads a deployment, so
every layer reads typed fields and nothing re-validates a dict.

Durations accept `500ms`, `30s`, `15m`, `1h`, `1d` or a number of seconds.
Keys that lost their meaning with the sequential decisions (`window`,
`rollback_when.error_rate_floor`) are still accepted, ignored, and named by
`deprecated_keys()` so the gateway can warn at start.

`stages` may begin with `shadow` (`[shadow, 5, 25, 50]`): a rollout then
starts at 0 % exposure, judged on copies of stable's calls (`shadow`
settings). The attribute `stages` keeps the percentages only and
`shadow_stage` says whether the shadow stage comes first; the JSON form
writes them back as one list. `mode: ab_test` runs an A/B test instead of
a rollout: a fixed split (`ab.split`), reported on, never acted on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from gateway.durations import Duration, DurationOrZero


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromoteWhen(_Frozen):
    """Gates: each must be shown with confidence (its one-sided interval wholly on the good side)."""

    quality_ratio_min: float = Field(0.95, gt=0)
    p95_latency_ratio_max: float = Field(1.20, gt=0)
    cost_ratio_max: float = Field(1.30, gt=0)
    error_rate_ratio_max: float = Field(1.30, gt=0)
    # The latency gate's threshold is max(ratio × stable p95, stable p95 + slack).
    latency_slack_ms: float = Field(50.0, ge=0)


class RollbackWhen(_Frozen):
    """Rollback bounds: any one shown with confidence (interval wholly beyond it) rolls back."""

    quality_ratio_below: float = Field(0.90, gt=0)
    # 1.5, not the seed's 2.0: a doubled error rate can never be shown beyond 2.0 with confidence.
    error_rate_ratio_above: float = Field(1.5, gt=0)
    p95_latency_ratio_above: float | None = Field(None, gt=0)
    cost_ratio_above: float | None = Field(None, gt=0)
    # Deprecated: the confidence interval replaces the seed's floor. Accepted and ignored.
    error_rate_floor: float | None = None


class ShadowPolicy(_Frozen):
    """The shadow stage: which of stable's calls are also sent to the canary, and when it passes.

    A call is copied when a draw under `sample_rate` says so, the per-minute
    budget has a token left and today's (UTC) shadow spend is below
    `max_cost_usd_per_day` (None: no cap). The stage needs `min_pairs` answered
    pairs before any verdict; the judge's pairwise win rate must be shown at
    least `win_rate_min` (a tie counts half).
    """

    sample_rate: float = Field(0.1, gt=0, le=1)
    max_per_minute: int = Field(60, ge=1)
    max_cost_usd_per_day: float | None = Field(10.0, gt=0)
    win_rate_min: float = Field(0.45, gt=0, lt=1)
    min_pairs: int = Field(100, ge=1)


class ABPolicy(_Frozen):
    """An A/B test: the share of users the candidate gets, and the report's significance level."""

    split: float = Field(50.0, gt=0, lt=100)
    # Two-sided level of every interval in the report: the chance that an identical pair of
    # versions is ever reported as significantly different on a metric, however often one looks.
    alpha: float = Field(0.05, gt=0, lt=0.5)

    @field_validator("split")
    @classmethod
    def _two_decimals(cls, split: float) -> float:
        if round(split, 2) != split:
            raise ValueError(f"split {split} has more than two decimals")
        return split


class RolloutPolicy(_Frozen):
    """How a canary is judged and moved; the defaults are SPEC section 6's."""

    # canary: decide and apply; dry_run: decide and record as events, never apply, no webhooks;
    # ab_test: a new rollout starts as an A/B test at `ab.split`, reported on and never acted on.
    mode: Literal["canary", "dry_run", "ab_test"] = "canary"
    # Canary percentages; the JSON form writes `shadow` first when `shadow_stage` is set.
    stages: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    # Whether a rollout starts in the shadow stage, before `stages` (0 % exposure).
    shadow_stage: bool = False
    shadow: ShadowPolicy = ShadowPolicy()
    ab: ABPolicy = ABPolicy()
    check_interval: Duration = 900.0
    min_stage_duration: DurationOrZero = 86400.0
    # A stage undecided after this long does what on_timeout says.
    max_stage_duration: Duration = 7 * 86400.0
    on_timeout: Literal["hold", "rollback"] = "hold"
    # Calls each version needs in the stage before a metric gets a verdict (for quality:
    # scored calls; for latency: answered calls).
    min_requests: int = Field(100, ge=1)
    # A canary whose error rate is above this (with min_requests calls, and above
    # error_rate_ratio_above × stable's) is rolled back at the first check.
    critical_error_rate: float = Field(0.20, gt=0, le=1)
    # Chance that a whole rollout is rolled back although the canary is within every
    # rollback bound (Bonferroni over the rollback tests and the stages).
    false_rollback_rate: float = Field(0.01, gt=0, lt=0.5)
    # Chance that a canary failing a gate advances a stage (each gate at this level:
    # advancing needs every gate, an intersection-union test).
    false_promote_rate: float = Field(0.05, gt=0, lt=0.5)
    # Users (both versions) at which the confidence sequence is narrowest.
    sequential_tuning: float = Field(5000.0, gt=0)
    # The latency threshold is stable's p95 over this period before the stage started.
    latency_baseline: Duration = 3600.0
    # No canary call this long into a stage: alert.
    canary_traffic_grace: Duration = 3600.0
    promote_when: PromoteWhen = PromoteWhen()
    rollback_when: RollbackWhen = RollbackWhen()
    # Deprecated: a check judges the whole stage, not a trailing window. Accepted and ignored.
    window: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _shadow_first(cls, data: Any) -> Any:
        """`stages: [shadow, 5, 25]` → `stages: (5, 25)` with `shadow_stage` set; `shadow` elsewhere is an error."""
        if not isinstance(data, dict):
            return data
        stages = data.get("stages")
        if not isinstance(stages, list | tuple) or "shadow" not in stages:
            return data
        if stages[0] != "shadow" or list(stages).count("shadow") > 1:
            raise ValueError("stages: 'shadow' may only be the first stage")
        return {**data, "stages": tuple(stages[1:]), "shadow_stage": True}

    @model_serializer(mode="wrap")
    def _shadow_in_stages(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        """The JSON form as the configuration writes it: `shadow` back at the head of `stages`."""
        data = handler(self)
        if isinstance(data, dict) and "shadow_stage" in data and data.pop("shadow_stage") and "stages" in data:
            data["stages"] = ["shadow", *data["stages"]]
        return data

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: tuple[float, ...]) -> tuple[float, ...]:
        if not stages:
            raise ValueError("at least one stage is needed")
        for stage in stages:
            if not 0 < stage <= 100:
                raise ValueError(f"stage {stage} is outside (0, 100]")
            if round(stage, 2) != stage:
                raise ValueError(f"stage {stage} has more than two decimals")
        if list(stages) != sorted(set(stages)):
            raise ValueError("stages must be strictly increasing")
        return stages

    def deprecated_keys(self) -> list[str]:
        """Keys set in this policy that no longer change anything (for a warning at start)."""
        keys = []
        if "window" in self.model_fields_set:
            keys.append("window")
        if "error_rate_floor" in self.rollback_when.model_fields_set:
            keys.append("rollback_when.error_rate_floor")
        return keys

    @property
    def judged_stages(self) -> int:
        """Stages at which a check compares the versions (a stage of 100 is promotion itself; shadow counts)."""
        return max(1, sum(1 for stage in self.stages if stage < 100) + self.shadow_stage)


def next_stage(percent: float, stages: tuple[float, ...]) -> float | None:
    """The first stage above `percent`, or None when the next step is promotion.

    A stage of 100 is promotion: the stable version would get no traffic to compare with.
    """
    following = next((stage for stage in stages if stage > percent), None)
    return following if following is not None and following < 100 else None
