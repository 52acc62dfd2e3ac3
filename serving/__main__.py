"""``python -m serving``: run the API under uvicorn with production settings."""

from __future__ import annotations

import argparse
import os
import tempfile

import uvicorn

from core.cli import Parser, run_cli
from core.settings import get_settings


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
    # Workers share their metric samples through files here (see serving.metrics).
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fraud-metrics-"))
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        access_log=False,  # serving.access logs one structured line per request
        limit_concurrency=get_settings().serving_limit_concurrency,  # see serving.shed
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
