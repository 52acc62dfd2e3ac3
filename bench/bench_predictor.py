"""What decisions, reasons and a shadow challenger cost the predictor, per call.

    python -m bench.bench_predictor [--model-dir DIR] [--rounds 15]

Ours: ``Predictor.score`` (scores, decision codes and the top-3 reason arrays), then the
same with the reasons as objects (``Scored.all_reasons``, the dicts the API answers
with), then ``Models.score`` with a challenger (the same artifact twice: the cost of
shadow scoring). Floor: scores only (the feature matrix, ``Linear.contributions`` and
``Linear.proba``: what ``predict`` cost before decisions and reasons). Peer:
scikit-learn's ``predict_proba`` on the same fitted pipeline. For 1 row (an API call) and
100 rows (a batch request or a micro-batch), interleaved; CPU time of this process (the box
is shared), the minimum over rounds and the median. The model: ``--model-dir``, else the
champion (``MODEL_DIR`` or the registry).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.cli import Parser, UserError, run_cli
from core.predictor import Models, Predictor
from core.settings import get_settings
from core.store import feature_service, open_store
from harness.models import champion_dir

NUMBER = 2_000


def cases(predictor: Predictor) -> dict[str, Callable[[], object]]:
    linear = predictor._linear
    if linear is None:
        raise UserError("the model is not the compiled logistic chain; nothing to compare")
    shadowed = Models(predictor, predictor)

    def floor(cols: dict[str, np.ndarray]) -> np.ndarray:
        assert linear is not None
        return linear.proba(linear.contributions(predictor.matrix(cols)))

    def with_objects(cols: dict[str, np.ndarray]) -> object:
        return predictor.score(cols).all_reasons()

    out: dict[str, Callable[[], object]] = {}
    for rows in (1, 100):
        x = np.random.default_rng(0).lognormal(1, 2, size=(rows, len(predictor.features)))
        cols = {name: x[:, i] for i, name in enumerate(predictor.features)}
        out[f"floor: scores only ({rows})"] = functools.partial(floor, cols)
        out[f"ours: score ({rows})"] = functools.partial(predictor.score, cols)
        out[f"ours: + reason objects ({rows})"] = functools.partial(with_objects, cols)
        out[f"ours: + challenger ({rows})"] = functools.partial(shadowed.score, cols)
        out[f"peer: scikit-learn ({rows})"] = functools.partial(predictor.pipeline.predict_proba, x)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench.bench_predictor", description=__doc__)
    parser.add_argument("--model-dir", type=Path, help="an artifact dir (default: the champion)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    return parser


def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    model_dir = args.model_dir or champion_dir(settings)
    predictor = Predictor.load(model_dir, feature_service(open_store(settings)))
    runs = cases(predictor)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            cpu = timeit.timeit(fn, timer=time.process_time, number=NUMBER)
            times[name].append(cpu / NUMBER * 1e6)
    print(f"model {predictor.version} ({len(predictor.features)} features)")
    print(f"{'µs per call (rows)':<34} {'min':>8} {'median':>8}")
    for name, values in times.items():
        print(f"{name:<34} {min(values):8.1f} {statistics.median(values):8.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
