"""`python -m bench.bench_api_cpu`: the API's CPU time per request, in process.

The app runs on its own event loop (TestClient's portal) and is called through httpx's ASGI
transport, so no HTTP server, socket or load generator shares the CPU: the figure is the
request's own work (body parsing, the online read on the real Redis, scoring, metrics,
serialization). It is the quieter companion of `make bench-online` for A/B between trees on
a shared box: run it from each tree in turn and compare the minimum over rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import httpx
from fastapi.testclient import TestClient

from core.settings import Settings
from datagen.generate import GeneratorConfig
from harness.models import champion_dir_or_exit
from harness.workspace import prepare
from serving.app import create_app


def bodies(cfg: GeneratorConfig, records: int, count: int) -> list[bytes]:
    rng = random.Random(1)
    return [
        json.dumps(
            {
                "records": [
                    {
                        "user_id": rng.randint(1, cfg.users),
                        "merchant_id": rng.randint(1, cfg.merchants),
                        "amount": 120.5,
                        "channel": "online",
                        "country": "GB",
                    }
                    for _ in range(records)
                ]
            }
        ).encode()
        for _ in range(count)
    ]


async def rounds(app: object, payloads: list[bytes], args: argparse.Namespace) -> list[float]:
    """CPU ms per request in each round of ``args.requests`` requests."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"content-type": "application/json"}
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for r in range(args.rounds + 1):  # the first round warms up
            began = time.process_time()
            for i in range(args.requests):
                reply = await client.post(
                    "/v1/predict/batch", content=payloads[i % len(payloads)], headers=headers
                )
                if reply.status_code != 200:
                    raise SystemExit(f"error: {reply.status_code} {reply.text}")
            if r:
                out.append((time.process_time() - began) / args.requests * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--records", type=int, default=100, help="records per request")
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()
    cfg = GeneratorConfig(users=args.users, merchants=2_000, days=2, txns_per_day=args.users)
    ws = prepare("api_cpu", cfg, args.redis_db)
    settings = ws.settings.model_copy(
        update={"model_dir": champion_dir_or_exit(Settings()), "redis_timeout_ms": 2000.0}
    )
    app = create_app(settings)
    with TestClient(app) as client:  # runs the lifespan; its portal runs the rounds
        assert client.portal is not None  # set while the client is open
        cpu = client.portal.call(rounds, app, bodies(cfg, args.records, 50), args)
    print(f"CPU per {args.records}-record request, ms, per round: {[round(c, 2) for c in cpu]}")
    print(f"min {min(cpu):.2f} ms   median {sorted(cpu)[len(cpu) // 2]:.2f} ms")


if __name__ == "__main__":
    main()
