"""``python -m training``: train the fraud model on point-in-time-correct features."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.cli import Parser, run_cli
from core.models import pin_models
from core.settings import get_settings
from core.store import feature_service, open_store
from registry.register import register_trained
from training.evaluate import describe_bands
from training.train import TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = Parser(prog="fraud-train", description=__doc__)
    parser.add_argument(
        "--warmup-days",
        type=int,
        default=defaults.warmup_days,
        help="first days left out: no window or profile history yet"
        f" (default: {defaults.warmup_days})",
    )
    parser.add_argument(
        "--holdout-days",
        type=int,
        default=defaults.holdout_days,
        help=f"last days held out for evaluation (default: {defaults.holdout_days})",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help=f"model seed (default: {defaults.seed})"
    )
    parser.add_argument(
        "--review-fpr",
        type=float,
        default=defaults.review_fpr,
        help="review band: the lowest score that flags at most this share of legitimate holdout"
        f" transactions (default: {defaults.review_fpr})",
    )
    parser.add_argument(
        "--decline-fpr",
        type=float,
        default=defaults.decline_fpr,
        help="decline band: the same at this share; at most --review-fpr"
        f" (default: {defaults.decline_fpr})",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="check the champion (and challenger) against Feast's FeatureService; do not train",
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.verify_only:
        models = pin_models(settings, feature_service(open_store(settings)))
        for role, predictor in (("champion", models.champion), ("challenger", models.challenger)):
            if predictor is not None:
                print(f"{role} {predictor.version} matches {predictor.manifest.feature_service}")
        return 0
    cfg = TrainConfig(
        args.warmup_days, args.holdout_days, args.seed, args.review_fpr, args.decline_fpr
    )
    if settings.model_dir is not None:  # a fixed local artifact: replaced, not registered
        _summary(train(settings, cfg, settings.model_dir))
        print(f"artifact, manifest and report.png in {settings.model_dir}")
        return 0
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".training-", dir=settings.data_dir) as tmp:
        out = Path(tmp) / "model"
        manifest = train(settings, cfg, out)
        _summary(manifest)
        registered = register_trained(settings, out, manifest, asdict(cfg))
    print(f"registered {registered.name} in {registered.uri}")
    if registered.is_champion:
        print(f"{registered.name} is the first version: it is now the champion")
    else:
        print(
            f"the champion is still {registered.champion}; "
            f"promote with `fraud-models promote {registered.version}`"
            f" or shadow it with `fraud-models challenger {registered.version}`"
        )
    return 0


def _summary(manifest: dict[str, Any]) -> None:
    m = manifest["metrics"]
    print(
        f"model {manifest['model_version']}: holdout ROC AUC {m['roc_auc']:.4f}, "
        f"PR AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}, "
        f"ECE {m['expected_calibration_error']:.4f} "
        f"({manifest['rows']['train']} train / {manifest['rows']['holdout']} holdout rows)"
    )
    print(f"decision bands: {describe_bands(manifest['decision'])}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
