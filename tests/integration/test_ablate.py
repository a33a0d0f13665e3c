"""`iblip ablate` on a real local Ray and MLflow store: variants trained from one initial model, evaluated, tabled.

The variants train with DeepSpeed ZeRO-3 in bf16 on 2 CPU workers, which also covers the code paths
a GPU run takes that the other training tests (ZeRO-2, fp32) do not: ZeRO-3's validation generate
with `synced_gpus` and the top-level parameters (the query tokens) gathered for it, the export of
gathered parameters, bf16 inputs and a bf16 export evaluated. Stage 1 differs from stage 2 only in
the DeepSpeed config (unit-tested); measured by hand, the three stages follow the same loss curve.
"""

import json
import signal
from pathlib import Path

import pytest
import torch
from integration_support import check_bf16_export

from components.config import load_config
from components.training import TrainConfig
from pipelines.ablate import ablate

# two trainings and evaluations, about 95 s: a real-process check (`make test-slow`), which keeps the suite
# under its 10 minutes
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_three_variants_share_the_start_and_fill_the_table(small_world, tmp_path):
    from mlflow import MlflowClient
    from safetensors.torch import load_file

    overrides = {
        "data": str(small_world / "prepared"), "storage": str(tmp_path / "runs"), "run_name": "abl",
        "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",  # a local store: quicker than the server
        "model.reader_steps": 5, "model.vision_steps": 5, "model.tiny.hidden_size": 32, "model.tiny.num_heads": 2,
        "deepspeed.zero_stage": 3, "deepspeed.precision": "bf16",
        "global_batch_size": 4, "micro_batch_size": 2, "schedule.warmup_steps": 1,
        "schedule.total_steps": 2, "validation.every_steps": 2, "validation.max_samples": 4, "checkpoint.every_steps": 0,
    }
    cfg = load_config(TrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    lines = []
    sigint = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a background launch
    # two of the three variants keep the suite short; every variant's config is unit-tested
    result = ablate(cfg, {"datasets": ["vsr"], "max_samples": 2, "inference.actors": 1}, ["no_instruction", "full"],
                    out=str(tmp_path / "ablation"), log=lines.append)
    assert list(result["results"]) == ["full", "no_instruction"]  # full first
    # Ray Train's SIGINT handler (abort the run) does not outlive the trainings: Ctrl-C still interrupts
    assert signal.getsignal(signal.SIGINT) is sigint
    for row in result["results"].values():
        assert set(row) == {"held_in", "vsr"}
    runs = tmp_path / "runs"
    # one initial model for all three: identical starting weights
    weights = [load_file(runs / f"abl-{v}" / "initial_model" / "model.safetensors") for v in ("full", "no_instruction")]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    # ZeRO-3 trained the trainable weights, left the frozen ones alone and exported them whole, in bf16,
    # from an fp32 initial model
    check_bf16_export(runs / "abl-full")
    assert weights[0]["query_tokens"].dtype == torch.float32
    options = json.loads((runs / "abl-no_instruction" / "model" / "training_options.json").read_text())
    assert options["instruction_aware"] is False

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    params = client.get_run(result["runs"]["no_instruction"]["train_run_id"]).data.params
    assert params["train_data.instruction_aware"] == "false" and params["train_data.balanced"] == "true"
    assert client.get_model_version_by_alias("instructblip-ablation", "no-instruction").run_id == \
        result["runs"]["no_instruction"]["train_run_id"]
    # the variants register under <name>-ablation only: the `champion` of <name> is never touched
    assert {m.name for m in client.search_registered_models()} == {"instructblip-ablation"}

    table = (tmp_path / "ablation" / "ablation.md").read_text()
    assert table.splitlines()[0] == "| variant | held-in avg | vsr |" and "w/o instruction-aware visual features" in table
    assert json.loads((tmp_path / "ablation" / "ablation.json").read_text())["results"] == result["results"]
    assert any("cells: ours (paper FlanT5-XL)" in line for line in lines)
