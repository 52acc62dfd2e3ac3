"""What the evolvable event contract costs the stream's parse step, per event.

    python -m bench.bench_parse [--rounds 15]

Ours: ``streaming.records.parse`` under the default ``STREAM_EXTRA_FIELDS=ignore`` (strict
model first; an event with unknown fields is validated again by the lenient model). Peer: the
same under ``dead_letter``, the strict contract the stream had before (an unknown field makes
a dead letter). Floor: ``json.loads``. Each for an event without and with one unknown
field, interleaved; CPU time of this process (the box is shared), the minimum over rounds
and the median.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import timeit
from collections.abc import Callable

from core.cli import Parser, run_cli
from harness.kafka import SAMPLE_EVENT
from streaming.records import Raw, parse

EVENT = SAMPLE_EVENT
NUMBER = 20_000


def cases() -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {}
    for label, body in (("plain", EVENT), ("unknown field", EVENT | {"merchant_category": "5"})):
        raw = Raw(b"1", json.dumps(body).encode(), 1.8e12)
        out[f"ours ({label})"] = functools.partial(parse, raw)
        out[f"strict ({label})"] = functools.partial(parse, raw, "dead_letter")
        out[f"json.loads ({label})"] = functools.partial(json.loads, raw.value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench.bench_parse", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    return parser


def _main(args: argparse.Namespace) -> int:
    runs = cases()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            cpu = timeit.timeit(fn, timer=time.process_time, number=NUMBER)
            times[name].append(cpu / NUMBER * 1e6)
    print(f"{'µs per event':<28} {'min':>7} {'median':>7}")
    for name, values in times.items():
        print(f"{name:<28} {min(values):7.2f} {statistics.median(values):7.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
