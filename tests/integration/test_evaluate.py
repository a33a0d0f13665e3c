"""`iblip evaluate` on a real local Ray and a real MLflow store: all 13 held-out datasets from a trained tiny model."""

import json
import math
from pathlib import Path

import pytest

from components.config import load_config
from components.evaluation import DATASET_METRICS, EvalConfig
from pipelines.evaluate import evaluate

pytestmark = pytest.mark.integration


def _config(world, tmp_path, **overrides):
    base = {"data": str(world["prepared"]), "model": world["model_uri"], "out": str(tmp_path / "eval"),
            "run_name": "ev", "max_samples": 16, "mlflow.tracking_uri": world["tracking_uri"],
            "inference.batch_size": 8, "predictions_logged": 2}
    base.update(overrides)
    return load_config(EvalConfig, None, [f"{k}={json.dumps(v)}" for k, v in base.items()])


def test_all_held_out_datasets_are_scored_and_tracked(trained_model, tmp_path):
    from mlflow import MlflowClient

    lines = []
    result = evaluate(_config(trained_model, tmp_path), log=lines.append)
    scores = result["scores"]
    assert set(scores) == set(DATASET_METRICS)  # the 13 held-out datasets of METHOD.md
    for name, s in scores.items():
        assert s["metric"] == DATASET_METRICS[name]
        assert s["scored"] == 16 and s["failed"] == 0, name
        assert not math.isnan(s["value"]), (name, s["note"])
        upper = 1000.0 if s["metric"] == "cider" else 100.0
        assert 0.0 <= s["value"] <= upper, (name, s["value"])
    # ranking datasets: MRR over 100 VisDial candidates is above 1/100 and at most 1
    assert scores["visdial"]["value"] >= 1.0

    out = Path(result["out"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["scores"]["gqa"]["value"] == pytest.approx(scores["gqa"]["value"])
    table = (out / "results.md").read_text()
    assert "| nocaps | CIDEr |" in table and "119.9" in table
    predictions = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 13 * 16
    assert all(p["prob_yes"] is not None for p in predictions if p["dataset"] in ("vsr", "hateful_memes"))
    assert any("results (ours vs the paper" in line for line in lines)

    client = MlflowClient(trained_model["tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_run_id"] == trained_model["train_run_id"] and run.data.tags["model_version"] == "1"
    for name, s in scores.items():
        assert run.data.metrics[f"{name}/{s['metric']}"] == pytest.approx(s["value"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "results.md", "predictions.jsonl", "predictions"} <= artifacts
    sample = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions/sample.json", str(tmp_path))).read_text())
    assert len(sample["data"]) >= 13 and "image" in sample["columns"]


def test_bad_model_and_dataset_names_are_clear_errors(trained_model, tmp_path):
    with pytest.raises(ValueError, match="models:/nope@champion"):
        evaluate(_config(trained_model, tmp_path, model="models:/nope@champion"), log=lambda _: None)
    with pytest.raises(ValueError, match="not held-out datasets.*vqav2"):
        evaluate(_config(trained_model, tmp_path, datasets=["vqav2"]), log=lambda _: None)
