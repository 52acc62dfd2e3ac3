"""Decision bands picked on the holdout, decisions at their edges, reasons from the logit
terms, the same decision and reasons in the batch rows and the stream's messages, and the
metrics comparing a challenger with the champion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import logit

from batch.score import reasons_array, scored_columns
from core.cli import UserError
from core.events import ScoreRecord
from core.predictor import (
    MANIFEST_FILE,
    Bands,
    ContractMismatch,
    Models,
    Predictor,
    Scored,
    Shadowed,
    top_reasons,
)
from serving.metrics import Metrics
from streaming.metrics import StreamMetrics
from streaming.runtime import reasons_json, score_json, shadow_json
from tests.unit.test_predictor import _artifact, _service
from training.evaluate import pick_bands

NAMES = [f"f{i}" for i in range(5)]


def _columns(n: int, seed: int = 2) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).lognormal(0, 1.5, size=(n, len(NAMES)))
    return {name: x[:, i] for i, name in enumerate(NAMES)}


@pytest.fixture
def predictor(tmp_path: Path) -> Predictor:
    return Predictor.load(_artifact(tmp_path, NAMES), _service(NAMES))


def test_bands_flag_at_most_the_target_share_of_legitimate_holdout_rows() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.05).astype(int)
    p = np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1)
    p[:2000] = 0.3  # a block of ties: the rate must hold whichever side they fall
    block = pick_bands(y, p, review_fpr=0.05, decline_fpr=0.01)
    negatives = p[y == 0]
    assert 0 < block["review_at"] < block["decline_at"] < 1
    for band, fpr in (("review", 0.05), ("decline", 0.01)):
        flagged = float((negatives >= block[f"{band}_at"]).mean())
        assert fpr * 0.9 <= flagged <= fpr  # as many as the target allows, never more
        assert block["holdout"][band]["fpr"] == flagged
    assert block["holdout"]["decline"]["recall"] < block["holdout"]["review"]["recall"]
    assert block["rule"] == {
        "kind": "holdout_false_positive_rate",
        "review_fpr": 0.05,
        "decline_fpr": 0.01,
        "holdout_rows": 20_000,
    }


@pytest.mark.parametrize(("review", "decline"), [(0.01, 0.05), (0.0, 0.0), (1.0, 0.5)])
def test_bands_refuse_rates_out_of_order(review: float, decline: float) -> None:
    with pytest.raises(UserError, match="FPR"):
        pick_bands(np.array([0, 1]), np.array([0.1, 0.9]), review, decline)


def test_a_score_on_a_band_edge_takes_the_higher_band() -> None:
    bands = Bands(0.2, 0.7)
    edges = np.array([0.0, np.nextafter(0.2, 0), 0.2, np.nextafter(0.7, 0), 0.7, 1.0])
    assert bands.codes(edges).tolist() == [0, 0, 1, 1, 2, 2]


def test_a_manifest_without_bands_is_refused_with_retrain(tmp_path: Path) -> None:
    model_dir = _artifact(tmp_path, NAMES)
    body = json.loads((model_dir / MANIFEST_FILE).read_text())
    del body["decision"]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(body))
    with pytest.raises(ContractMismatch, match=r"no decision bands.*retrain"):
        Predictor.load(model_dir, _service(NAMES))


def test_reasons_are_the_largest_positive_terms_highest_first_ties_in_feature_order() -> None:
    terms = np.array(
        [
            [0.5, 2.0, -1.0, 2.0, 0.1],  # tie at 2.0: f1 before f3
            [-1.0, -2.0, 0.0, -0.5, -3.0],  # nothing pushed the score up
            [0.0, 0.3, 0.0, 0.0, 0.0],
        ]
    )
    index, values = top_reasons(terms)
    assert index.tolist() == [[1, 3, 0], [-1, -1, -1], [1, -1, -1]]
    assert values.tolist() == [[2.0, 2.0, 0.5], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0]]
    short_index, _ = top_reasons(np.array([[1.0, 3.0]]))  # fewer features than slots
    assert short_index.tolist() == [[1, 0, -1]]


def test_reasons_are_terms_of_the_scores_logit(predictor: Predictor) -> None:
    """All terms plus the intercept give the score back, so a reason is what it says."""
    columns = _columns(400)
    scored = predictor.score(columns)
    linear = predictor._linear
    assert linear is not None
    terms = linear.contributions(predictor.matrix(columns))
    np.testing.assert_allclose(terms.sum(axis=1) + linear.intercept, logit(scored.scores))
    reasons = scored.all_reasons()
    assert sum(map(len, reasons)) > 400  # most rows have more than one reason
    for row, found in enumerate(reasons):
        positive = sorted(terms[row][terms[row] > 0], reverse=True)[:3]
        assert [r["contribution"] for r in found] == positive
        assert all(r["contribution"] == terms[row][NAMES.index(r["feature"])] for r in found)
    assert set(scored.decisions) <= {"approve", "review", "decline"}
    assert scored.codes.tolist() == predictor.bands.codes(scored.scores).tolist()


def test_the_challenger_scores_the_same_vectors(tmp_path: Path, predictor: Predictor) -> None:
    other = tmp_path / "other"
    other.mkdir()
    challenger = Predictor.load(_artifact(other, NAMES, seed=5), _service(NAMES), "svc/2")
    columns = _columns(50)
    both = Models(predictor, challenger).score(columns)
    assert both.challenger is not None and both.challenger.version == "svc/2"
    assert np.array_equal(both.challenger.scores, challenger.predict(columns))
    assert np.array_equal(both.champion.scores, predictor.predict(columns))
    assert Models(predictor).score(columns).challenger is None


def test_batch_rows_and_stream_messages_carry_the_same_reasons(
    tmp_path: Path, predictor: Predictor
) -> None:

    columns = _columns(200)
    scored = predictor.score(columns)
    want = [[(r["feature"], r["contribution"]) for r in row] for row in scored.all_reasons()]
    batch = reasons_array(scored).to_pylist()
    assert [[(r["feature"], r["contribution"]) for r in row] for row in batch] == want
    stream = [json.loads(text) for text in reasons_json(scored)]
    assert [[(r["feature"], r["contribution"]) for r in row] for row in stream] == want
    out = scored_columns(Models(predictor), pa.table(columns))
    assert out["decision"].to_pylist() == scored.decisions.tolist()
    assert out["challenger_score"].null_count == 200
    assert shadow_json(None, 2) == ["", ""]
    both = Models(predictor, predictor).score(columns)
    assert both.challenger is not None
    when = "2026-01-01T00:00:00+00:00"
    reasons, shadow = reasons_json(both.champion)[7], shadow_json(both.challenger, 200)[7]
    text = score_json("t", 1, 0.5, "v", when, 1.0, "approve", reasons, shadow)
    record = ScoreRecord.model_validate_json(text)
    assert record.challenger_score == both.challenger.scores[7]
    assert record.challenger_decision == both.challenger.decisions[7]
    assert [(r.feature, r.contribution) for r in record.reasons] == want[7]


def _scored(version: str, scores: list[float], codes: list[int]) -> Scored:
    n = len(scores)
    none = np.full((n, 3), -1)
    return Scored(
        version, NAMES, np.array(scores), np.array(codes, np.int8), none, np.zeros((n, 3))
    )


def test_api_and_stream_metrics_compare_the_two_models_decisions() -> None:
    champion = _scored("m/1", [0.1, 0.5, 0.9, 0.2], [0, 1, 2, 0])
    shadow = Shadowed(champion, _scored("m/2", [0.1, 0.6, 0.4, 0.7], [0, 1, 1, 1]))
    api = Metrics()
    api.observe_shadow(shadow)
    api.observe_shadow(Shadowed(champion, None))  # no challenger: nothing recorded
    stream_registry = CollectorRegistry()
    StreamMetrics(60.0, stream_registry).observe_scored(shadow)
    for prefix, text in (
        ("serving", api.exposition()[0].decode()),
        ("stream", generate_latest(stream_registry).decode()),
    ):
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        pair = (("challenger_version", "m/2"), ("champion_version", "m/1"))
        agreement = f"{prefix}_shadow_agreement_total"
        assert samples[(agreement, (*pair, ("outcome", "agree")))] == 2
        assert samples[(agreement, (*pair, ("outcome", "disagree")))] == 2
        role = (("model_version", "m/2"), ("role", "challenger"))
        assert samples[(f"{prefix}_prediction_score_count", role)] == 4
    stream_decisions = [line for line in text.splitlines() if "stream_decisions_total{" in line]
    assert sorted(stream_decisions) == [
        'stream_decisions_total{decision="approve",model_version="m/1"} 2.0',
        'stream_decisions_total{decision="decline",model_version="m/1"} 1.0',
        'stream_decisions_total{decision="review",model_version="m/1"} 1.0',
    ]


def test_stream_reasons_json_for_every_count_of_reasons() -> None:
    index = np.array([[1, 3, 0], [-1, -1, -1], [2, -1, -1], [0, 4, -1]])
    values = np.array([[3.0, 2.0, 0.1], [0, 0, 0], [0.5, 0, 0], [1e-17, 1e-18, 0]])
    scored = Scored("m/1", NAMES, np.zeros(4), np.zeros(4, np.int8), index, values)
    got = [[(r["feature"], r["contribution"]) for r in json.loads(t)] for t in reasons_json(scored)]
    assert got == [[(r["feature"], r["contribution"]) for r in row] for row in scored.all_reasons()]
    assert [len(row) for row in got] == [3, 0, 1, 2]


def test_bands_out_of_order_are_refused_and_a_band_above_one_is_never_reached() -> None:
    above = float(np.nextafter(1.0, 2.0))  # what a rate that allows no holdout row gives
    bands = Bands.from_manifest({"decision": {"review_at": 0.5, "decline_at": above}}, "v")
    assert bands.codes(np.array([0.4, 0.5, 1.0])).tolist() == [0, 1, 1]
    with pytest.raises(ContractMismatch, match="invalid decision bands"):
        Bands.from_manifest({"decision": {"review_at": 0.6, "decline_at": 0.5}}, "v")
