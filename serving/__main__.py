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
    parser.add_argument(
        "--host", default=settings.serving_host, help="address to bind (default: SERVING_HOST)"
    )
    parser.add_argument(
        "--port", type=int, default=settings.serving_port, help="port (default: SERVING_PORT)"
    )
    parser.add_argument(
        "--workers", type=int, default=settings.serving_workers, help="default: one per core"
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    workers = args.workers or os.cpu_count() or 1
    settings = get_settings()
    # Workers share their metric samples through files in a directory of this run's own
    # (see serving.metrics). Never an inherited one: importing feast.metrics sets this
    # variable as a side effect, and a parent's samples would be summed into /metrics.
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
        # asyncio's loop accepts every waiting connection per wakeup, uvloop one per loop turn:
        # under overload uvloop left connections queued for seconds (libuv#3696;
        # docs/performance.md, "Serving: event loop").
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
