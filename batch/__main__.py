"""``python -m batch``: offline jobs over the Feast offline store's sources."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timedelta, timezone

from batch import daily, output, skew
from batch.aggregates import backfill_windows
from batch.backfill import run_backfill
from batch.score import ScoreOptions, output_root, run_score
from core.cli import Parser, UserError, run_cli
from core.settings import Settings, get_settings


def parse_date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}, expected YYYY-MM-DD") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def yesterday() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("duckdb", "feast", "spark"),
        help="point-in-time join: our DuckDB ASOF join, Feast's get_historical_features, or"
        " the whole job on Spark (default: BATCH_ENGINE, else duckdb for parquet sources)",
    )
    parser.add_argument("--publish", action="store_true", help="write latest scores online")
    parser.add_argument("--chunk-rows", type=positive_int, help="rows per chunk (default 250000)")
    parser.add_argument("--workers", type=positive_int, help="chunks in parallel (default: cores)")
    parser.add_argument("--output", help="scores root, path or s3:// (default: <data>/scores)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fraud-batch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser(
        "aggregates",
        help="backfill the window aggregates (the PushSource's batch source) from transactions",
    )
    score = sub.add_parser("score", help="score one day into scores/date=YYYY-MM-DD/")
    score.add_argument("--date", type=parse_date, help="YYYY-MM-DD, UTC (default: yesterday)")
    score.add_argument(
        "--entities", help="parquet/csv entity file (path or s3://) instead of the day's rows"
    )
    score.add_argument("--limit", type=positive_int, help="score only the day's first N rows")
    score.add_argument(
        "--dry-run", action="store_true", help="retrieve and score, but write and publish nothing"
    )
    _job_options(score)
    backfill = sub.add_parser("backfill", help="score a date range, resuming after a failure")
    backfill.add_argument("--start", type=parse_date, required=True, help="first date, YYYY-MM-DD")
    backfill.add_argument("--end", type=parse_date, required=True, help="last date, inclusive")
    _job_options(backfill)
    skew.add_parser(sub)
    daily.add_parser(sub, parse_date)
    return parser


def _options(args: argparse.Namespace, settings: Settings, day: date) -> ScoreOptions:
    return ScoreOptions(
        day=day,
        entities=getattr(args, "entities", None),
        engine=args.engine or settings.batch_engine,
        publish=args.publish,
        limit=getattr(args, "limit", None),
        dry_run=getattr(args, "dry_run", False),
        chunk_rows=args.chunk_rows or settings.batch_chunk_rows,
        workers=args.workers or settings.batch_workers,
    )


def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.command == "skew":
        return skew.main(args, settings)
    if args.command == "daily":
        return daily.main(args, settings)
    data = settings.data_dir
    if args.command == "aggregates":
        rows = backfill_windows(data / "transactions.parquet", data / "user_txn_windows.parquet")
        print(f"wrote {rows} window-aggregate rows to {data / 'user_txn_windows.parquet'}")
        return 0
    if args.output is not None:
        settings = settings.model_copy(update={"batch_output_dir": args.output})
    root = output_root(settings)
    if args.command == "score":
        manifest = run_score(settings, _options(args, settings, args.date or yesterday()))
        if manifest["dry_run"]:
            print(json.dumps(manifest, indent=2, default=str))
        print(_summary(manifest, root))
        return 0
    if args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    opts = _options(args, settings, args.start)
    for day, done in run_backfill(settings, args.start, args.end, opts):
        print(f"{day}: skipped, already complete" if done is None else _summary(done, root))
    return 0


def _summary(manifest: dict[str, object], root: str) -> str:
    where = (
        "dry run, nothing written"
        if manifest["dry_run"]
        else output.partition(root, date.fromisoformat(str(manifest["date"])))
    )
    if manifest["empty"]:
        return f"{manifest['date']}: no transactions; empty manifest written ({where})"
    text = (
        f"{manifest['date']}: scored {manifest['rows_out']} rows in {manifest['duration_s']}s"
        f" ({manifest['rows_per_s']} rows/s), {manifest['rows_missing_features']} with missing"
        f" features, model {manifest['model_version']} -> {where}"
    )
    if "published_users" in manifest:
        text += f"; published {manifest['published_users']} users"
    return text


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
