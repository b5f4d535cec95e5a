"""The command line: `canary-gateway serve | migrate | status | compare | set-percent | ...`.

`serve` and `migrate` work on the config file; the other commands talk to a
running gateway's admin API (`--url`, `--token`). Errors a user can fix (a
bad config, an unreachable gateway, a refused token, a conflict) print one
line on stderr and exit non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError, MigrationsNotFound
from gateway.logs import configure_logging

log = logging.getLogger("gateway.cli")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except ConfigError as exc:
        print(f"canary-gateway: config error: {exc}", file=sys.stderr)
        return 2
    except MigrationsNotFound as exc:
        print(f"canary-gateway: {exc}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"canary-gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canary-gateway", description="Canary rollouts for LLM prompts.")
    parser.add_argument("--version", action="version", version=f"canary-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _config_option(serve)
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    serve.add_argument("--no-migrate", action="store_true",
                       help="never apply pending migrations (at start or later): database.migrate false")
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo", help="see a good canary promoted and a bad one rolled back, in about a minute, offline",
        description="Runs the gateway on SQLite in a temporary directory with a simulated provider and judge, "
                    "drives synthetic users through two rollouts and shows the decisions as they happen.",
    )
    demo.add_argument("--keep", action="store_true", help="leave the gateway running afterwards (Ctrl-C stops it)")
    demo.add_argument("--fast", action="store_true", help="shorter intervals and latencies (for tests)")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    demo.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    demo.set_defaults(handler=_demo)

    reference = commands.add_parser(
        "reference", help="print the configuration or admin API reference (Markdown) generated from the code")
    reference.add_argument("what", choices=("config", "admin-api"))
    reference.set_defaults(handler=_reference)

    migrate = commands.add_parser("migrate", help="apply pending database migrations and exit")
    _config_option(migrate)
    migrate.set_defaults(handler=_migrate)

    status = _admin_command(commands, "status", "show deployments and their rollout state", _status)
    status.add_argument("deployment", nargs="?", help="one deployment, with its versions")

    compare = _admin_command(commands, "compare", "canary vs stable over a window", _compare)
    compare.add_argument("deployment")
    compare.add_argument("--hours", type=float, default=24.0, help="window length (default 24)")

    percent = _admin_command(commands, "set-percent", "set the canary percentage (0-100)", _set_percent)
    percent.add_argument("deployment")
    percent.add_argument("percent", type=float)
    percent.add_argument("--reason")

    for name, help_text in (
        ("promote", "make the canary the stable version now"),
        ("rollback", "send every user back to stable now"),
        ("pause", "stop automatic decisions for this rollout"),
        ("resume", "restart automatic decisions for this rollout"),
    ):
        command = _admin_command(commands, name, help_text, _action)
        command.add_argument("deployment")
        command.add_argument("--reason")
        command.set_defaults(action=name)
    return parser


def _admin_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text)
    command.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
                         help="the gateway (default: $GATEWAY_URL, else http://127.0.0.1:8080)")
    command.add_argument("--token", default=os.environ.get("GATEWAY_ADMIN_TOKEN"),
                         help="admin token (default: $GATEWAY_ADMIN_TOKEN)")
    command.set_defaults(handler=handler)
    return command


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="YAML config file (default: $GATEWAY_CONFIG, else ./config.yaml, else built-in defaults)",
    )


def _config_path(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("GATEWAY_CONFIG"):
        return os.environ["GATEWAY_CONFIG"]
    return "config.yaml" if Path("config.yaml").is_file() else None


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import DemoError, Options, run

    try:
        return run(Options(fast=args.fast, keep=args.keep, port=args.port, plain=True if args.plain else None))
    except DemoError as exc:
        print(f"canary-gateway: demo: {exc}", file=sys.stderr)
        return 1


def _reference(args: argparse.Namespace) -> int:
    from gateway import reference

    if args.what == "config":
        sys.stdout.write(reference.config_reference())
        return 0
    from prometheus_client import CollectorRegistry

    from gateway.app import create_app

    app = create_app(Settings(), registry=CollectorRegistry())
    sys.stdout.write(reference.admin_api_reference(app.openapi()))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(_config_path(args.config))
    configure_logging(settings.logging.level)
    if not _apply_migrations(settings):
        print("canary-gateway: cannot reach the database to migrate it", file=sys.stderr)
        return 2
    print("database schema is up to date")
    return 0


def _apply_migrations(settings: Settings, *, apart: bool = False) -> bool:
    """Bring the schema to the head revision; False (logged) when the database cannot be reached.

    `apart` (for `serve`): when the schema is behind, the migration runs in a
    forked child, so Alembic and what it imports (11 MB of RSS measured after
    migrating a new SQLite database) never load into the server, which keeps
    its modules for life. At the head (the usual restart) it is one query
    either way. Raises MigrationsNotFound for a broken installation.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError

    from gateway.migrate import current_revision, head_revision, upgrade

    url, pooler = settings.database_url, settings.database.pooler
    try:
        if not apart or not hasattr(os, "fork"):
            upgrade(url, pooler=pooler)
            return True
        head = head_revision()
        if asyncio.run(current_revision(url, pooler=pooler)) == head:
            return True
        failure = _upgrade_in_child(settings)
    except (OperationalError, DBAPIError, OSError) as exc:
        failure = type(exc).__name__
    if failure:
        log.warning("database unavailable, migrations not applied (%s)", failure)
        return False
    return True


