"""Shadow copies: in the shadow stage, a share of stable's calls is also answered by the canary, off the hot path.

While a rollout is in the shadow stage (`RolloutState.shadow`: the canary
serves no user), the relay asks `draw` at the start of each call stable
serves whether it is copied: a draw under `shadow.sample_rate`, a token of
the per-minute budget (`shadow.max_per_minute`) and today's (UTC) shadow
spend under `shadow.max_cost_usd_per_day`. When the user's call has ended
(answered or failed; never when the client abandoned it) the relay hands
it over with `submit`, which never waits: a full queue drops the copy and
counts it. The user's answer is stable's; nothing here runs before it is
sent, and nothing here can fail or delay it.

Workers then, for each copy:

1. send the app's request (whatever API it came through: chat completions,
   Responses, Messages), with the canary version's prompt and params, to the
   canary's provider as the relay would (`pivot.upstream_body`: natively or
   through the chat pivot), **not streamed** (even when the user's call
   was), **never retried** (a retry could double a side effect the answer
   triggers), with the provider's deadline;
2. record it as a request record of the canary with `mode = shadow` and
   `shadow_of` = the user's call's id, same user hash and API, its own
   latency, tokens and cost (from `pricing`): costed apart, and never part
   of the canary's production traffic (the store leaves shadow records out
   of every live number and of the canary stages' evidence);
3. run the deployment's evaluators (`quality.evaluators`, on every copy,
   whatever `quality.sample_rate` says) on both answers: stable's scores go
   on the user's call (ids from `evaluators.score_id`, so a call the quality
   sampler also evaluated is scored once), the canary's on the copy;
4. ask the deployment's judge (`quality.judge`), when one is configured and
   both versions answered, which answer is better, blind (labels A and B,
   never the version; the app's conversation without system prompts) and in
   both orders, in random succession (`evaluators.pairwise_body`, rubric
   `judge.pairwise_rubric` or `DEFAULT_PAIRWISE_RUBRIC`); the canary's win
   score (`evaluators.win_score`) is recorded on the copy under
   `analysis.shadow.PAIRWISE_SOURCE`, with what both judge calls cost. The
   judge's per-minute limit (`judge.max_per_minute`, two calls a pair) and
   concurrency apply; an unreadable verdict is counted, never scored.

Tool calls in the canary's answer are never executed, by the gateway or by
anyone: the copy's answer reaches no application. The judge reads them as
text (`[tool call] name(arguments)`), so a shadow stage compares the first
turn of a tool-using conversation only.

Budgets are per worker process: each of `server.workers` processes gets an
equal share of `max_per_minute` and `max_cost_usd_per_day` (several
replicas each get the whole of theirs). The day's spend counts the copies'
cost and their judging. Pending copies are dropped at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from gateway.analysis.shadow import PAIRWISE_SOURCE
from gateway.config import JudgeSettings, QualitySettings, ShadowingSettings
from gateway.errors import GatewayError, InvalidRequest, UpstreamError
from gateway.evaluators import (
    Evaluator,
    Preference,
    Sample,
    answer_for_judge,
    build_evaluators,
    pairwise_body,
    parse_preference,
    score_id,
    wants_json,
    win_score,
)
from gateway.inbound import InboundRequest
from gateway.limits import TokenBucket
from gateway.metrics import Metrics
from gateway.models import Api, Clock, Deployment, QualityScore, RecordStatus, RequestRecord, Usage, utc_now
from gateway.pivot import chat_view, upstream_body
from gateway.pricing import PriceTable
from gateway.providers.assembly import reply_text
from gateway.recorder import Recorder
from gateway.tasks import cancel_and_wait
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway.shadowing")

# Error kinds of the user's call that say nothing about the versions: such calls are not copied.
_NOT_COPIED = frozenset({"client_cancelled", "shutdown"})


@dataclass(frozen=True, slots=True)
class Served:
    """The user's call a copy compares with: its record's id and what the copy's record repeats of it."""

    id: str
    deployment: str
    version: str
    user_hash: str | None
    api: Api
    status: RecordStatus


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One copy to make: the deployment as routed, the app's request, the user's call and its answer."""

    deployment: Deployment
    chat: InboundRequest
    served: Served
    # The user's answer (the first choice's message as the client got it); None when the call failed.
    reply: Mapping[str, Any] | None


class _Scored(Protocol):
    """A call the evaluators score: the user's (`Served`) or its copy (`RequestRecord`)."""

    @property
    def id(self) -> str: ...

    @property
    def deployment(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def status(self) -> RecordStatus: ...


@dataclass(slots=True)
class _Budget:
    """A deployment's per-minute budget and today's spend, in this process."""

    per_minute: TokenBucket
    day: date
    spent: float = 0.0


@dataclass(slots=True)
class _Plan:
    evaluators: list[Evaluator]
    judge: JudgeSettings | None
    judge_limit: TokenBucket | None
    judge_gate: asyncio.Semaphore | None


@dataclass(slots=True)
class _Answer:
    record: RequestRecord
    # The copy's request read as chat completions (`pivot.chat_view`): the conversation the answers reply to.
    view: Mapping[str, Any]
    reply: Mapping[str, Any] | None = None
    cost: float = 0.0


class ShadowDispatcher:
    """Copies of stable's calls to a canary in the shadow stage, from a bounded queue (see the module docstring).

    `share`: this process's part of every budget (1 / `server.workers`);
    `http_status`: the status a failed copy's record stores (`gateway.api.errors.http_status`).
    """

    def __init__(
        self,
        quality: Mapping[str, QualitySettings],
        *,
        clients: Mapping[str, UpstreamClient],
        prices: PriceTable,
        recorder: Recorder,
        metrics: Metrics,
        settings: ShadowingSettings,
        http_status: Callable[[GatewayError], int],
        share: float = 1.0,
        rng: random.Random | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._plans = {
            name: _Plan(
                evaluators=build_evaluators(plan.evaluators),
                judge=plan.judge,
                judge_limit=TokenBucket(plan.judge.max_per_minute) if plan.judge else None,
                judge_gate=asyncio.Semaphore(plan.judge.max_concurrency) if plan.judge else None,
            )
            for name, plan in quality.items()
        }
        self._clients = clients
        self._prices = prices
        self._recorder = recorder
        self._metrics = metrics
        self._settings = settings
        self._http_status = http_status
        self._share = share
        self._rng = rng or random.Random()
        self._clock = clock
        self._budgets: dict[str, _Budget] = {}
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []

    def draw(self, deployment: Deployment, version: str) -> bool:
        """Whether the call stable (`version`) is about to serve is copied to the shadow canary.

        Cheap enough for the hot path: a random draw, a token bucket and a sum.
        False unless the rollout is in the shadow stage and `version` is stable.
        """
        state = deployment.rollout
        if not state.shadow or state.status != "canary" or state.canary is None or version != state.stable:
            return False
        shadow = deployment.policy.shadow
        if self._rng.random() >= shadow.sample_rate:
            return False
        budget = self._budget(deployment)
        cap = shadow.max_cost_usd_per_day
        if cap is not None and budget.spent >= cap * self._share:
            self._metrics.shadow_skipped.labels(deployment=deployment.name, reason="spend_cap").inc()
            return False
        if not budget.per_minute.take():
            self._metrics.shadow_skipped.labels(deployment=deployment.name, reason="budget").inc()
            return False
        return True

    def submit(self, deployment: Deployment, chat: InboundRequest, *, request_id: str, version: str,
               user_hash: str | None, status: RecordStatus, error_kind: str | None,
               reply: Mapping[str, Any] | None) -> None:
        """Queue the copy of a call `draw` chose, once it ended; never blocks: a full queue drops it, counted.

        `request_id` ... `error_kind`: the user's call as recorded; `reply`: its answer, None when it failed.
        """
        if status == "client_cancelled" or error_kind in _NOT_COPIED:
            return
        served = Served(request_id, deployment.name, version, user_hash, chat.api, status)
        try:
            self._queue.put_nowait(ShadowJob(deployment, chat, served, reply if status == "ok" else None))
        except asyncio.QueueFull:
            self._metrics.shadow_skipped.labels(deployment=deployment.name, reason="queue_full").inc()

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"shadow-{index}")
                         for index in range(self._settings.workers)]

    async def stop(self) -> None:
        """Stop the workers; copies still queued are dropped (logged)."""
        await cancel_and_wait(self._workers)
        self._workers = []
        dropped = self._queue.qsize()
        if dropped:
            log.info("dropped %d pending shadow copies at shutdown", dropped)

    def _budget(self, deployment: Deployment) -> _Budget:
        today = self._clock().date()
        budget = self._budgets.get(deployment.name)
        if budget is None:
            per_minute = max(1, round(deployment.policy.shadow.max_per_minute * self._share))
            budget = self._budgets[deployment.name] = _Budget(TokenBucket(per_minute), today)
        if budget.day != today:
            budget.day, budget.spent = today, 0.0
        return budget

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._copy(job)
            except Exception:
                log.exception("the shadow copy of a call of %s failed", job.deployment.name)

    async def _copy(self, job: ShadowJob) -> None:
        deployment = job.deployment
        canary_name = deployment.rollout.canary
        canary = deployment.versions.get(canary_name) if canary_name is not None else None
        client = self._clients.get(canary.provider) if canary is not None else None
        if canary is None or client is None:
            return
        answer = await self._ask_canary(job, client)
        if answer is None:
            return
        self._budget(deployment).spent += answer.cost
        plan = self._plans.get(deployment.name)
        if plan is not None:
            self._evaluate(job, answer, plan)
            if plan.judge is not None and job.reply is not None and answer.reply is not None:
                judged = await self._judge(job, answer, plan)
                self._budget(deployment).spent += judged

    async def _ask_canary(self, job: ShadowJob, client: UpstreamClient) -> _Answer | None:
        """The canary's answer to the app's request, once, not streamed; recorded as the shadow copy.

        Built as the relay builds a call (`pivot.upstream_body`: natively when
        the canary's provider speaks the call's API, else through the chat
        pivot). None, counted, when the canary's provider cannot carry the
        request (a field the pivot refuses): there is nothing to compare.
        """
        deployment, served = job.deployment, job.served
        canary = deployment.versions[deployment.rollout.canary or ""]
        provider = client.provider
        request = {key: value for key, value in job.chat.body.items() if key not in ("stream", "stream_options")}
        try:
            prepared = upstream_body(job.chat.api, canary, request, stream=False, wire=provider.wire)
            upstream = (provider.build_native_request(prepared.body, stream=False) if prepared.native
                        else provider.build_request(prepared.body, stream=False))
        except InvalidRequest:
            self._metrics.shadow_skipped.labels(deployment=deployment.name, reason="untranslatable").inc()
            return None
        view = chat_view(job.chat.api, prepared.body, native=prepared.native)
        created, loop = self._clock(), asyncio.get_running_loop()
        started = loop.time()
        status: RecordStatus = "ok"
        http_status, error_kind, usage, reply = 200, None, Usage(), None
        try:
            response = await client.send(upstream, stream=False, deadline=started + client.settings.timeout_s,
                                         retries=0)
            try:
                parsed = (provider.parse_native_answer(response.content) if prepared.native
                          else provider.parse_answer(response.content))
            finally:
                await response.aclose()
            usage = parsed.usage
            choices = parsed.chat_choices()
            first = next((choice for choice in choices if choice.get("index", 0) == 0), None)
            message = first.get("message") if first is not None else None
            reply = message if isinstance(message, dict) else None
        except UpstreamError as exc:
            status, http_status, error_kind = "error", self._http_status(exc), exc.kind
        latency = loop.time() - started
        price = self._prices.get(canary.model)
        cost = price.cost(usage) if price is not None else None
        record = RequestRecord(
            id=f"shadow-{uuid.uuid4().hex}", created_at=created, deployment=deployment.name, version=canary.name,
            user_hash=served.user_hash, provider=canary.provider, upstream_model=canary.model, stream=False,
            status=status, http_status=http_status, error_kind=error_kind, latency_ms=round(latency * 1000, 3),
            ttft_ms=None, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=cost, api=served.api, uncached_cost_usd=price.uncached_cost(usage) if price is not None else None,
            mode="shadow", shadow_of=served.id,
        )
        self._recorder.submit(record)
        series = self._metrics.series(deployment.name, canary.name, served.api, "shadow")
        series.requests(status).inc()
        series.duration().observe(latency)
        if cost:
            series.cost().inc(cost)
        if error_kind is not None:
            self._metrics.upstream_errors.labels(canary.provider, error_kind).inc()
        return _Answer(record, view, reply, cost or 0.0)

    def _evaluate(self, job: ShadowJob, answer: _Answer, plan: _Plan) -> None:
        json_asked, schema = wants_json(answer.view)
        canary = job.deployment.versions[answer.record.version]
        stable = job.deployment.versions.get(job.served.version)
        sides: tuple[tuple[_Scored, Mapping[str, Any] | None, Mapping[str, Any] | None], ...] = (
            (job.served, job.reply, stable.response_schema if stable else None),
            (answer.record, answer.reply, canary.response_schema))
        for record, reply, version_schema in sides:
            if record.status != "ok":
                continue
            sample = Sample(request_id=record.id, deployment=record.deployment, version=record.version,
                            messages=answer.view.get("messages") or [], answer=reply_text(reply), message=reply,
                            wants_json=json_asked, schema=version_schema or schema)
            for evaluator in plan.evaluators:
                value = evaluator.score(sample)
                if value is not None:
                    self._score(record, evaluator.source, value, identifier=score_id(record.id, evaluator.source))

    async def _judge(self, job: ShadowJob, answer: _Answer, plan: _Plan) -> float:
        """Both orders of the blind pairwise comparison; the canary's win score on the copy. Returns the cost."""
        judge, limit, gate = plan.judge, plan.judge_limit, plan.judge_gate
        assert judge is not None and limit is not None and gate is not None and job.reply is not None
        name = job.deployment.name
        if not (limit.take() and limit.take()):
            self._metrics.evaluations_skipped.labels(deployment=name, reason="judge_rate_limit").inc()
            return 0.0
        messages = answer.view.get("messages") or []
        stable_text = answer_for_judge(_as_sample(job.served, job.reply, messages))
        canary_text = answer_for_judge(_as_sample(answer.record, answer.reply, messages))
        orders = [("canary_first", canary_text, stable_text), ("stable_first", stable_text, canary_text)]
        self._rng.shuffle(orders)
        client = self._clients[judge.provider]
        verdicts: dict[str, Preference | None] = {}
        cost = 0.0
        async with gate:
            for order, first, second in orders:
                body = pairwise_body(messages, first, second, model=judge.model, rubric=judge.pairwise_rubric,
                                     params=judge.params)
                deadline = asyncio.get_running_loop().time() + judge.timeout_s
                try:
                    response = await client.open(body, stream=False, deadline=deadline)
                    try:
                        parsed = client.provider.parse_answer(response.content)
                        text = client.provider.answer_text(response.content)
                    finally:
                        await response.aclose()
                except UpstreamError as exc:
                    self._metrics.judge_calls.labels(deployment=name, outcome="failed").inc()
                    log.warning("pairwise judge call failed for %s: %s", name, exc.kind)
                    return cost
                price = self._prices.get(judge.model)
                cost += (price.cost(parsed.usage) or 0.0) if price is not None else 0.0
                verdicts[order] = parse_preference(text or "")
        if cost:
            self._metrics.judge_cost.labels(deployment=name).inc(cost)
        canary_first, stable_first = verdicts.get("canary_first"), verdicts.get("stable_first")
        if canary_first is None or stable_first is None:
            self._metrics.judge_calls.labels(deployment=name, outcome="unparsable").inc()
            return cost
        self._metrics.judge_calls.labels(deployment=name, outcome="scored").inc()
        win = win_score(canary_first, stable_first)
        self._score(answer.record, PAIRWISE_SOURCE, win, cost=cost or None)
        self._metrics.quality.labels(name, answer.record.version, PAIRWISE_SOURCE).observe(win)
        return cost

    def _score(self, record: _Scored, source: str, value: float, *, cost: float | None = None,
               identifier: str | None = None) -> None:
        self._recorder.submit_score(QualityScore(
            id=identifier or uuid.uuid4().hex, request_id=record.id, source=source, score=value,
            created_at=self._clock(), cost_usd=cost,
        ))


def _as_sample(record: _Scored, reply: Mapping[str, Any] | None, messages: Any) -> Sample:
    return Sample(request_id=record.id, deployment=record.deployment, version=record.version, messages=messages,
                  answer=reply_text(reply), message=reply)


