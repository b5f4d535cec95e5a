"""The background batch writer: request records and quality scores leave the hot path here.

`submit` (a record) and `submit_score` never wait: they append to an
in-memory buffer. Two tasks work on it:

- the writer writes the buffer in batches of `batch_size` (by size or every
  `flush_interval`), and between batches drains the on-disk spool in large
  transactions (`SPOOL_BATCHES` batches each), so new records never wait
  behind a spool backlog and the backlog shrinks while traffic goes on;
- the spiller keeps memory bounded: whenever more than `max_buffer` items are
  held, it moves the oldest to the spool in one file, down to half of
  `max_buffer`, whatever the writer is doing (a write can wait for the
  database's timeouts). Files are therefore large and few.

Nothing is dropped while the spool has room. Only two things lose records,
each counted in `canary_records_dropped_total` and logged once: a full spool
(`spool_full`), and a buffer at its ceiling because the disk cannot take the
spills fast enough (`buffer_full`). The ceiling is twice `max_buffer`, and at
least `max_buffer` + `SPILL_HEADROOM`: a spill waits for an fsync, which a
busy disk can hold for a second or more, and a small `max_buffer` would
otherwise lose records during one slow spill although the spool has room.

A batch the database rejects is retried item by item so one bad record
cannot sink the others. Ids are unique and inserts skip existing ids, so a
record written twice (a retry after a lost commit acknowledgement, a spool
file drained by two workers) is stored once and counted once in the
aggregates; records written back from the spool have their quality derived
from scores written before them. `stop`
writes everything held, or spools it when the database is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import RecorderSettings
from gateway.errors import StoreRejected, StoreUnavailable
from gateway.metrics import Metrics
from gateway.models import QualityScore, RequestRecord
from gateway.store import Store
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.recorder")

# A spool drain writes this many batches (of `batch_size`) per transaction.
SPOOL_BATCHES = 10

# Items a buffer may hold beyond `max_buffer` while a spill is on its way to disk (~10 s at 1,000
# calls/s, ~10-20 MB of records): the ceiling is max(2 × max_buffer, max_buffer + SPILL_HEADROOM).
SPILL_HEADROOM = 10_000

Item = RequestRecord | QualityScore


class Recorder:
    def __init__(self, store: Store, settings: RecorderSettings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._buffer: deque[Item] = deque()
        # The records held here (buffered or being written) by id, for feedback checks.
        self._held: dict[str, RequestRecord] = {}
        self._writing = 0
        self._wake = asyncio.Event()
        self._overflow = asyncio.Event()
        self._ceiling = max(2 * settings.max_buffer, settings.max_buffer + SPILL_HEADROOM)
        self._tasks: list[asyncio.Task[None]] = []
        self._spilling: set[asyncio.Future[None]] = set()
        self._spool = Spool(Path(settings.spool_dir), max_bytes=settings.spool_max_bytes)
        # Whether the spool may hold files (checked on disk only when it may).
        self._spooled = self._spool.has_files()
        self._database_up = True
        self._loss_logged = False

    @property
    def database_up(self) -> bool:
        """Whether the last write reached the database (False while it is down and records go to the spool)."""
        return self._database_up

    @property
    def depth(self) -> int:
        """Items held in memory: buffered, or taken by a write not yet committed."""
        return len(self._buffer) + self._writing

    @property
    def spooled(self) -> bool:
        """Whether records wait in the spool: a call may be recorded though the database does not have it yet."""
        return self._spooled

    def start(self) -> None:
        """Start the writer and the task that spills memory beyond `max_buffer` to the spool."""
        self._tasks = [
            asyncio.create_task(self._run(), name="recorder"),
            asyncio.create_task(self._spill_overflow(), name="recorder-spill"),
        ]

    def submit(self, record: RequestRecord) -> None:
        """Hold a record for writing; never blocks, never raises."""
        if self._accept(record):
            self._held[record.id] = record

    def submit_score(self, score: QualityScore) -> None:
        """Hold a quality score for writing; never blocks, never raises."""
        self._accept(score)

    def held(self, request_id: str) -> RequestRecord | None:
        """The record with this id if it is held here, not yet written."""
        return self._held.get(request_id)

    def _accept(self, item: Item) -> bool:
        held = len(self._buffer)
        if held >= self._ceiling:
            # The spiller cannot even write to disk fast enough: memory stays bounded.
            self._lose(1, "buffer_full")
            return False
        self._buffer.append(item)
        held += 1
        if held > self._settings.max_buffer:
            self._overflow.set()
        if held >= self._settings.batch_size:
            self._wake.set()
        return True

    def _release(self, items: list[Item]) -> None:
        for item in items:
            if isinstance(item, RequestRecord) and self._held.get(item.id) is item:
                del self._held[item.id]

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Write everything held; spool what the database would not take in time."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await asyncio.gather(*self._spilling, return_exceptions=True)  # logged by the spiller if they fail
        try:
            async with asyncio.timeout(timeout):
                while self._buffer:
                    await self._write_batch()
                while self._spooled:
                    await self._drain_spool()
        except (StoreUnavailable, TimeoutError):
            log.warning("the database did not take every record before shutdown; spooling %d", len(self._buffer))
        if self._buffer:
            await self._spill(len(self._buffer))
        self._metrics.record_queue.set(0)

    async def flush(self) -> None:
        """Write what is held in memory now (used by tests)."""
        while self._buffer and self._database_up:
            await self._write_batch()

    async def _run(self) -> None:
        backoff = self._settings.flush_interval
        while True:
            try:
                # New records first, then one large step of the spool backlog, then again.
                while self._buffer:
                    await self._write_batch()
                    if len(self._buffer) < self._settings.batch_size:
                        break
                if self._spooled and len(self._buffer) < self._settings.batch_size:
                    await self._drain_spool()
                backoff = self._settings.flush_interval
                if self._spooled or len(self._buffer) >= self._settings.batch_size:
                    continue  # more to write now: no pause
            except StoreUnavailable:
                backoff = min(max(backoff * 2, 1.0), self._settings.max_backoff)
            except Exception:
                log.exception("the record writer failed; retrying")
                backoff = self._settings.max_backoff
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
            self._wake.clear()

    async def _spill_overflow(self) -> None:
        """Keep at most `max_buffer` items in memory, moving the oldest to the spool in large files."""
        keep = self._settings.max_buffer // 2
        while True:
            await self._overflow.wait()
            self._overflow.clear()
            try:
                if len(self._buffer) > self._settings.max_buffer:
                    await self._spill(len(self._buffer) - keep)
            except Exception:
                log.exception("spilling records to the spool failed; retrying")
                await asyncio.sleep(1.0)
                self._overflow.set()

    async def _write_batch(self) -> None:
        batch = [self._buffer.popleft() for _ in range(min(self._settings.batch_size, len(self._buffer)))]
        self._writing = len(batch)
        try:
            await self._write(batch)
        except BaseException as exc:
            # Unavailable or cancelled: the batch goes back to the front. If it
            # did commit, writing it again later is harmless (ids are unique).
            if isinstance(exc, StoreUnavailable):
                self._database_up = False
            self._buffer.extendleft(reversed(batch))
            if len(self._buffer) > self._settings.max_buffer:
                self._overflow.set()
            raise
        finally:
            self._writing = 0
            self._metrics.record_queue.set(len(self._buffer))
        self._database_up = True
        self._release(batch)

    async def _write(self, batch: list[Item]) -> None:
        try:
            await self._insert(batch)
        except StoreRejected:
            for item in batch:
                try:
                    await self._insert([item])
                except StoreRejected:
                    self._metrics.records_dropped.labels(reason="rejected").inc()
                    log.error("the database rejected %s %s; it is dropped", type(item).__name__, item.id)

    async def _insert(self, items: list[Item]) -> None:
        records = [item for item in items if isinstance(item, RequestRecord)]
        scores = [item for item in items if isinstance(item, QualityScore)]
        await self._store.insert_batch(records=records, scores=scores)
        self._metrics.records_written.inc(len(records))

    async def _spill(self, count: int) -> None:
        items = [self._buffer.popleft() for _ in range(min(count, len(self._buffer)))]
        if not items:
            return
        self._release(items)
        self._metrics.record_queue.set(len(self._buffer))
        # A spill under way finishes (and is counted) even when its caller is cancelled: `stop`
        # waits for it, since the items are no longer in the buffer.
        spill = asyncio.ensure_future(self._spill_items(items))
        self._spilling.add(spill)
        spill.add_done_callback(self._spilling.discard)
        await asyncio.shield(spill)

    async def _spill_items(self, items: list[Item]) -> None:
        # Encoding thousands of items is CPU work: off the event loop, with the write.
        written = await asyncio.to_thread(self._spool.append_items, items)
        if written:
            self._spooled = True
        self._metrics.records_spooled.inc(written)
        if written < len(items):
            self._lose(len(items) - written, "spool_full")

    async def _drain_spool(self) -> None:
        """Write one spooled file back, in transactions of SPOOL_BATCHES batches; a refused file is released."""
        path = await asyncio.to_thread(self._spool.claim_next)
        if path is None:
            self._spooled = False
            return
        try:
            items, corrupt = await asyncio.to_thread(self._spool.read, path)
            if corrupt:
                self._lose(corrupt, "spool_corrupt")
            size = self._settings.batch_size * SPOOL_BATCHES
            for start in range(0, len(items), size):
                await self._write(items[start : start + size])
        except BaseException as exc:
            # Unavailable or cancelled: the file goes back for a later attempt; what
            # did commit is skipped then (ids are unique).
            if isinstance(exc, StoreUnavailable):
                self._database_up = False
            await asyncio.to_thread(self._spool.release, path)
            raise
        await asyncio.to_thread(path.unlink, True)
        self._database_up = True
        log.info("wrote %d spooled items back to the database", len(items))

    def _lose(self, count: int, reason: str) -> None:
        self._metrics.records_dropped.labels(reason=reason).inc(count)
        if not self._loss_logged:
            self._loss_logged = True
            log.error("request records are being lost (%s); see canary_records_dropped_total", reason)


class Spool:
    """JSON-lines files of records the database could not take yet.

    Each spill is written to a temporary file and renamed into place, so a
    `.jsonl` file is always complete. A file is claimed by renaming it before
    it is drained, so two workers sharing the directory never drain the same
    file; claims left by a process that died are released at start.
    """

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._counter = 0
        self._release_orphans()

    def has_files(self) -> bool:
        try:
            return any(self._directory.glob("records-*.jsonl"))
        except OSError:
            return False

    def append_items(self, items: list[Item]) -> int:
        """Write as many items as the size limit allows, in one file; returns how many were written."""
        return self.append([json.dumps(_to_json(item)) for item in items])

    def read(self, path: Path) -> tuple[list[Item], int]:
        """The items of a claimed file, and how many of its lines could not be read."""
        items: list[Item] = []
        corrupt = 0
        for line in path.read_text("utf-8").splitlines():
            try:
                items.append(_from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                corrupt += 1
        return items, corrupt

    def append(self, lines: list[str]) -> int:
        """Write as many lines as the size limit allows, in one file; returns how many were written."""
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            used = 0
            for path in self._directory.glob("records-*"):
                # A file may be claimed (renamed) or drained (removed) by the writer meanwhile.
                with contextlib.suppress(FileNotFoundError):
                    used += path.stat().st_size
            fitting = []
            for line in lines:
                used += len(line) + 1
                if used > self._max_bytes:
                    break
                fitting.append(line)
            if fitting:
                self._counter += 1
                stem = f"records-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{self._counter}"
                temporary = self._directory / f"{stem}.tmp"
                with temporary.open("w", encoding="utf-8") as handle:
                    handle.write("\n".join(fitting) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                temporary.rename(self._directory / f"{stem}.jsonl")
            return len(fitting)
        except OSError:
            log.exception("cannot write to the spool directory %s", self._directory)
            return 0

    def claim_next(self) -> Path | None:
        """The oldest unclaimed file, renamed as this process's; None when there is none."""
        for path in sorted(self._directory.glob("records-*.jsonl")):
            target = path.with_suffix(f".draining-{os.getpid()}")
            try:
                path.rename(target)
            except OSError:
                continue  # another worker claimed it
            return target
        return None

    def release(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.rename(path.with_suffix(".jsonl"))

    def _release_orphans(self) -> None:
        try:
            claims = list(self._directory.glob("records-*.draining-*"))
        except OSError:
            return
        for path in claims:
            owner = int(path.suffix.rsplit("-", 1)[-1] or 0)
            if owner == os.getpid() or not _alive(owner):
                self.release(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _to_json(item: Item) -> dict[str, Any]:
    data = asdict(item)
    data["created_at"] = item.created_at.isoformat()
    data["kind"] = "score" if isinstance(item, QualityScore) else "record"
    return data


def _from_json(data: dict[str, Any]) -> Item:
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    kind = data.pop("kind", "record")
    return QualityScore(**data) if kind == "score" else RequestRecord(**data)
