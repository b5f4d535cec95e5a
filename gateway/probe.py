"""What `/readyz` says about the database: a bounded probe, one at a time.

A readiness check must answer quickly and tell the truth about a database
that hangs (locked, frozen, a network black hole), where a query neither
answers nor fails. `DatabaseProbe.check` waits at most `timeout` seconds: a
probe still pending then counts as "unavailable". Only one probe is in flight
at a time, so a hung database holds one pooled connection for the probes, not
one per readiness request; an answer is reused for `max_age` seconds, so
frequent probes from several load balancers cost one query per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from gateway.errors import StoreUnavailable


class DatabaseProbe:
    """`ping` raises StoreUnavailable when the database cannot answer; times are seconds.

    A probe that has not answered after `give_up` is abandoned (its connection
    is dropped), so a database that hangs forever does not hold it forever.
    """

    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        *,
        timeout: float,
        max_age: float,
        give_up: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._timeout = timeout
        self._give_up = give_up
        self._max_age = max_age
        self._clock = clock
        self._answer: bool | None = None
        self._answered_at = 0.0
        self._pending: asyncio.Task[bool] | None = None

    async def check(self) -> bool:
        """Whether the database answered a probe within `timeout` (a recent answer is reused)."""
        if self._answer is not None and self._clock() - self._answered_at < self._max_age:
            return self._answer
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._probe(), name="readiness-probe")
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(self._pending)
        except TimeoutError:
            # Still pending: the database hangs. The probe goes on and answers for later checks.
            self._answer, self._answered_at = False, self._clock()
            return False

    async def close(self) -> None:
        """Cancel a probe still in flight."""
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending

    async def _probe(self) -> bool:
        try:
            async with asyncio.timeout(self._give_up):
                await self._ping()
            answer = True
        except (StoreUnavailable, TimeoutError):
            answer = False
        self._answer, self._answered_at = answer, self._clock()
        return answer
