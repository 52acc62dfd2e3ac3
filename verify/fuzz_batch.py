"""``python -m verify.fuzz_batch``: every file the batch job reads, broken one way at a time.

The job reads the day's transactions (parquet), or an entity file given with
``--entities`` (parquet or CSV), and the parquet sources of the FeatureService's views
(user_profile, merchant_profile, user_txn_windows). Each case breaks one of them (a
missing column, a wrong type, a repeated key, a null, an unreadable file) in a private
workspace that already holds a scored partition for the day. Promised: exit code 2 with
one ``fraud-batch: error: ...`` line naming the problem, no traceback, and the existing
partition byte-identical (no staging directory left either).

The cases run through ``batch.__main__.main`` in one child process with the
workspace's environment (the exit code ``python -m batch`` would return), so the
interpreter and Feast start once rather than once per case.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from core.cli import Parser, run_cli
from core.settings import PROJECT_ROOT, Settings
from core.store import copy_feature_repo
from harness.models import champion_dir_or_exit
from harness.report import Check, table, write_json

Mutate = Callable[[pd.DataFrame, date], pd.DataFrame]  # (file, the scored day)
SOURCES = ("user_profile", "merchant_profile", "user_txn_windows")


@dataclass(frozen=True)
class BadInput:
    name: str
    target: str  # "transactions", "entities.parquet", "entities.csv" or a view's source
    mutate: Mutate | None  # None: the file is not a table at all
    needle: str  # must appear in the error line


def _dup(frame: pd.DataFrame, _day: date) -> pd.DataFrame:
    return pd.concat([frame, frame.head(3)], ignore_index=True)


def _dup_changed(column: str) -> Mutate:
    """Repeat three rows of the scored day with the same key and time but another value."""

    def mutate(frame: pd.DataFrame, day: date) -> pd.DataFrame:
        on_day = frame.event_timestamp.dt.tz_convert("UTC").dt.date == day
        twins = frame[on_day].head(3).copy()  # the day's first rows: in every selection
        twins[column] = twins[column] + 1
        return pd.concat([frame, twins], ignore_index=True)

    return mutate


def _nulls(column: str) -> Mutate:
    def mutate(frame: pd.DataFrame, _day: date) -> pd.DataFrame:
        out = frame.copy()
        out[column] = out[column].astype("object").where(out.index % 7 != 3, None)
        return out

    return mutate


def _drop(column: str) -> Mutate:
    return lambda frame, _day: frame.drop(columns=column)


def _text(column: str, prefix: str = "") -> Mutate:
    return lambda frame, _day: frame.assign(**{column: prefix + frame[column].astype(str)})


def _comma_decimals(frame: pd.DataFrame, _day: date) -> pd.DataFrame:
    return frame.assign(amount=frame.amount.map(lambda a: f"{a:.2f}".replace(".", ",")))


def _bad_amounts(frame: pd.DataFrame, _day: date) -> pd.DataFrame:
    return frame.assign(amount=(-frame.amount).where(frame.index % 2 == 0, float("inf")))


T, EP, EC = "transactions", "entities.parquet", "entities.csv"
MISSING, TWICE, ROW_TWICE = "lacks column(s) ", "repeated transaction_id", "more than one row"
# Ordered round-robin over the inputs, so any prefix (a smaller --budget) covers each one.
CASES: tuple[BadInput, ...] = (
    BadInput("transactions: no amount column", T, _drop("amount"), MISSING + "amount"),
    BadInput("entities parquet: no merchant_id", EP, _drop("merchant_id"), MISSING + "merchant_id"),
    BadInput("entities csv: amount '12,50' (text)", EC, _comma_decimals, "amount is VARCHAR"),
    BadInput("user_profile: no avg_amount_30d", "user_profile", _drop("avg_amount_30d"), MISSING),
    BadInput("transactions: user_id as text", T, _text("user_id", "u"), "user_id is VARCHAR"),
    BadInput("entities parquet: repeated transaction_id", EP, _dup, TWICE),
    BadInput(
        "entities csv: header user, not user_id",
        EC,
        lambda f, _d: f.rename(columns={"user_id": "user"}),
        MISSING + "user_id",
    ),
    BadInput(
        "merchant_profile: risk_score as text",
        "merchant_profile",
        _text("risk_score"),
        "risk_score is VARCHAR",
    ),
    BadInput("transactions: repeated transaction_id", T, _dup, TWICE),
    BadInput(
        "entities parquet: user_id as float",
        EP,
        lambda f, _d: f.assign(user_id=f.user_id.astype(float)),
        "user_id is DOUBLE",
    ),
    BadInput("entities csv: repeated transaction_id", EC, _dup, TWICE),
    BadInput(
        "user_txn_windows: repeated (user_id, time)",
        "user_txn_windows",
        _dup_changed("txn_count_1h"),
        ROW_TWICE,
    ),
    BadInput("transactions: event_timestamp as text", T, _text("event_timestamp"), "is VARCHAR"),
    BadInput("entities parquet: null merchant_id", EP, _nulls("merchant_id"), "null key"),
    BadInput(
        "user_txn_windows: no event_timestamp",
        "user_txn_windows",
        _drop("event_timestamp"),
        MISSING + "event_timestamp",
    ),
    BadInput("transactions: negative and infinite amounts", T, _bad_amounts, "amount(s) not in"),
    BadInput("user_profile: user_id as text", "user_profile", _text("user_id"), "is VARCHAR"),
    BadInput(
        "transactions: channel 'card' (not in the schema)",
        T,
        lambda f, _d: f.assign(channel="card"),
        "channel(s) not in",
    ),
    BadInput(
        "user_profile: repeated (user_id, time, created)",
        "user_profile",
        _dup_changed("avg_amount_30d"),
        ROW_TWICE,
    ),
    BadInput("transactions: not a parquet file", T, None, "cannot read entities"),
)


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str
    untouched: bool


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path (directories included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def prepare(settings: Settings, root: Path, day: date, rows: int) -> dict[str, str]:
    """A feature repo copy over the source stack's data (the day's first ``rows``
    transactions), applied, with one scored partition of ``day``; returns its env."""
    repo = copy_feature_repo(root)
    data = root / "data"
    data.mkdir()
    source = settings.data_dir
    for view in (*SOURCES, "published_scores"):
        shutil.copy2(source / f"{view}.parquet", data / f"{view}.parquet")
    shutil.copytree(champion_dir_or_exit(settings), data / "model")
    tx = pd.read_parquet(source / "transactions.parquet")
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    tx = tx[(tx.event_timestamp >= start) & (tx.event_timestamp < start + pd.Timedelta(days=1))]
    tx.head(rows).to_parquet(data / "transactions.parquet", index=False)
    env = dict(os.environ) | {
        "FEATURE_REPO": str(repo),
        "REDIS_CONNECTION_STRING": settings.redis_connection_string,
        "REDIS_TYPE": settings.redis_type,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    env["MODEL_DIR"] = str(data / "model")  # the champion, copied
    feast = str(Path(sys.executable).with_name("feast"))
    for argv, cwd in (
        ([feast, "apply"], repo),
        ([sys.executable, "-m", "batch", "score", *job_args(root, day)], PROJECT_ROOT),
    ):
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[-3:])} failed: {done.stderr[-1500:]}")
    return env


def job_args(root: Path, day: date) -> list[str]:
    return ["--date", day.isoformat(), "--output", str(root / "scores")]


def break_input(root: Path, case: BadInput, day: date) -> tuple[list[str], Path | None]:
    """Write the broken file; returns extra job arguments and the file to restore after."""
    data = root / "data"
    if case.target.startswith("entities"):
        frame = pd.read_parquet(data / "transactions.parquet").drop(columns="is_fraud")
        path = root / case.target
        frame = case.mutate(frame, day) if case.mutate else frame
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return ["--entities", str(path)], None
    path = data / f"{case.target}.parquet"
    shutil.copy2(path, root / "original.parquet")
    if case.mutate is None:
        path.write_bytes(b"PAR1 this is not a parquet file\n")
    else:
        case.mutate(pd.read_parquet(path), day).to_parquet(path, index=False)
    return [], path


def run_case(root: Path, day: date, case: BadInput) -> Outcome:
    """Run ``python -m batch score`` in this process, as its ``main`` would exit."""
    from batch.__main__ import main  # the child's import, after its environment is set

    out = root / "scores"
    before = tree_digest(out)
    extra, restore = break_input(root, case, day)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(["score", *job_args(root, day), *extra])
    except BaseException:  # what the user would see: a traceback, exit 1
        code = 1
        stderr.write(traceback.format_exc())
    finally:
        if restore is not None:
            shutil.move(root / "original.parquet", restore)
    return Outcome(code, stderr.getvalue(), tree_digest(out) == before)


def check(case: BadInput, got: Outcome, root: Path) -> Check:
    lines = [ln for ln in got.stderr.splitlines() if " INFO " not in ln and ln.strip()]
    one_line = len(lines) == 1 and lines[0].startswith("fraud-batch: error: ")
    named = one_line and case.needle in lines[0]
    shown = lines[0].removeprefix("fraud-batch: error: ") if lines else "(no error)"
    shown = shown.replace(f"{root}/", "")  # the workspace's temporary path
    if "Traceback" in got.stderr:
        shown = "traceback: " + lines[-1]
    ok = got.code == 2 and named and got.untouched and "Traceback" not in got.stderr
    return Check(
        case.name,
        "exit 2, one named error, partition byte-identical",
        f"{got.code}; {'identical' if got.untouched else 'CHANGED'}; {shown[:110]}",
        ok,
    )


def run(settings: Settings, budget: int = len(CASES), rows: int = 500) -> list[Check]:
    """The first ``budget`` cases against a workspace built from ``settings``' data."""
    day = latest_day(settings)
    with tempfile.TemporaryDirectory(prefix="fuzz-batch-") as tmp:
        root = Path(tmp)
        env = prepare(settings, root, day, rows)
        names = [c.name for c in CASES[:budget]]
        done = subprocess.run(
            [sys.executable, "-m", "verify.fuzz_batch", "--child", str(root), day.isoformat()],
            input=json.dumps(names),
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"fuzz_batch child failed: {done.stderr[-3000:]}")
        outcomes = [Outcome(**o) for o in json.loads(done.stdout.strip().splitlines()[-1])]
    return [check(c, o, root) for c, o in zip(CASES[:budget], outcomes, strict=True)]


