"""A graceful stop in the order a load balancer expects (RELIABILITY F1, F4).

On SIGTERM:

1. `draining` turns true at once, so `/readyz` answers 503, while the
   listener still accepts and every call is still served, for
   `server.drain_delay`: the time a load balancer (or Kubernetes' endpoint
   removal) takes to stop sending new connections here;
2. then the server is told to stop: uvicorn closes the listener (new
   connections are refused), closes idle keep-alive connections and waits
   for the calls in flight;
3. `server.shutdown_grace` later, `end_calls` ends whatever is still running
   (the relay answers a plain call 503 in OpenAI's shape, ends a stream with
   an SSE error event, and records both as errors of kind `shutdown`);
4. the server's own hard deadline, `hard_deadline(grace)`, cancels anything
   left; the lifespan then writes every record held (or spools it) and the
   process exits.

SIGINT (Ctrl+C at a terminal) skips the delay, or what is left of it; a
second SIGINT makes the server quit at once. A repeated SIGTERM changes
nothing: process managers that signal every process of a group (systemd,
`timeout`) reach each worker twice, directly and through uvicorn's
supervisor, and must not cut the drain short. The drain hooks the server's own signal handler (uvicorn's, in
each worker process) when the app starts, chaining to it after the delay, so
it works the same with one worker or several. Outside the main thread (an app
served from a test thread) there are no signals to hook and the server stops
as it would without this module.

No FastAPI, uvicorn or httpx here: the server is reached only through the
signal handler it installed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("gateway.drain")

# How long ended calls get to send their last bytes before the server cancels them.
END_MARGIN_S = 3

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def hard_deadline(grace: float) -> int:
    """Seconds the server waits for calls once it stops accepting: the grace, plus time for ended calls to finish."""
    return math.ceil(grace) + END_MARGIN_S


class Drain:
    """Where a stopping process is; `install` it once the server is serving.

    `end_calls` ends the calls still running and returns how many it ended.
    Times are seconds.
    """

    def __init__(self, *, delay: float, grace: float, end_calls: Callable[[], int]) -> None:
        self.delay = delay
        self.grace = grace
        self.draining = False
        self._end_calls = end_calls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._stop_timer: asyncio.TimerHandle | None = None
        self._end_timer: asyncio.TimerHandle | None = None
        self._stopping = False

    def install(self) -> bool:
        """Hook SIGTERM and SIGINT in front of the server's handlers; False where there are none to hook."""
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = {signum: signal.getsignal(signum) for signum in _SIGNALS}
        if not all(callable(handler) for handler in previous.values()):
            return False  # no server handler to chain to (default or ignored disposition)
        self._loop = asyncio.get_running_loop()
        self._previous = previous
        for signum in _SIGNALS:
            signal.signal(signum, self._on_signal)
        return True

    def uninstall(self) -> None:
        """Give the signals back to the server and forget pending steps (the server is stopping anyway)."""
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
        self._previous = {}
        for timer in (self._stop_timer, self._end_timer):
            if timer is not None:
                timer.cancel()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the main thread: hand over to the loop.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._begin, signum)

    def _begin(self, signum: int) -> None:
        if signum == signal.SIGINT or (self.delay <= 0 and not self.draining):
            if self._stop_timer is not None:
                self._stop_timer.cancel()
            self._stop_server(signum)  # past the delay already: the server escalates a second Ctrl+C
            return
        if self.draining:
            return  # a repeated SIGTERM: the drain goes on as planned
        self.draining = True
        log.info(
            "draining: readiness answers 503, new calls are still served",
            extra={"drain_delay_s": self.delay, "shutdown_grace_s": self.grace},
        )
        assert self._loop is not None
        self._stop_timer = self._loop.call_later(self.delay, self._stop_server, signum)

    def _stop_server(self, signum: int) -> None:
        self.draining = True
        first = not self._stopping
        self._stopping = True
        handler = self._previous.get(signal.Signals(signum))
        if first:
            log.info("no longer accepting connections; calls in flight have %gs to finish", self.grace)
            assert self._loop is not None
            self._end_timer = self._loop.call_later(self.grace, self._end)
        if callable(handler):
            handler(signum, None)

    def _end(self) -> None:
        ended = self._end_calls()
        if ended:
            log.warning("shutdown grace is over: ended %d calls still in flight", ended)
