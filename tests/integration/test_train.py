"""`iblip train` on a real local Ray: 2 workers, DeepSpeed ZeRO-2 on CPU, a real MLflow store.

One short run is killed mid-way (a worker exits) and must resume from its checkpoint; the exported
directory must load through `from_pretrained`, and the MLflow run must hold the params, metrics,
artifacts and registered model. A relaunch under the same run name resuming from the last checkpoint
is checked by tests/integration/test_workflow.py (the resubmitted workflow resumes its training run).
"""

import json
from pathlib import Path

import pytest

from components.config import load_config
from components.preparation import PrepareConfig
from components.sample_world.world import generate
from components.training import TrainConfig
from pipelines.prepare import run_prepare
from pipelines.train import train

pytestmark = pytest.mark.integration

HELD_IN_SOURCES = ["coco_caption", "vqav2", "okvqa", "aokvqa", "ocrvqa"]


@pytest.fixture(scope="module")
def prepared(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    raw, out = root / "raw", root / "out"
    generate(str(raw), per_dataset=40, seed=1, faults=False, sources=HELD_IN_SOURCES, log=lambda _: None)
    cfg = load_config(PrepareConfig, "configs/prepare.yaml",
                      [f"raw={raw}", f"out={out}", "datasets=[coco_caption,vqav2,okvqa,aokvqa,ocrvqa]"])
    run_prepare(cfg, log=lambda _: None)
    return out


def _config(prepared, tmp_path, **overrides):
    base = {
        "data": str(prepared), "storage": str(tmp_path / "runs"), "run_name": "ft",
        "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "mlflow.system_metrics_interval": 1.0, "mlflow.log_every": 2,
        "model.reader_steps": 20, "model.vision_steps": 20, "model.tiny.hidden_size": 32, "model.tiny.num_heads": 2,
        "global_batch_size": 8, "micro_batch_size": 2,  # 2 workers x 2 x 2 accumulation steps
        "schedule.warmup_steps": 2, "schedule.total_steps": 8,
        "validation.every_steps": 4, "validation.max_samples": 24, "checkpoint.every_steps": 4,
        "log_every": 2,
    }
    base.update(overrides)
    return load_config(TrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in base.items()])


def test_fault_tolerant_run_resumes_and_is_tracked(prepared, tmp_path):
    from mlflow import MlflowClient
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    lines = []
    # the last worker exits at step 6: the run restarts from the step-4 checkpoint
    summary = train(_config(prepared, tmp_path, fail_at_step=6), log=lines.append)
    assert summary["step"] == 8
    assert summary["resumed_from"] == [4]
    assert (tmp_path / "runs" / "ft" / ".fault_injected").exists()
    assert 0.0 <= summary["accuracy_before"] <= 1.0 and 0.0 <= summary["accuracy_after"] <= 1.0
    assert any("exact match on held-in validation" in line for line in lines)

    export = Path(summary["export"])
    model = InstructBlipForConditionalGeneration.from_pretrained(export)
    processor = InstructBlipProcessor.from_pretrained(export)
    assert model.config.qformer_config.hidden_size == 32 and processor.num_query_tokens == model.config.num_query_tokens
    initial = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "runs" / "ft" / "initial_model")
    trained, frozen = dict(model.named_parameters()), dict(initial.named_parameters())
    # trainable weights moved, frozen ones (ViT, LLM) did not
    assert not (trained["query_tokens"] == frozen["query_tokens"]).all()
    for name in ("vision_model.embeddings.patch_embedding.weight", "language_model.shared.weight"):
        assert (trained[name] == frozen[name]).all(), name

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "ft"
    params = run.data.params
    assert params["deepspeed.zero_stage"] == "2" and params["global_batch_size"] == "8"
    assert int(params["trainable_parameters"]) < int(params["total_parameters"])
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "val_loss", "val_exact_match", "accuracy_after"):
        assert key in run.data.metrics, key
    assert any(k.startswith("system/") for k in run.data.metrics)
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert sorted({m.step for m in losses}) == [2, 4, 6, 8]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"deepspeed_config.json", "train_summary.json"} <= artifacts
    assert run.inputs.dataset_inputs, "training data lineage (log_input) missing"
    version = client.get_model_version_by_alias("instructblip", "champion")
    assert int(version.version) == summary["model_version"] == 1 and version.run_id == run.info.run_id


def test_bad_config_names_the_key(prepared, tmp_path):
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="global_batch_size"):
        train(_config(prepared, tmp_path, global_batch_size=6))
