"""``python -m training``: train the fraud model on point-in-time-correct features."""

from __future__ import annotations

import argparse

from core.cli import run_cli
from core.settings import get_settings
from training.train import TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="fraud-train", description=__doc__)
    parser.add_argument("--warmup-days", type=int, default=defaults.warmup_days)
    parser.add_argument("--holdout-days", type=int, default=defaults.holdout_days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    manifest = train(settings, TrainConfig(args.warmup_days, args.holdout_days, args.seed))
    m = manifest["metrics"]
    print(
        f"model {manifest['model_version']}: holdout ROC AUC {m['roc_auc']:.4f}, "
        f"PR AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}, "
        f"ECE {m['expected_calibration_error']:.4f} "
        f"({manifest['rows']['train']} train / {manifest['rows']['holdout']} holdout rows)"
    )
    print(f"artifact, manifest and report.png in {settings.model_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