def _upgrade_in_child(settings: Settings) -> str:
    """`upgrade` in a forked child: "" when it is done, else the name of the error that stopped it.

    The child logs through a handler of its own on a duplicate of stderr (the
    parent's writer thread does not exist in it); an error other than an
    unreachable database is printed with its traceback and raised here as
    RuntimeError.
    """
    from sqlalchemy.exc import DBAPIError

    from gateway.migrate import upgrade

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: migrate, say how it went, leave without running the parent's exit code
        os.close(read)
        code, said = 0, ""
        handler = configure_logging(settings.logging.level, stream=os.fdopen(os.dup(2), "w"))
        try:
            upgrade(settings.database_url, pooler=settings.database.pooler)
        except (DBAPIError, OSError) as exc:
            code, said = 3, type(exc).__name__
        except BaseException:  # reported to the parent, which raises
            log.exception("the migration failed")
            code, said = 1, "failed"
        finally:
            handler.stop()
            os.write(write, said.encode())
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read().decode()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code not in (0, 3):
        raise RuntimeError(f"the database migration failed in its process (exit status {code}); see the log above")
    return said if code else ""


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from fastapi import FastAPI

    from gateway.app import create_app, sync_declared_at_start
    from gateway.drain import hard_deadline

    path = _config_path(args.config)
    settings = load_settings(path)
    listener = configure_logging(settings.logging.level)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; turning it
    # into SystemExit lets the `finally` below flush the last log lines.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    metrics_dir = None
    try:
        if args.no_migrate:
            # The workers of --workers N read the file again: the environment carries the choice.
            os.environ["GATEWAY_MIGRATE"] = "false"
            settings = settings.model_copy(
                update={"database": settings.database.model_copy(update={"migrate": False})}
            )
        if settings.database.migrate and _apply_migrations(settings, apart=True):
            asyncio.run(sync_declared_at_start(settings))
        host = args.host or settings.server.host
        port = args.port or settings.server.port
        workers = args.workers or settings.server.workers
        target: str | FastAPI
        if workers > 1:
            # Each worker process builds its own app from the same file, and
            # shares its metrics through prometheus-client's multiprocess mode.
            if path:
                os.environ["GATEWAY_CONFIG"] = str(Path(path).resolve())
            # Each worker takes its share of per-process budgets (the shadow stage's).
            os.environ["GATEWAY_WORKERS"] = str(workers)
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                metrics_dir = tempfile.mkdtemp(prefix="canary-gateway-metrics-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            target = "gateway.app:app_from_environment"
        else:
            target = create_app(settings)
        uvicorn.run(
            target,
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            # The hard deadline; the drain itself ends calls after the exact grace (gateway.drain).
            timeout_graceful_shutdown=hard_deadline(settings.server.shutdown_grace),
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        listener.stop()
    return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class AdminError(Exception):
    """A failed admin call, worded for the person at the terminal."""


def _admin(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    url = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        answer = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)
    except httpx.ConnectError:
        raise AdminError(f"cannot connect to {url}: is the gateway running?") from None
    except httpx.TimeoutException:
        raise AdminError(f"{url} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise AdminError(f"cannot talk to {url} ({type(exc).__name__})") from None
    if answer.status_code == 401:
        raise AdminError("the admin token was refused (401): pass --token or set GATEWAY_ADMIN_TOKEN")
    if answer.status_code >= 400:
        try:
            message = answer.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.reason_phrase
        raise AdminError(f"{message} ({answer.status_code})")
    return answer.json()


def _status(args: argparse.Namespace) -> int:
    if args.deployment:
        deployments = [_admin(args, "GET", f"/admin/deployments/{args.deployment}")]
    else:
        deployments = _admin(args, "GET", "/admin/deployments")["deployments"]
    rows = [["Deployment", "Stable", "Canary", "Percent", "Stage", "Status", "Mode", "Paused", "Revision"]]
    for d in deployments:
        rows.append([d["name"], d["stable"], d["canary"] or "-", f"{d['canary_percent']:.2f}", str(d["stage"]),
                     d["status"], d.get("mode") or "-", "yes" if d["paused"] else "no", str(d["revision"])])
    print(_table(rows))
    if args.deployment:
        print()
        versions = [["Version", "Provider", "Model", "Prompt mode"]]
        versions += [[v["name"], v["provider"], v["model"], v["prompt_mode"]] for v in deployments[0]["versions"]]
        print(_table(versions))
    return 0


def _compare(args: argparse.Namespace) -> int:
    result = _admin(args, "GET", f"/admin/deployments/{args.deployment}/compare?hours={args.hours:g}")
    decision = _admin(args, "GET", f"/admin/deployments/{args.deployment}/decision")
    report = decision.get("report") if decision.get("decision") == "report" else None
    result["stage"] = decision if decision.get("decision") and report is None else None
    print("\n".join(compare_table(result, f"last {args.hours:g} h")))
    if report is not None:
        print()
        print("\n".join(ab_table(report)))
    return 0


def ab_table(report: dict[str, Any]) -> list[str]:
    """An A/B test's report as plain lines, from the `report` of `GET .../ab` (or `GET .../decision`):
    per metric each version's value, the difference with its anytime-valid interval, whether it is
    significant and the traffic an undecided one still needs; then the sample ratio check."""
    stable, candidate = report["stable"], report["candidate"]
    lines = [f"A/B test: {stable} (stable) vs {candidate} at {report['split']:g} % of users, "
             f"{_duration(report['elapsed_s'])} so far; intervals at alpha {report['alpha']:g}, valid at any look",
             f"{'Metric':<20}{stable:>11}{candidate:>11}{'Difference':>13}{'Interval':>26}  {'Significant':<12}Needs",
             "-" * 100]
    for metric in report["metrics"]:
        interval = "-" if metric["lower"] is None else f"[{metric['lower']:+.4g}, {metric['upper']:+.4g}]"
        difference = "-" if metric["difference"] is None else f"{metric['difference']:+.4g}"
        if metric["significant"] or metric["needs_calls"] is None:
            needs = "-"
        else:
            needs = f"~{metric['needs_calls']:,} more calls"
            if metric["needs_seconds"] is not None:
                needs += f" (~{_duration(metric['needs_seconds'])})"
        lines.append(f"{metric['metric'][:19]:<20}{_cell(metric['stable'], '{:.4g}'):>11}"
                     f"{_cell(metric['candidate'], '{:.4g}'):>11}{difference:>13}{interval:>26}  "
                     f"{'yes' if metric['significant'] else 'no':<12}{needs}")
    srm = report["srm"]
    if srm is not None:
        lines.append(f"Sample ratio: {candidate} has {srm['observed_candidate_share']:.2%} of users, expected "
                     f"{srm['expected_candidate_share']:.2%} (p = {srm['p_value']:.3g}): "
                     + ("MISMATCH, do not conclude" if srm["mismatch"] else "no mismatch"))
    lines.append(f"Summary: {report['summary']}")
    return lines


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def compare_table(result: dict[str, Any], period: str) -> list[str]:
    """The seed's compare table (SPEC 7) as plain lines, from a `GET .../compare` answer; with a
    `stage` (a `GET .../decision` answer), the stage's intervals per metric after it."""
    stable, canary, diff = result["stable"], result["canary"] or {}, result["diff_pct"]
    lines = [f"{result['deployment']}: {stable['version']} (stable) vs {canary.get('version', 'no canary')}, {period}",
             f"{'Metric':<20}{'Stable':>11}{'Canary':>11}{'Diff':>11}",
             "-" * 51,
             f"{'requests':<20}{stable['requests']:>11}{_cell(canary.get('requests'), '{:d}'):>11}{'':>11}"]
    for key, label in (("avg_quality", "avg_quality"), ("p95_latency_ms", "p95_latency"),
                       ("avg_cost", "avg_cost"), ("error_rate", "error_rate")):
        change = diff.get(key)
        lines.append(f"{label:<20}{_cell(stable[key]):>11}{_cell(canary.get(key)):>11}"
                     f"{'-' if change is None else f'{change:+.1f}%':>11}")
    stage = result.get("stage")
    if stage:
        lines.append("")
        lines.append("This stage, canary / stable with anytime-valid bounds:")
        lines.append(f"{'Metric':<22}{'Role':<10}{'Ratio':>8}{'Interval':>20}{'Threshold':>11}  Verdict")
        for test in stage["metrics"]:
            interval = "-" if test["lower"] is None else f"[{test['lower']:.3g}, {test['upper']:.3g}]"
            estimate = "-" if test["estimate"] is None else f"{test['estimate']:.3g}"
            lines.append(f"{test['metric']:<22}{test['role']:<10}{estimate:>8}{interval:>20}"
                         f"{test['threshold']:>11g}  {test['verdict']}")
        lines.append(f"Decision now: {stage['summary']}")
    return lines


def _set_percent(args: argparse.Namespace) -> int:
    deployment = _admin(args, "PUT", f"/admin/deployments/{args.deployment}/canary-percent",
                        {"percent": args.percent, "reason": args.reason})
    print(f"{deployment['name']}: canary {deployment['canary']} at {deployment['canary_percent']:.2f} %")
    return 0


def _action(args: argparse.Namespace) -> int:
    deployment = _admin(args, "POST", f"/admin/deployments/{args.deployment}/{args.action}",
                        {"reason": args.reason})
    print(f"{deployment['name']}: stable {deployment['stable']}, canary {deployment['canary'] or '-'} "
          f"at {deployment['canary_percent']:.2f} %, status {deployment['status']}"
          + (", paused" if deployment["paused"] else ""))
    return 0


def _cell(value: Any, spec: str = "{:.3f}") -> str:
    return "-" if value is None else spec.format(value)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
