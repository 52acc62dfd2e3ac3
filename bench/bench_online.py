"""`make bench-online`: our API against `feast serve` and a no-op floor, same run, same box.

Materializes --users users into a Redis database of its own, starts `python -m serving`
and `feast serve --max-requests 0` with the same worker count (default: one per core),
and drives all of them with wrk (Debian's package; installed here if missing, as root).
Prints one table, writes bench/results/online.json and online.png. With
REDIS_TYPE=redis_cluster (``make bench-online REDIS_MODE=cluster``) the same loads run on the
Redis Cluster, both servers on it, into online_cluster.json and online_cluster.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import redis

from core.redis_url import parse
from core.settings import PROJECT_ROOT, Settings
from datagen.generate import GeneratorConfig
from harness import redis_cluster as rc
from harness.models import champion_dir_or_exit, registry_env
from harness.report import RESULTS_DIR as RESULTS
from harness.rollout import prepare
from harness.servers import launched, serving_command
from harness.workspace import Workspace
from harness.workspace import prepare as prepare_workspace
from registry.store import CHALLENGER, Registry

BODY_LUA = """
math.randomseed(%(seed)d)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local n = %(records)d
  local parts = {}
  for i = 1, n do
    local u = math.random(1, %(users)d)
    local m = math.random(1, %(merchants)d)
    parts[i] = string.format(%(fmt)s, u, m)
  end
  return wrk.format(nil, nil, nil, %(wrap)s)
