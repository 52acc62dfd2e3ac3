"""What shadow scoring costs the API: one worker, sequential requests, in alternating rounds.

    python -m bench.bench_shadow [--users N] [--rounds N] [--seconds S]

Three ways of serving the same champion, each round in turn, so a noisy shared box hits all
three alike: ``MODEL_DIR`` (a fixed artifact, no registry), the registry with the champion
only, and the registry with a challenger shadow-scored on every request (a variant of the
champion, ``harness.rollout``). One connection at a time (the latency floor of a request) and
16 connections (throughput). Prints the medians over rounds and writes
bench/results/shadow.json; ``make bench-online CHALLENGER=1`` is the full benchmark.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics

from core.settings import Settings
from datagen.generate import GeneratorConfig
from harness.loadgen import closed_loop, post
from harness.models import champion_dir_or_exit, registry_env
from harness.report import RESULTS_DIR
from harness.rollout import prepare
from harness.servers import HOST, free_port, launched, serving_command
from harness.workspace import Workspace
from harness.workspace import prepare as prepare_workspace
from registry.store import CHALLENGER, Registry

CONFIGS = ("model_dir", "registry", "registry+challenger")


def envs(ws: Workspace) -> dict[str, dict[str, str]]:
    """Each configuration's environment for ``python -m serving``."""
    model = ws.settings.data_dir / "model"
    shutil.copytree(champion_dir_or_exit(Settings()), model, dirs_exist_ok=True)  # the project's
    settings = ws.settings_with(model_dir=model)
    plain, _ = prepare(settings, ws.settings.data_dir / "registry-plain")
    shadow, versions = prepare(settings, ws.settings.data_dir / "registry-shadow")
    Registry(shadow).set_alias(CHALLENGER, versions.new.rpartition("/")[2])
    return {
        "model_dir": ws.env | {"MODEL_DIR": str(model)},
        "registry": ws.env | registry_env(plain),
        "registry+challenger": ws.env | registry_env(shadow),
    }


def one_round(env: dict[str, str], requests: list[bytes], seconds: float) -> dict[str, float]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = RESULTS_DIR / "shadow-api.log"
    with launched(serving_command(port, 1), f"{url}/health", log, env | {"LOG_LEVEL": "WARNING"}):
        closed_loop(port, requests, 4, 2.0)  # warm-up
        seq = closed_loop(port, requests, 1, seconds)
        c16 = closed_loop(port, requests, 16, seconds)
    lat = sorted(s.latency * 1000 for s in seq if s.status == 200)
    return {
        "seq_p50_ms": lat[len(lat) // 2],
        "seq_p99_ms": lat[int(len(lat) * 0.99)],
        "c16_rps": sum(s.status == 200 for s in c16) / seconds,
        "errors": sum(s.status != 200 for s in seq + c16),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_shadow", description=__doc__)
    parser.add_argument("--users", type=int, default=20_000, help="users materialized")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three configs")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load per round")
    parser.add_argument("--redis-db", type=int, default=9)
    args = parser.parse_args()
    cfg = GeneratorConfig(users=args.users, merchants=2000, days=2, txns_per_day=args.users)
    ws = prepare_workspace("shadow", cfg, args.redis_db)
    rng = random.Random(7)
    requests = [
        post(
            "/v1/predict",
            json.dumps(
                {"user_id": rng.randint(1, args.users), "merchant_id": rng.randint(1, 2000),
                 "amount": 120.5, "channel": "online", "country": "GB"}
            ).encode(),
        )
        for _ in range(2000)
    ]  # fmt: skip
    by_config = envs(ws)
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        for config in CONFIGS:
            runs[config].append(one_round(by_config[config], requests, args.seconds))
            print(f"round {r + 1} {config}: {runs[config][-1]}", flush=True)
    summary = {
        c: {k: statistics.median(run[k] for run in runs[c]) for k in runs[c][0]} for c in CONFIGS
    }
    print(f"\n{'config':<22}{'seq p50 ms':>12}{'seq p99 ms':>12}{'c16 rps':>10}{'errors':>8}")
    for c, m in summary.items():
        print(
            f"{c:<22}{m['seq_p50_ms']:>12.2f}{m['seq_p99_ms']:>12.2f}"
            f"{m['c16_rps']:>10.0f}{m['errors']:>8.0f}"
        )
    out = RESULTS_DIR / "shadow.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "median": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
