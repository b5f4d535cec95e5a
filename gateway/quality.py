"""Quality signals off the hot path: sampled evaluators and the rate-limited LLM judge.

The relay draws, per answered call, whether the deployment's evaluators and
judge look at it (`draw`), and hands the answer over with `submit`, which
never waits: when the queue is full the sample is skipped and counted.
Workers run the evaluators and call the judge; every score goes to the
recorder like a request record. The judge is rate-limited and
concurrency-bounded per deployment; its cost is recorded on its scores,
never added to the version's; its failures are counted, never recorded as
the version's errors. Pending samples are dropped at shutdown: they are
optional, unlike feedback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import EvaluationSettings, JudgeSettings, QualitySettings
from gateway.errors import UpstreamError
from gateway.evaluators import Evaluator, Sample, build_evaluators, judge_body, parse_verdict, score_id
from gateway.limits import TokenBucket
from gateway.metrics import Metrics
from gateway.models import QualityScore
from gateway.pricing import PriceTable
from gateway.recorder import Recorder
from gateway.tasks import cancel_and_wait
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway.quality")


@dataclass(frozen=True, slots=True)
class Wanted:
    """What looks at one sampled call."""

    evaluate: bool
    judge: bool


@dataclass(slots=True)
class _Plan:
    sample_rate: float
    evaluators: list[Evaluator]
    judge: JudgeSettings | None
    limiter: TokenBucket | None
    gate: asyncio.Semaphore | None


class QualityMonitor:
    def __init__(
        self,
        plans: Mapping[str, QualitySettings],
        *,
        judges: Mapping[str, UpstreamClient],
        prices: PriceTable,
        recorder: Recorder,
        metrics: Metrics,
        settings: EvaluationSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._plans = {
            name: _Plan(
                sample_rate=plan.sample_rate,
                evaluators=build_evaluators(plan.evaluators),
                judge=plan.judge,
                limiter=TokenBucket(plan.judge.max_per_minute) if plan.judge else None,
                gate=asyncio.Semaphore(plan.judge.max_concurrency) if plan.judge else None,
            )
            for name, plan in plans.items()
            if plan.evaluators or plan.judge
        }
        self._judges = judges
        self._prices = prices
        self._recorder = recorder
        self._metrics = metrics
        self._settings = settings
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[tuple[Sample, Wanted]] = asyncio.Queue(maxsize=settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []

    def draw(self, deployment: str) -> Wanted | None:
        """Whether this call is sampled, and for what; cheap enough for the hot path."""
        plan = self._plans.get(deployment)
        if plan is None:
            return None
        evaluate = bool(plan.evaluators) and self._rng.random() < plan.sample_rate
        judge = plan.judge is not None and self._rng.random() < plan.judge.sample_rate
        return Wanted(evaluate, judge) if evaluate or judge else None

    def submit(self, sample: Sample, wanted: Wanted) -> None:
        """Queue a sampled answer; never blocks: a full queue skips it."""
        try:
            self._queue.put_nowait((sample, wanted))
        except asyncio.QueueFull:
            self._metrics.evaluations_skipped.labels(deployment=sample.deployment, reason="queue_full").inc()

    def start(self) -> None:
        if self._plans:
            self._workers = [asyncio.create_task(self._work(), name=f"quality-{index}")
                             for index in range(self._settings.workers)]

    async def stop(self) -> None:
        await cancel_and_wait(self._workers)
        self._workers = []
        dropped = self._queue.qsize()
        if dropped:
            log.info("dropped %d pending quality samples at shutdown", dropped)

    async def _work(self) -> None:
        while True:
            sample, wanted = await self._queue.get()
            try:
                plan = self._plans[sample.deployment]
                if wanted.evaluate:
                    self._run_evaluators(sample, plan)
                if wanted.judge:
                    await self._ask_judge(sample, plan)
            except Exception:
                log.exception("evaluating a sample of %s failed", sample.deployment)

    def _run_evaluators(self, sample: Sample, plan: _Plan) -> None:
        for evaluator in plan.evaluators:
            value = evaluator.score(sample)
            if value is not None:
                self._record(sample, evaluator.source, value, identifier=score_id(sample.request_id, evaluator.source))

    async def _ask_judge(self, sample: Sample, plan: _Plan) -> None:
        judge, limiter, gate = plan.judge, plan.limiter, plan.gate
        assert judge is not None and limiter is not None and gate is not None
        if not limiter.take():
            self._metrics.evaluations_skipped.labels(deployment=sample.deployment, reason="judge_rate_limit").inc()
            return
        client = self._judges[judge.provider]
        async with gate:
            deadline = asyncio.get_running_loop().time() + judge.timeout_s
            try:
                response = await client.open(
                    judge_body(sample, model=judge.model, rubric=judge.rubric, params=judge.params),
                    stream=False,
                    deadline=deadline,
                )
                try:
                    answer = client.provider.parse_answer(response.content)
                    verdict_text = client.provider.answer_text(response.content)
                finally:
                    await response.aclose()
            except UpstreamError as exc:
                self._metrics.judge_calls.labels(deployment=sample.deployment, outcome="failed").inc()
                log.warning("judge call failed for %s: %s", sample.deployment, exc.kind)
                return
        price = self._prices.get(judge.model)
        cost = price.cost(answer.usage) if price else None
        if cost:
            self._metrics.judge_cost.labels(deployment=sample.deployment).inc(cost)
        verdict = parse_verdict(verdict_text or "")
        if verdict is None:
            self._metrics.judge_calls.labels(deployment=sample.deployment, outcome="unparsable").inc()
            return
        self._metrics.judge_calls.labels(deployment=sample.deployment, outcome="scored").inc()
        self._record(sample, "judge", verdict, cost=cost)

    def _record(self, sample: Sample, source: str, value: float, *, cost: float | None = None,
                identifier: str | None = None) -> None:
        self._recorder.submit_score(QualityScore(
            id=identifier or uuid.uuid4().hex, request_id=sample.request_id, source=source, score=value,
            created_at=datetime.now(UTC), cost_usd=cost,
        ))
        self._metrics.quality.labels(sample.deployment, sample.version, source).observe(value)
