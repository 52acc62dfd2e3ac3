"""``make fuzz``: every bad-input proof in one table.

- stream: a seeded malformed-event corpus through the real broker and the dataflow
  (``verify.fuzz_stream``);
- batch: each file the batch job reads, broken one way at a time (``verify.fuzz_batch``);
- api: schemathesis against the live OpenAPI document, fixed seed (``verify.fuzz_api``).

Uses the project's data, registry and model (``make data apply train``); the stream's
online writes go to a Redis database of this command's own (--redis-db).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

from core.cli import Parser, run_cli
from core.redis_url import with_db
from core.settings import Settings
from harness.report import Check, table, write_json
from verify import fuzz_api, fuzz_batch, fuzz_stream


def suite(name: str, run: Callable[[], list[Check]]) -> tuple[list[Check], float]:
    began = time.monotonic()
    checks = [replace(c, case=f"{name}: {c.case}") for c in run()]
    return checks, round(time.monotonic() - began, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m verify.fuzz", description=__doc__)
    parser.add_argument("--stream-budget", type=int, default=3000, help="good events per run")
    parser.add_argument("--batch-budget", type=int, default=len(fuzz_batch.CASES), help="cases")
    parser.add_argument(
        "--api-examples",
        type=int,
        default=fuzz_api.build_parser().get_default("examples"),
        help="per API operation and generation mode",
    )
    parser.add_argument("--seed", type=int, default=6, help="the event corpus's")
    parser.add_argument("--redis-db", type=int, default=7, help="the stream's online store")
    return parser


def _main(args: argparse.Namespace) -> int:
    base = Settings()
    redis = with_db(base.redis_connection_string, args.redis_db)
    stream_settings = base.model_copy(update={"redis_connection_string": redis})
    stream, stream_s = suite(
        "stream",
        lambda: fuzz_stream.run(stream_settings, args.stream_budget, args.seed, True),
    )
    batch, batch_s = suite("batch", lambda: fuzz_batch.run(base, args.batch_budget, rows=2000))
    details: list[str] = []
    api, api_s = suite("api", lambda: fuzz_api.run(base, args.api_examples, details))
    checks = stream + batch + api
    print(table(checks))
    for text in details:  # the API's failing requests, each with a curl line
        print(f"\n{text}")
    extra: dict[str, object] = {
        "stream_budget": args.stream_budget,
        "batch_cases": len(batch),
        "api_examples": args.api_examples,
        "api_seed": fuzz_api.SEED,
        "seed": args.seed,
        "seconds": {"stream": stream_s, "batch": batch_s, "api": api_s},
        "api_failures": details,
    }
    print(f"wrote {write_json('fuzz', checks, extra)}")
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
