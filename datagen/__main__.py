"""``python -m datagen``: generate the synthetic data set into the data directory."""

from __future__ import annotations

import argparse
from dataclasses import fields
from datetime import datetime, timezone

from core.cli import Parser, run_cli
from core.settings import get_settings
from datagen.generate import GeneratorConfig, generate


def _date(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    defaults = GeneratorConfig()
    parser = Parser(prog="fraud-datagen", description=__doc__)
    for f in fields(GeneratorConfig):
        if f.name == "start":
            parser.add_argument(
                "--start", type=_date, help="first day, YYYY-MM-DD (default: DAYS days ago)"
            )
            continue
        default = getattr(defaults, f.name)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(default),
            default=default,
            help=f"default: {default}",
        )
    return parser


def _main(args: argparse.Namespace) -> int:
    cfg = GeneratorConfig(**{f.name: getattr(args, f.name) for f in fields(GeneratorConfig)})
    files = generate(cfg, get_settings().data_dir)
    print(f"wrote {files.transactions}, {files.user_profile}, {files.merchant_profile}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