end
"""
START_S = 180.0  # server start-up bound: a loaded shared box took over 60 s
OURS_ONE = '{"user_id":%d,"merchant_id":%d,"amount":120.5,"channel":"online","country":"GB"}'
FEAST_ONE = (
    '{"feature_service":"fraud_model_v1","entities":{"user_id":[%d],"merchant_id":[%d],'
    '"amount":[120.5],"channel":["online"],"country":["GB"]}}'
)


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        if os.geteuid() != 0:
            sys.exit("bench-online: error: wrk is missing; apt-get install wrk")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return "wrk"


def lua(path: Path, fmt: str, records: int, users: int, merchants: int, batch: bool) -> Path:
    wrap = '"{\\"records\\":[" .. table.concat(parts, ",") .. "]}"' if batch else "parts[1]"
    path.write_text(
        BODY_LUA
        % {
            "seed": 7,
            "records": records,
            "users": users,
            "merchants": merchants,
            "fmt": json.dumps(fmt),  # a JSON string literal is also a valid Lua one
            "wrap": wrap,
        }
    )
    return path


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, connections: int, seconds: int, script: Path | None) -> dict[str, float]:
    threads = min(connections, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    pct = {
        p: float(v) * _UNIT[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "requests": total,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def run(ws: Workspace, args: argparse.Namespace) -> dict[str, float]:
    model = champion_dir_or_exit(Settings())  # the project's champion
    shutil.copytree(model, ws.settings.data_dir / "model", dirs_exist_ok=True)
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmpdir:
        return _loads(ws, args, workers, Path(tmpdir))


def _loads(ws: Workspace, args: argparse.Namespace, workers: int, tmp: Path) -> dict[str, float]:
    scripts = {
        "ours": lua(tmp / "ours.lua", OURS_ONE, 1, args.users, args.merchants, False),
        "ours100": lua(tmp / "ours100.lua", OURS_ONE, 100, args.users, args.merchants, True),
        "feast": lua(tmp / "feast.lua", FEAST_ONE, 1, args.users, args.merchants, False),
    }
    ours, feast = "http://127.0.0.1:18000", "http://127.0.0.1:16566"
    env = ws.env | {"PROMETHEUS_MULTIPROC_DIR": str(tmp)}  # for feast serve's gunicorn workers
    env |= _model_env(ws, args.challenger)
    feast_cli = str(Path(sys.executable).with_name("feast"))
    serve_ours = serving_command(18000, workers)
    serve_feast = [
        feast_cli,
        "serve",
        "-p",
        "16566",
        "-w",
        str(workers),
        "--max-requests",
        "0",
        "--no-access-log",
    ]
    r: dict[str, float] = {"workers": workers, "users": args.users, "duration_s": args.duration}
    logs = RESULTS / f"{args.name}-ours.log", RESULTS / f"{args.name}-feast.log"
    with launched(serve_ours, f"{ours}/ready", logs[0], env, PROJECT_ROOT, START_S):
        d = args.duration
        wrk(f"{ours}/v1/predict", 16, 3, scripts["ours"])  # warm-up
        seq = wrk(f"{ours}/v1/predict", 1, d, scripts["ours"])
        before = cpu_seconds(ws, 18000)
        c16 = wrk(f"{ours}/v1/predict", 16, d, scripts["ours"])
        after = cpu_seconds(ws, 18000)
        c64 = wrk(f"{ours}/v1/predict", 64, d, scripts["ours"])
        b100 = wrk(f"{ours}/v1/predict/batch", 1, d, scripts["ours100"])
        noop16 = wrk(f"{ours}/health", 16, d, None)
        noop64 = wrk(f"{ours}/health", 64, d, None)
    repo = ws.settings.feature_repo
    with launched(serve_feast, f"{feast}/health", logs[1], ws.env, repo, START_S):
        wrk(f"{feast}/get-online-features", 16, 3, scripts["feast"])  # warm-up
        fseq = wrk(f"{feast}/get-online-features", 1, d, scripts["feast"])
        f16 = wrk(f"{feast}/get-online-features", 16, d, scripts["feast"])
        f64 = wrk(f"{feast}/get-online-features", 64, d, scripts["feast"])
    for name, m in [
        ("ours_seq", seq),
        ("ours_c16", c16),
        ("ours_c64", c64),
        ("ours_batch100", b100),
        ("noop_c16", noop16),
        ("noop_c64", noop64),
        ("feast_serve_seq", fseq),
        ("feast_serve_c16", f16),
        ("feast_serve_c64", f64),
    ]:
        r[f"{name}_rps"] = m["rps"]
        r[f"{name}_p50_ms"] = m["p50_ms"]
        r[f"{name}_p99_ms"] = m["p99_ms"]
        r[f"{name}_requests"] = m["requests"]
        r[f"{name}_non_2xx"] = m["non_2xx"]
    # CPU per request of the API processes and of every Redis node (the capacity model's input)
    r["ours_cpu_ms_per_req_c16"] = (after[0] - before[0]) * 1000 / c16["requests"]
    r["redis_cpu_ms_per_req_c16"] = (after[1] - before[1]) * 1000 / c16["requests"]
    r["ours_rps_c16"], r["feast_serve_rps_c16"], r["noop_rps_c16"] = (
        c16["rps"],
        f16["rps"],
        noop16["rps"],
    )
    return r


def _model_env(ws: Workspace, challenger: bool) -> dict[str, str]:
    """The champion alone (MODEL_DIR), or with ``challenger`` a private registry whose
    champion is that artifact and whose challenger is a variant of it, shadow-scored on every
    request (harness.rollout)."""
    model = ws.settings.data_dir / "model"
    if not challenger:
        return {"MODEL_DIR": str(model)}
    settings = ws.settings_with(model_dir=model)
    private, versions = prepare(settings, ws.settings.data_dir / "registry-challenger")
    Registry(private).set_alias(CHALLENGER, versions.new.rpartition("/")[2])
    return registry_env(private)


def cpu_seconds(ws: Workspace, port: int) -> tuple[float, float]:
    """CPU seconds so far of the API on ``port`` (parent and workers) and of the Redis nodes
    (INFO cpu; the shared standalone Redis also counts other clients' commands)."""
    api = 0.0
    for child in psutil.Process().children():
        if "serving" in child.cmdline() and str(port) in child.cmdline():
            for p in [child, *child.children(recursive=True)]:
                times = p.cpu_times()
                api += times.user + times.system
    target = parse(ws.settings.redis_connection_string)
    nodes = list(target.nodes)
    if ws.settings.redis_type == "redis_cluster":
        nodes = [(n.host, n.port) for n in rc.nodes(ws.settings) if n.connected]
    used = 0.0
    for host, port_ in nodes:
        info = redis.Redis(host=host, port=port_, **cpu_params(target.params)).info("cpu")
        used += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])  # type: ignore[index]
    return api, used