def latest_day(settings: Settings) -> date:
    """The busiest of the source data's last three days (the newest may be partial)."""
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet", columns=["event_timestamp"])
    days = tx.event_timestamp.dt.tz_convert("UTC").dt.date
    recent = days[days >= days.max() - timedelta(days=2)]
    busiest: date = recent.value_counts().idxmax()
    return busiest


def child(root: Path, day: date) -> int:
    """Runs in the workspace's environment: every named case, results as one JSON line."""
    wanted = json.loads(sys.stdin.read())
    by_name = {c.name: c for c in CASES}
    results = [asdict(run_case(root, day, by_name[n])) for n in wanted]
    print(json.dumps(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m verify.fuzz_batch", description=__doc__)
    parser.add_argument("--budget", type=int, default=len(CASES), help="cases to run")
    parser.add_argument("--rows", type=int, default=2000, help="transactions in the day")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "DAY"), help=argparse.SUPPRESS)
    return parser


def _main(args: argparse.Namespace) -> int:
    if args.child:
        return child(Path(args.child[0]), date.fromisoformat(args.child[1]))
    began = time.monotonic()
    checks = run(Settings(), args.budget, args.rows)
    print(table(checks))
    extra: dict[str, object] = {"cases": len(checks), "seconds": round(time.monotonic() - began, 1)}
    print(f"wrote {write_json('fuzz_batch', checks, extra)}")
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
