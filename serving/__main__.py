"""``python -m serving``: run the API under uvicorn with production settings."""

from __future__ import annotations

import argparse
import os
import tempfile

import uvicorn

from core.cli import Parser, run_cli
from core.settings import get_settings
from serving.protocol import NoDelayHttpToolsProtocol


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = Parser(prog="fraud-serve", description=__doc__)
    parser.add_argument("--host", default=settings.serving_host)
    parser.add_argument("--port", type=int, default=settings.serving_port)
    parser.add_argument(
        "--workers", type=int, default=settings.serving_workers, help="default: one per core"
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    workers = args.workers or os.cpu_count() or 1
    settings = get_settings()
    # Workers share their metric samples through files in a directory of this run's own
    # (see serving.metrics). Never an inherited one: importing feast.metrics sets this
    # variable as a side effect, and a parent's samples would be summed into /metrics
    # (seen in the tests: 401s counted from another process's app).
    metrics_dir = tempfile.mkdtemp(prefix="fraud-metrics-")
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):  # both names read
        os.environ[name] = metrics_dir
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        access_log=False,  # serving.access logs one structured line per request
        limit_concurrency=settings.serving_limit_concurrency,  # see serving.shed
        # uvloop's libuv (>= 1.45, libuv#3696) accepts one connection per loop turn, and a
        # turn under overload takes ~30 ms: at 2x capacity a burst of new connections waited
        # up to 9.5 s in the kernel's accept queue (measured 40 accepts/s, 1,300 queued), and
        # 200s reached p99 9.9 s. asyncio's loop accepts all waiting connections per wakeup:
        # same load, p99 under 0.5 s (verify.faults_online). Not slower here: bench-online,
        # 2 workers: sequential 844 req/s against 629 on uvloop, 64 connections 2,062 vs 1,596.
        loop=settings.serving_loop,
        http=NoDelayHttpToolsProtocol,  # see serving.protocol
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
