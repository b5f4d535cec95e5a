"""What the benchmark scripts share: free ports, the gateway process, percentiles, tables.

Each benchmark is a script run by hand (`python benchmarks/NAME.py`), prints
its figures and asserts nothing; `--smoke` runs it at a size that takes
seconds, which CI does for every script (`scripts/smoke-benchmarks`) so that
they keep working. Standard library and SQLAlchemy only, so that the load
generators stay as light as the scripts need.
"""

from __future__ import annotations

import http.client
import math
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_command(override: str | None = None) -> list[str]:
    """The command that starts the gateway: `override` (split like a shell), else the installed `canary-gateway`.

    Raises SystemExit when the gateway is not installed beside this Python.
    """
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).with_name("canary-gateway")
    found = str(beside) if beside.exists() else shutil.which("canary-gateway")
    if found is None:
        raise SystemExit("canary-gateway is not installed in this environment (pip install -e .)")
    return [found]


def gateway_environment() -> dict[str, str]:
    """This process's environment without GATEWAY_* variables, which would override the config file."""
    return {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:PORT/PATH: (status, body). Raises OSError when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def autocommit(url: str, *statements: str) -> None:
    """Run `statements` outside a transaction (CREATE / DROP DATABASE, VACUUM) on `url`."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """The `fraction` percentile by nearest rank (the smallest value with at least that share at or below it).

    `values` need not be sorted; NaN when there are none.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> None:
    """Columns padded to their widest cell; `align` has one letter per column, `l` left, anything else right."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    align = align or "l" * len(headers)

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if a == "l" else str(cell).rjust(width)
            for cell, width, a in zip(row, widths, align, strict=True)
        ).rstrip()

    print(fmt(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(fmt(row))
