"""What the rollout proof, its tests and the shadow-scoring benchmark share: a private
registry with two versions that score differently (and broken artifacts), and each streamed
event's input vector rebuilt independently of the flow, so a score can be recomputed with the
version it names.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore

from core.predictor import MANIFEST_FILE, MODEL_FILE, Predictor, file_sha256
from core.settings import Settings
from core.store import feature_service, open_store
from harness.loadgen import post
from harness.models import champion_dir, private_registry
from harness.reference import request_features, windows_at
from registry.register import register_trained
from streaming.features import feast_fetch, profile_refs

_US = 1_000_000


def _restamp(artifact: Path, suffix: str, **changes: Any) -> Path:
    """Suffix the manifest's version, recompute its checksum over the model file as it is
    now, and apply ``changes`` to it."""
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    manifest["model_version"] = f"{manifest['model_version']}-{suffix}"
    manifest["checksum"] = file_sha256(artifact / MODEL_FILE)
    manifest |= changes
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return artifact


def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def variant_artifact(src: Path, dst: Path, factor: float = 1.5) -> Path:
    """A valid artifact whose logistic coefficients are ``factor`` times ``src``'s: the same
    contract, different scores (a retrain with another seed gives the same lbfgs fit)."""
    _copy(src, dst)
    pipeline = joblib.load(src / MODEL_FILE)
    pipeline.named_steps["model"].coef_ = pipeline.named_steps["model"].coef_ * factor
    joblib.dump(pipeline, dst / MODEL_FILE)
    return _restamp(dst, f"x{factor:g}")


def tampered_artifact(src: Path, dst: Path) -> Path:
    """``src`` with one byte of its model file changed after the manifest: fails its checksum."""
    _restamp(_copy(src, dst), "tampered")
    blob = bytearray((dst / MODEL_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (dst / MODEL_FILE).write_bytes(bytes(blob))
    return dst


def reordered_artifact(src: Path, dst: Path) -> Path:
    """``src`` whose manifest lists its features in another order: fails the contract."""
    features = json.loads((src / MANIFEST_FILE).read_text())["features"]
    return _restamp(_copy(src, dst), "reordered", features=[*features[1:], features[0]])


def api_requests(events: pd.DataFrame) -> list[bytes]:
    """One explained scoring request per event (raw HTTP): the answer carries the vector."""
    fields = ("transaction_id", "user_id", "merchant_id", "amount", "channel", "country")
    return [
        post("/v1/predict?explain=true", json.dumps({k: row[k] for k in fields}).encode())
        for row in events[list(fields)].to_dict("records")
    ]


def stream_vectors(
    store: FeatureStore, service: FeatureService, events: pd.DataFrame, features: list[str]
) -> pd.DataFrame:
    """Each event's input vector, indexed by transaction_id: profiles as stored online (the
    runs write them once, before the stream), windows and request features recomputed from
    their documented meaning (``harness.reference``)."""
    fetch = feast_fetch(store)
    profiles: dict[str, dict[int, dict[str, Any]]] = {}
    for key, refs in profile_refs(store, service).items():
        ids = sorted({int(i) for i in events[key]})
        profiles[key] = dict(zip(ids, fetch(refs, key, ids), strict=True))
    history: dict[int, list[tuple[int, float, int]]] = defaultdict(list)
    stamps = events.event_timestamp.dt.as_unit("us").astype("int64")
    for ts, user, amount, merchant in zip(
        stamps, events.user_id, events.amount, events.merchant_id, strict=True
    ):
        history[int(user)].append((int(ts), float(amount), int(merchant)))
    rows = []
    records = cast(list[dict[str, Any]], events.to_dict("records"))
    for event, t_us in zip(records, stamps, strict=True):
        row = dict(event)
        for key, by_id in profiles.items():
            row.update(by_id[int(event[key])])
        row.update(windows_at(history[int(event["user_id"])], int(t_us)))
        row.update(request_features(row))
        rows.append({"transaction_id": event["transaction_id"]} | {f: row[f] for f in features})
    return pd.DataFrame(rows).set_index("transaction_id").astype(np.float64)


@dataclass(frozen=True)
class Versions:
    """The private registry's two versions, as every mode names them, and their predictors."""

    old: str
    new: str
    predictors: dict[str, Predictor]


def register_versions(
    settings: Settings, source: Path, workdir: Path, service: FeatureService
) -> Versions:
    """``source`` as version 1 (the champion) and its scaled variant as version 2."""
    variant = variant_artifact(source, workdir / "variant")
    names = []
    for artifact in (source, variant):
        manifest = json.loads((artifact / "manifest.json").read_text())
        names.append(register_trained(settings, artifact, manifest, {}).name)
    predictors = {
        name: Predictor.load(artifact, service, name)
        for name, artifact in zip(names, (source, variant), strict=True)
    }
    return Versions(names[0], names[1], predictors)


def prepare(settings: Settings, workdir: Path) -> tuple[Settings, Versions]:
    """``settings`` on a fresh private registry under ``workdir``: their champion's artifact
    as version 1 (the champion) and its variant as version 2."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    service = feature_service(open_store(settings))
    private = private_registry(settings, workdir)
    return private, register_versions(private, champion_dir(settings), workdir, service)
