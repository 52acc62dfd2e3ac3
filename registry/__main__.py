"""``fraud-models``: the registered model's versions and its ``champion``/``challenger`` aliases.

The state lives in MLflow's Model Registry (MLFLOW_TRACKING_URI, default the SQLite file
under data/), so MLflow's UI and REST API show exactly what this prints. The API and the stream
follow the aliases within MODEL_RELOAD_INTERVAL_S; batch pins them at job start.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from core.cli import Parser, UserError, run_cli
from core.settings import get_settings
from registry.store import (
    CHALLENGER,
    CHAMPION,
    Registry,
    Version,
    mlflow_error,
    version_name,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fraud-models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "list", help="versions, aliases, metrics and lineage", description="Every version."
    )
    promote = commands.add_parser(
        "promote",
        help="make VERSION the champion (the current one is remembered for rollback)",
        description="champion := VERSION; a challenger on VERSION is cleared.",
    )
    promote.add_argument("version", metavar="VERSION", help="a version number, e.g. 3")
    commands.add_parser(
        "rollback",
        help="make the previous champion the champion again",
        description="champion := the champion before the current one.",
    )
    challenger = commands.add_parser(
        "challenger",
        help="shadow-score VERSION beside the champion, or --clear",
        description="challenger := VERSION, or no challenger with --clear.",
    )
    which = challenger.add_mutually_exclusive_group(required=True)
    which.add_argument("version", nargs="?", metavar="VERSION", help="a version number, e.g. 4")
    which.add_argument("--clear", action="store_true", help="remove the challenger alias")
    return parser


def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    registry = Registry(settings)
    if settings.model_dir is not None:  # the aliases would move, and no mode would follow
        print(
            f"note: MODEL_DIR={settings.model_dir} is set: every mode loads it, not these aliases",
            file=sys.stderr,
        )
    try:
        if args.command == "list":
            _print_table(registry)
        else:
            change = {"promote": _promote, "rollback": _rollback, "challenger": _challenger}
            print(change[args.command](registry, args))
    except UserError:
        raise
    except Exception as exc:  # MLflow's errors (unreachable server, ...) as one line
        if mlflow_error(exc) is None:
            raise
        raise UserError(f"{registry.describe()}: {getattr(exc, 'message', exc)}") from None
    return 0


def _promote(registry: Registry, args: argparse.Namespace) -> str:
    version = registry.model_version(args.version).version
    aliases = registry.aliases()
    current = aliases.get(CHAMPION)
    if current == str(version):
        return f"{version_name(registry.name, version)} is already the champion"
    registry.set_champion(str(version))
    note = ""
    if aliases.get(CHALLENGER) == str(version):  # shadowing the champion itself is no test
        registry.clear_alias(CHALLENGER)
        note = "; challenger cleared"
    was = f" (was {current})" if current else ""
    return f"champion := {version_name(registry.name, version)}{was}{note}"


def _rollback(registry: Registry, args: argparse.Namespace) -> str:
    was, now = registry.rollback()
    return f"champion := {version_name(registry.name, now)} (was {was})"


def _challenger(registry: Registry, args: argparse.Namespace) -> str:
    if args.clear:
        current = registry.aliases().get(CHALLENGER)
        if current is None:
            return "no challenger was set"
        registry.clear_alias(CHALLENGER)
        return f"challenger cleared (was {current})"
    version = str(registry.model_version(args.version).version)
    if registry.aliases().get(CHAMPION) == version:
        raise UserError(f"version {version} is the champion; a challenger must be another one")
    registry.set_alias(CHALLENGER, version)
    return f"challenger := {version_name(registry.name, version)}"


COLUMNS = ("VERSION", "ALIASES", "CREATED (UTC)", "ROC AUC", "PR AUC", "TRAINING DATA", "CODE")


def _row(v: Version) -> tuple[str, ...]:
    created = datetime.fromtimestamp(v.created_ms / 1000, timezone.utc)
    start, end = v.tags.get("training_data_start", "?"), v.tags.get("training_data_end", "?")

    def metric(name: str) -> str:
        return f"{v.metrics[name]:.4f}" if name in v.metrics else "-"

    return (
        v.version,
        ",".join(sorted(v.aliases)) or "-",
        f"{created:%Y-%m-%d %H:%M:%S}",
        metric("roc_auc"),
        metric("pr_auc"),
        f"{start[:10]}..{end[:10]} ({v.tags.get('feature_service', '?')})",
        v.tags.get("code_version", "?"),
    )


def _print_table(registry: Registry) -> None:
    versions = registry.versions()
    print(f"{registry.describe()}: {len(versions)} version(s)")
    if not versions:
        print("none yet: train one with `python -m training`")
        return
    rows = [COLUMNS, *map(_row, versions)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"champion history (oldest first): {' '.join(registry.history()) or '-'}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
