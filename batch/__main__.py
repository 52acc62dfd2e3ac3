"""``python -m batch``: offline jobs over the Feast offline store's sources."""

from __future__ import annotations

import argparse

from batch.aggregates import backfill_windows
from core.cli import Parser, run_cli
from core.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fraud-batch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser(
        "aggregates",
        help="backfill the window aggregates (the PushSource's batch source) from transactions",
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    data = get_settings().data_dir
    if args.command == "aggregates":
        rows = backfill_windows(data / "transactions.parquet", data / "user_txn_windows.parquet")
        print(f"wrote {rows} window-aggregate rows to {data / 'user_txn_windows.parquet'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
