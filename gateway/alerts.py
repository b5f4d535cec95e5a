"""Webhook delivery for rollout alerts (rollback, promotion, stage advance).

`send` only enqueues: a decision never waits on a webhook. A worker task
POSTs each alert to every configured URL (Slack-compatible JSON: `text`, plus
structured fields), retrying with exponential backoff; failures are logged
and counted, never raised. The queue is bounded: when it is full, the alert
is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from gateway.metrics import Metrics
from gateway.retry import backoff_s
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.alerts")


class Alerts:
    def __init__(
        self,
        webhooks: Sequence[str],
        metrics: Metrics,
        *,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        queue_size: int = 1000,
    ) -> None:
        self._webhooks = tuple(webhooks)
        self._metrics = metrics
        self._attempts = attempts
        self._backoff = backoff_s
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, transport=transport,
                                         trust_env=False)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._webhooks:
            self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None
        await self._client.aclose()

    def send(self, alert: dict[str, Any]) -> None:
        """Queue an alert for every webhook; never blocks, never raises."""
        if not self._webhooks:
            return
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._metrics.alerts.labels(outcome="dropped").inc(len(self._webhooks))
            log.error("alert queue full; alert for %s dropped", alert.get("deployment"))

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            await asyncio.gather(*(self._deliver(url, alert) for url in self._webhooks))

    async def _deliver(self, url: str, alert: dict[str, Any]) -> None:
        for attempt in range(self._attempts):
            try:
                answer = await self._client.post(url, json=alert)
                if answer.status_code < 300:
                    self._metrics.alerts.labels(outcome="delivered").inc()
                    return
                problem = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt + 1 < self._attempts:
                await asyncio.sleep(backoff_s(self._backoff, attempt))
        self._metrics.alerts.labels(outcome="failed").inc()
        log.warning("alert for %s not delivered after %d attempts (%s)", alert.get("deployment"),
                    self._attempts, problem)


def alert_text(deployment: str, action: str, before: dict[str, Any], after: dict[str, Any],
               reasons: Sequence[str]) -> str:
    """The one-paragraph summary Slack shows."""
    headline = {
        "rolled_back": f":rotating_light: {deployment}: canary {before.get('canary')} rolled back "
                       f"({before.get('canary_percent'):g} % → 0 %)",
        "promoted": f":white_check_mark: {deployment}: {before.get('canary')} promoted to stable",
        "advanced": f":arrow_up: {deployment}: canary {after.get('canary')} advanced "
                    f"{before.get('canary_percent'):g} % → {after.get('canary_percent'):g} %",
    }.get(action, f"{deployment}: {action}")
    return headline + "\n" + "\n".join(f"• {reason}" for reason in reasons)
