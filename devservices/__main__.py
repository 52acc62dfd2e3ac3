"""``fraud-services up|down|status|check [--only redis|kafka]``: one line per service."""

from __future__ import annotations

import argparse
import sys
import time

from core.cli import Parser, run_cli
from core.redis_url import parse
from core.settings import Settings, get_settings

from . import (
    SERVICES,
    ServiceError,
    ensure_kafka,
    ensure_online_store,
    kafka_is_up,
    kafka_status,
    online_store_is_up,
    online_store_status,
    stop_kafka,
    stop_online_store,
)
from .promtool import ensure_promtool
from .s3proxy import endpoint_url, ensure_s3proxy, s3proxy_is_up, s3proxy_status, stop_s3proxy


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fraud-services",
        description="Start, stop or inspect the local Redis and Kafka the project uses. "
        "Servers that already answer are reused; `down` stops only what `up` started.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "check"],
        help="check: fail unless the configured servers answer (starts nothing)",
    )
    parser.add_argument("--only", choices=SERVICES, help="act on one service only")
    return parser


def _run(command: str, names: list[str]) -> None:
    settings = get_settings()
    for name in names:
        if name == "s3proxy":
            _run_s3proxy(command, settings)
            continue
        if command == "up":
            began = time.monotonic()
            handle = ensure_online_store(settings) if name == "redis" else ensure_kafka(settings)
            print(f"{handle.describe()} ({time.monotonic() - began:.1f} s)", flush=True)
        elif command == "down":
            pid = stop_online_store(settings) if name == "redis" else stop_kafka(settings)
            print(f"{name}: stopped (pid {pid})" if pid else f"{name}: nothing of ours running")
        elif command == "check":
            up = online_store_is_up(settings) if name == "redis" else kafka_is_up(settings)
            where = (
                parse(settings.redis_connection_string).address
                if name == "redis"
                else settings.kafka_bootstrap_servers
            )
            if not up:
                raise ServiceError(
                    f"{name} is not reachable at {where}; run `make services-up` or fix "
                    f"{'REDIS_CONNECTION_STRING' if name == 'redis' else 'KAFKA_BOOTSTRAP_SERVERS'}"
                )
            print(f"{name}: reachable at {where}")
        else:
            print(online_store_status(settings) if name == "redis" else kafka_status(settings))


def _run_s3proxy(command: str, settings: Settings) -> None:
    if command == "up":
        began = time.monotonic()
        handle = ensure_s3proxy(settings)
        print(f"{handle.describe()} ({time.monotonic() - began:.1f} s)", flush=True)
    elif command == "down":
        pid = stop_s3proxy(settings)
        print(f"s3proxy: stopped (pid {pid})" if pid else "s3proxy: nothing of ours running")
    elif command == "check":
        if not s3proxy_is_up(settings):
            raise ServiceError(
                f"s3proxy is not reachable at {endpoint_url(settings)}; run `make services-up`"
                " or fix S3PROXY_ADDRESS"
            )
        print(f"s3proxy: reachable at {endpoint_url(settings)}")
    else:
        print(s3proxy_status(settings))


def _handle(args: argparse.Namespace) -> int:
    names = [args.only] if args.only else list(SERVICES)
    if args.command == "down":
        names.reverse()  # Kafka first, mirroring `up`
    _run(args.command, names)
    if args.command == "up" and not args.only:
        _promtool()
    return 0


def _promtool() -> None:
    """promtool for the alert-rule tests, fetched with the services (not needed to run them)."""
    try:
        print(f"promtool: {ensure_promtool(get_settings())}")
    except ServiceError as exc:
        print(f"promtool: not available ({exc}); tests/integration/test_observability.py needs it")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a ``ServiceError`` is one ``error:`` line and exit code 2."""
    return run_cli(_parser(), _handle, argv)


if __name__ == "__main__":
    sys.exit(main())