def cpu_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "db"}


def report(r: dict[str, float]) -> None:
    print(
        f"\nonline benchmark: {int(r['users']):,} users materialized, "
        f"{int(r['workers'])} workers each, wrk {int(r['duration_s'])} s per load, "
        "2-core machine shared with wrk"
    )
    print(
        f"{'load':<26}{'ours rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'feast rps':>11}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'no-op rps':>11}{'ours/feast':>12}{'ours/no-op':>12}"
    )
    for label, key, noop in [
        ("sequential (1 conn)", "seq", None),
        ("16 connections", "c16", "noop_c16"),
        ("64 connections", "c64", "noop_c64"),
    ]:
        o, f = f"ours_{key}", f"feast_serve_{key}"
        n = r[f"{noop}_rps"] if noop else float("nan")
        print(
            f"{label:<26}{r[o + '_rps']:>10.0f}{r[o + '_p50_ms']:>9.2f}{r[o + '_p99_ms']:>9.2f}"
            f"{r[f + '_rps']:>11.0f}{r[f + '_p50_ms']:>9.2f}{r[f + '_p99_ms']:>9.2f}{n:>11.0f}"
            f"{r[o + '_rps'] / r[f + '_rps']:>12.2f}{r[o + '_rps'] / n:>12.2f}"
        )
    print(
        f"{'batch of 100 (1 conn)':<26}{r['ours_batch100_rps']:>10.0f}"
        f"{r['ours_batch100_p50_ms']:>9.2f}{r['ours_batch100_p99_ms']:>9.2f}"
    )
    print(
        f"CPU per request at 16 connections: API {r['ours_cpu_ms_per_req_c16']:.3f} ms,"
        f" Redis {r['redis_cpu_ms_per_req_c16']:.3f} ms"
    )
    errors = sum(v for k, v in r.items() if k.endswith("_non_2xx"))
    print(f"non-2xx responses across all loads: {int(errors)}")


def chart(r: dict[str, float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [
        "ours c16",
        "feast serve c16",
        "no-op c16",
        "ours c64",
        "feast serve c64",
        "no-op c64",
    ]
    keys = ["ours_c16", "feast_serve_c16", "noop_c16", "ours_c64", "feast_serve_c64", "noop_c64"]
    a.bar(labels, [r[f"{k}_rps"] for k in keys], color=["C0", "C1", "C7"] * 2)
    a.set(title="Throughput (requests/s)", ylabel="requests/s")
    a.tick_params(axis="x", rotation=30)
    lat = ["ours_seq", "feast_serve_seq", "ours_batch100"]
    x = range(len(lat))
    b.bar([i - 0.2 for i in x], [r[f"{k}_p50_ms"] for k in lat], 0.4, label="p50")
    b.bar([i + 0.2 for i in x], [r[f"{k}_p99_ms"] for k in lat], 0.4, label="p99")
    b.set_xticks(list(x), ["ours 1 record", "feast serve", "ours 100 records"])
    b.set(title="Sequential latency (ms)", ylabel="ms")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=2_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk load")
    parser.add_argument("--workers", type=int, default=0, help="default: one per core")
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument(
        "--challenger",
        action="store_true",
        help="a challenger set: the API shadow-scores a second model on every request"
        " (results in online_challenger.json)",
    )
    args = parser.parse_args()
    cluster = Settings().redis_type == "redis_cluster"
    args.name = ("online_cluster" if cluster else "online") + (
        "_challenger" if args.challenger else ""
    )
    ensure_wrk()
    RESULTS.mkdir(parents=True, exist_ok=True)
    print("preparing the workspace ...", flush=True)
    cfg = GeneratorConfig(
        users=args.users, merchants=args.merchants, days=2, txns_per_day=args.users
    )
    result = run(prepare_workspace(args.name, cfg, args.redis_db), args)
    report(result)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2))
    chart(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
