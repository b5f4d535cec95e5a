"""The gateway's memory under large request bodies: vision calls and oversized bodies.

Set-up, all on 127.0.0.1 and torn down at the end: a fake OpenAI upstream
(aiohttp, in this process) that reads each body and answers a small chat
completion after `--upstream-delay` seconds (so bodies are held for a while);
a gateway process (`canary-gateway serve`, one worker, SQLite in a temp
directory) with the default `server.max_body_bytes` (32 MiB) and the
`max_body_bytes_in_flight` budget under test.

Phases, each reporting the gateway's resident memory (VmRSS from
/proc/<pid>/status) after it and the peak so far (VmHWM):

1. idle, after a few small warm-up calls;
2. `--oversized` bodies over the limit (with Content-Length, and chunked):
   every one answered 413, before the body is buffered;
3. `--rounds` rounds of `--concurrency` simultaneous calls, each carrying a
   `--photo-mb` MB base64 image (JSON about 4/3 of that): answers counted by
   status (200, or 503 when the budget is full).

Run once per budget in `--budgets` (MiB; the default 256, and a budget so
large it never refuses, to show what it prevents). Figures are printed, never
asserted. Run from the project root with the project's virtualenv:

    python benchmarks/body_memory.py
    python benchmarks/body_memory.py --concurrency 32 --photo-mb 8 --budgets 256,64,100000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from common import free_port

MB = 1024 * 1024


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def start_upstream(port: int, delay: float) -> web.AppRunner:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        return web.json_response({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a photo"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003},
        })

    app = web.Application(client_max_size=128 * MB)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def write_config(directory: Path, upstream_port: int, budget_mb: int) -> Path:
    config = {
        "database_url": f"sqlite+aiosqlite:///{directory / 'gateway.db'}",
        "user_id_salt": "bench",
        "server": {"max_body_bytes_in_flight": budget_mb * MB, "max_concurrency": 4096},
        "logging": {"level": "warning", "access_log": False},
        "recorder": {"spool_dir": str(directory / "spool")},
        "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                             "timeout_s": 120, "retries": 0}},
        "deployments": {"vision": {"stable": "v1", "versions": {"v1": {"provider": "up", "model": "gpt-4o"}}}},
    }
    path = directory / f"config-{budget_mb}.json"
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError("the gateway exited")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not get ready")


def photo_body(mb: float) -> bytes:
    data = base64.b64encode(os.urandom(int(mb * MB))).decode()
    return json.dumps({"model": "vision", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this photo?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}]}]}).encode()


async def run_budget(args: argparse.Namespace, budget_mb: int, directory: Path, upstream_port: int) -> None:
    port = free_port()
    config = write_config(directory, upstream_port, budget_mb)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, process)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=1024)) as client:
            small = photo_body(0.01)
            for _ in range(5):
                (await client.post("/v1/chat/completions", content=small, headers=headers)).raise_for_status()
            idle = memory_mb(process.pid)

            oversized = photo_body(40)
            statuses: Counter[int] = Counter()
            for index in range(args.oversized):
                if index % 2:
                    answer = await client.post("/v1/chat/completions", content=oversized, headers=headers)
                else:
                    pieces = [oversized[start:start + MB] for start in range(0, len(oversized), MB)]

                    async def chunked(parts: list[bytes] = pieces) -> Any:
                        for part in parts:
                            yield part

                    answer = await client.post("/v1/chat/completions", content=chunked(), headers=headers)
                statuses[answer.status_code] += 1
            after_oversized = memory_mb(process.pid)

            body = photo_body(args.photo_mb)
            served: Counter[int] = Counter()
            started = time.perf_counter()
            for _ in range(args.rounds):
                answers = await asyncio.gather(*(
                    client.post("/v1/chat/completions", content=body, headers=headers)
                    for _ in range(args.concurrency)))
                served.update(answer.status_code for answer in answers)
            elapsed = time.perf_counter() - started
            after_photos = memory_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)

    print(f"\nbudget max_body_bytes_in_flight = {budget_mb} MiB")
    print(f"  idle:                         RSS {idle[0]:7.1f} MiB")
    print(f"  {args.oversized} oversized 40 MiB bodies:  RSS {after_oversized[0]:7.1f} MiB,"
          f" peak {after_oversized[1]:7.1f} MiB; answers {dict(statuses)}")
    print(f"  {args.rounds}×{args.concurrency} calls with {len(body) / MB:.1f} MiB bodies:"
          f" RSS {after_photos[0]:7.1f} MiB, peak {after_photos[1]:7.1f} MiB; answers {dict(served)}; {elapsed:.1f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photo-mb", type=float, default=6.0, help="raw image size; the JSON is about 4/3 of it")
    parser.add_argument("--oversized", type=int, default=20)
    parser.add_argument("--upstream-delay", type=float, default=0.5)
    parser.add_argument("--budgets", default="256,100000", help="MiB, comma-separated")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script works, in seconds: 4 calls of 1 MB, one round, one budget")
    args = parser.parse_args()
    if args.smoke:
        args.concurrency, args.rounds, args.photo_mb, args.oversized, args.budgets = 4, 1, 1.0, 2, "256"
    upstream_port = free_port()
    runner = await start_upstream(upstream_port, args.upstream_delay)
    try:
        with tempfile.TemporaryDirectory() as directory:
            for budget in (int(value) for value in args.budgets.split(",")):
                await run_budget(args, budget, Path(directory), upstream_port)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
