"""Print what `make demo` did and where its outputs are, then call the API as a client would."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pyarrow.parquet as pq

from core.models import pin_models
from core.predictor import MANIFEST_FILE
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.store import feature_service, open_store
from harness.models import champion_dir
from harness.servers import free_port, launched, serving_command
from registry.store import Registry
from scripts.schemas import MODELS, path
from training.evaluate import describe_bands

CALLS: list[tuple[str, dict[str, Any]]] = [
    (
        "known user",
        {"user_id": 42, "merchant_id": 7, "amount": 250.0, "channel": "online", "country": "NG"},
    ),
    (
        "unknown user",
        {"user_id": 10**12, "merchant_id": 7, "amount": 25.0, "channel": "pos", "country": "US"},
    ),
    ("malformed", {"user_id": "forty-two", "merchant_id": 7, "amount": -1, "channel": "fax"}),
]


def offline(settings: Settings) -> None:
    data = settings.data_dir
    for name in ("transactions", "user_profile", "merchant_profile", "user_txn_windows"):
        path = data / f"{name}.parquet"
        print(f"  {name:<18} {pq.read_metadata(path).num_rows:>9,} rows  {path}")
    store = open_store(settings)
    views = sorted(v.name for v in store.list_feature_views())
    print(f"  feast registry     {settings.data_dir / 'registry.db'}: views {', '.join(views)}")
    model_dir = champion_dir(settings)
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    m = manifest["metrics"]
    champion = pin_models(settings, feature_service(store)).champion.version
    print(
        f"  model              {champion} (champion): holdout ROC AUC {m['roc_auc']:.3f}, "
        f"PR AUC {m['pr_auc']:.3f}  ({model_dir}/report.png)"
    )
    print(f"  decision bands     {describe_bands(manifest['decision'])}")
    where = settings.model_dir or f"{Registry(settings).describe()} (fraud-models list)"
    print(f"  model registry     {where}")


def batch(settings: Settings) -> int | None:
    """The nightly job's manifest for yesterday; returns a user whose score it published."""
    day = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    partition = settings.data_dir / "scores" / f"date={day}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    print(
        f"  nightly batch      {day}: {manifest['rows_out']:,} rows scored at "
        f"{manifest['rows_per_s']:,.0f} rows/s, {manifest['rows_missing_features']} with missing "
        f"features, model {manifest['model_version']}  ({partition})"
    )
    scores = pq.read_table(partition, columns=["user_id"]).column("user_id")
    return int(scores[0].as_py()) if len(scores) else None


def online(published_user: int | None) -> None:
    """Start `python -m serving` on a free port, make three calls, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = PROJECT_ROOT / "data" / "demo-serving.log"
    with launched(serving_command(port), f"{url}/ready", log, cwd=PROJECT_ROOT):
        print(f"  online API         {url} (log: {log})")
        for label, body in CALLS:
            r = httpx.post(f"{url}/v1/predict", json=body, timeout=5)
            answer = r.json()
            if r.status_code == 200:
                text = (
                    f"score {answer['score']:.4f}, {len(answer['missing_features'])} features "
                    f"missing, model {answer['model_version']}\n{' ' * 38}{decision(answer)}"
                )
            else:
                text = "; ".join(
                    f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in answer["detail"]
                )
            print(f"    POST /v1/predict {label:<13} -> {r.status_code}  {text}")
        if published_user is not None:
            r = httpx.get(f"{url}/v1/scores/{published_user}", timeout=5)
            print(f"    GET /v1/scores/{published_user:<10} -> {r.status_code}  {r.json()}")


def decision(answer: dict[str, Any]) -> str:
    """The decision and the features that pushed the score most, as the API returned them."""
    why = ", ".join(f"{r['feature']} +{r['contribution']:.2f}" for r in answer["reasons"])
    return f"decision {answer['decision']}, reasons (logit terms): {why or 'none'}"


def observability(settings: Settings) -> None:
    """Where the dashboard, the alert rules and the metrics endpoints are."""
    deploy = PROJECT_ROOT / "deploy"
    print(f"  dashboard          {deploy / 'grafana/dashboards/fraud-scoring.json'} (Grafana)")
    print(f"  alert rules        {deploy / 'prometheus/alerts.yml'} (README: what to do)")
    api = f"http://{settings.serving_host}:{settings.serving_port}/metrics"
    stream = f"http://{settings.stream_metrics_host}:{settings.stream_metrics_port}/metrics"
    print(f"  metrics            API {api} (make serve); stream {stream} (make stream)")


def contract() -> None:
    """Where the event contract's JSON Schemas are, for producers and consumers."""
    files = ", ".join(str(path(name)) for name in MODELS)
    print(f"  event schemas      {files} (make schemas)")


def main() -> None:
    print("\n== demo summary ==")
    settings = get_settings()
    offline(settings)
    online(batch(settings))
    observability(settings)
    contract()


if __name__ == "__main__":
    main()
