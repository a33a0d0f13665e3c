"""Training on prepared data whose images were damaged after `iblip prepare` checked them (marked `slow`:
`make test-slow`, after the suite). Such rows used to end the job: the worker fed the bad row failed, was
restarted `max_failures` times and failed again (measured: exit 1 after 2 min 16 s and 932 log lines).
Now they are set aside, named and counted, and training runs to the end on the rest."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _damage(prepared) -> set[str]:
    """Cut short the second image of every held-in validation file (all of them are validated below) and of
    two training sets' files (few enough for the stream's margin); their sample ids."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    held_in = {name for name, entry in manifest["datasets"].items() if entry["role"] == "held_in"}
    damaged = set()
    for path in sorted(prepared.glob("*/*/*.parquet")):
        split, dataset = path.parent.name, path.parent.parent.name
        if dataset not in held_in or not (split == "val" or (split == "train" and dataset in ("vqav2", "okvqa"))):
            continue
        table = pq.read_table(path)
        images, ids = table.column("image").to_pylist(), table.column("sample_id").to_pylist()
        for i, data in enumerate(images):
            if data and i == 1:
                images[i] = data[: len(data) // 3]
                damaged.add(ids[i])
        column = table.schema.get_field_index("image")
        pq.write_table(table.set_column(column, "image", pa.array(images, type=table.schema.field("image").type)), path)
    return damaged


def test_training_sets_aside_rows_whose_image_cannot_be_decoded(small_world, local_ray, tmp_path):
    from mlflow import MlflowClient

    from components.config import load_config
    from components.training import TrainConfig
    from pipelines.train import REJECTS, train

    prepared = tmp_path / "prepared"
    shutil.copytree(small_world / "prepared", prepared)
    damaged = _damage(prepared)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = {
        "data": str(prepared), "storage": str(tmp_path / "runs"), "run_name": "bad-images",
        "mlflow.tracking_uri": tracking, "mlflow.register": False,
        "ray.address": local_ray.get_runtime_context().gcs_address,
        "model.tiny_cache": str(tmp_path / "cache"), "model.reader_steps": 5, "model.vision_steps": 5,
        "model.tiny.hidden_size": 32, "model.tiny.num_heads": 2,
        "global_batch_size": 8, "micro_batch_size": 4, "schedule.warmup_steps": 1, "schedule.total_steps": 6,
        "validation.every_steps": 6, "validation.max_samples": 1000, "checkpoint.every_steps": 0,
    }
    cfg = load_config(TrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    lines = []
    summary = train(cfg, log=lines.append)
    assert summary["step"] == 6
    records = [json.loads(line) for f in (tmp_path / "runs" / "bad-images" / REJECTS).glob("*.jsonl")
               for line in f.read_text().splitlines()]
    met = {r["sample_id"] for r in records}
    damaged_val = {d for d in damaged if "/val/" in d}
    assert damaged_val <= met <= damaged  # every damaged row met (all validation ones are), and only those
    assert all("not a decodable image" in r["reason"] for r in records)
    assert summary["samples_set_aside"] == len(met)
    assert any(line.startswith(f"[train] warning: {len(met)} prepared samples were set aside because their images "
                               "cannot be decoded") for line in lines)
    client = MlflowClient(tracking)
    history = client.get_metric_history(summary["mlflow_run_id"], "samples_set_aside")
    assert [m.value for m in history] == [len(met)]
