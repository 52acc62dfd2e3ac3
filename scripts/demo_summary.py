"""Print what `make demo` did and where its outputs are."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from core.contract import FEATURE_SERVICE_NAME, REQUEST_FIELDS
from core.predictor import MANIFEST_FILE, Predictor
from core.settings import get_settings
from core.store import feature_service, open_store


def main() -> None:
    settings = get_settings()
    data = settings.data_dir
    print("\n== demo summary ==")
    for name in ("transactions", "user_profile", "merchant_profile", "user_txn_windows"):
        path = data / f"{name}.parquet"
        print(f"  {name:<18} {pq.read_metadata(path).num_rows:>9,} rows  {path}")

    store = open_store(settings)
    service = feature_service(store)
    views = sorted(v.name for v in store.list_feature_views())
    print(f"  registry           {store.config.registry.path}: views {', '.join(views)}")

    manifest = json.loads((settings.model_path / MANIFEST_FILE).read_text())
    m = manifest["metrics"]
    print(
        f"  model              {manifest['model_version']}: holdout ROC AUC {m['roc_auc']:.3f}, "
        f"PR AUC {m['pr_auc']:.3f}  ({settings.model_path}/report.png)"
    )

    # One online read through the FeatureService, scored by the shared predictor.
    predictor = Predictor.load(settings.model_path, service)
    row = {"user_id": 42, "merchant_id": 7, "amount": 250.0, "channel": "online", "country": "NG"}
    features = store.get_online_features(features=service, entity_rows=[row]).to_dict()
    score = float(predictor.predict(features)[0])
    request = ", ".join(f"{k}={row[k]}" for k in ("user_id", "merchant_id", *REQUEST_FIELDS))
    print(f"  online read        {FEATURE_SERVICE_NAME} for {request}: score {score:.4f}")


if __name__ == "__main__":
    main()
