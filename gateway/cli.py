"""The command line: `canary-gateway serve | migrate`.

Errors a user can fix (a bad config, an unreachable database for `migrate`)
print one line on stderr and exit with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError
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
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canary-gateway", description="Canary rollouts for LLM prompts.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _config_option(serve)
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="apply pending database migrations and exit")
    _config_option(migrate)
    migrate.set_defaults(handler=_migrate)
    return parser


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


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(_config_path(args.config))
    configure_logging(settings.logging.level)
    if not _apply_migrations(settings):
        print("canary-gateway: cannot reach the database to migrate it", file=sys.stderr)
        return 2
    print("database schema is up to date")
    return 0


def _apply_migrations(settings: Settings) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    from gateway.migrate import upgrade

    try:
        upgrade(settings.database_url)
    except (OperationalError, DBAPIError, OSError) as exc:
        log.warning("database unavailable, migrations not applied (%s)", type(exc).__name__)
        return False
    return True


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from fastapi import FastAPI

    from gateway.app import create_app, sync_declared

    path = _config_path(args.config)
    settings = load_settings(path)
    listener = configure_logging(settings.logging.level)
    try:
        if not args.no_migrate and _apply_migrations(settings):
            asyncio.run(sync_declared(settings))
        host = args.host or settings.server.host
        port = args.port or settings.server.port
        workers = args.workers or settings.server.workers
        target: str | FastAPI
        if workers > 1:
            # Each worker process builds its own app from the same file.
            if path:
                os.environ["GATEWAY_CONFIG"] = str(Path(path).resolve())
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
            timeout_graceful_shutdown=int(settings.server.shutdown_grace),
        )
    finally:
        listener.stop()
    return 0
