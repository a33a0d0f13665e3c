"""The workflow (`iblip run`) as users submit it: ray_job.yaml on a real two-node Ray cluster, tracked in a
real `mlflow server`, checked through the MLflow client.

The `trained_model` fixture (conftest.py) submits the job twice: the first loses a training worker
(replaced; training resumes from its checkpoint) and then fails in evaluation, the second resumes at
evaluation. These tests check what both left behind.
"""

import json
from pathlib import Path

import pytest
from integration_support import REPO

from components.config import load_config
from components.workflow import WorkflowConfig
from pipelines.workflow import run_workflow

pytestmark = pytest.mark.integration
STEPS = ["sample_world", "prepare", "train", "evaluate", "register"]


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def test_a_failed_step_is_named_and_resubmitting_resumes_there(trained_model):
    failed, resumed = trained_model["attempts"]
    assert failed.returncode == 1 and "FAILED" in failed.stdout, failed.stdout[-3000:]
    said = failed.stdout + failed.stderr
    assert "step 'evaluate' failed" in said and "not held-out datasets" in said, said[-6000:]
    assert "resumes at 'evaluate'" in said
    log = resumed.stdout
    assert "SUCCEEDED" in log
    for step in ("sample_world", "prepare", "train"):
        assert f"[run] {step}: unchanged since" in log, step
    assert "[run] evaluate: running" in log and "[run] register: running" in log
    state = trained_model["state"]
    assert state["status"] == "succeeded" and all(state["steps"][s]["status"] == "succeeded" for s in STEPS)
    assert state["steps"]["train"]["attempts"] == 1


def test_training_survived_a_lost_worker_and_was_tracked(trained_model):
    """2 workers, ZeRO-2: the worker that exited at step 5 was replaced and the run resumed from its
    step-3 checkpoint; the export loads through from_pretrained; the MLflow training run is complete."""
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    trained = trained_model["state"]["steps"]["train"]["outputs"]
    assert trained["resumed_from"] == [3]
    export = Path(trained["export"])
    assert (export.parent / ".fault_injected").exists()
    model = InstructBlipForConditionalGeneration.from_pretrained(export)
    processor = InstructBlipProcessor.from_pretrained(export)
    assert model.config.qformer_config.hidden_size == 48 and processor.num_query_tokens == model.config.num_query_tokens
    initial = InstructBlipForConditionalGeneration.from_pretrained(export.parent / "initial_model")
    after, before = dict(model.named_parameters()), dict(initial.named_parameters())
    # trainable weights moved, frozen ones (ViT, LLM) did not
    assert not (after["query_tokens"] == before["query_tokens"]).all()
    for name in ("vision_model.embeddings.patch_embedding.weight", "language_model.shared.weight"):
        assert (after[name] == before[name]).all(), name

    client = _client(trained_model["tracking_uri"])
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["deepspeed.zero_stage"] == "2" and params["global_batch_size"] == "8"
    assert int(params["trainable_parameters"]) < int(params["total_parameters"])
    # what ran (tests/integration/test_gpu.py checks cuda / nccl / bf16 where a GPU is)
    assert (params["runtime.device"], params["runtime.dist_backend"], params["runtime.precision"]) == ("cpu", "gloo", "fp32")
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "val_loss", "val_exact_match", "accuracy_after"):
        assert key in run.data.metrics, key
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert sorted({m.step for m in client.get_metric_history(run.info.run_id, "loss")}) == [2, 4, 6]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"deepspeed_config.json", "train_summary.json"} <= artifacts
    assert run.inputs.dataset_inputs, "training data lineage (log_input) missing"


def test_a_real_mlflow_server_passes_the_reachability_check(trained_model):
    """The check every job makes first (the workflow above made it too) against `mlflow server`."""
    from components.tracking import check_reachable

    check_reachable(trained_model["tracking_uri"], timeout_s=10)  # raises ConfigError when unreachable


def test_the_mlflow_server_holds_one_parent_run_its_children_and_the_model(trained_model):
    client = _client(trained_model["tracking_uri"])
    state = trained_model["state"]
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "workflow"
    assert parent.data.params["train.schedule.total_steps"] == "6"
    assert {"accuracy_before", "accuracy_after", "eval.vsr", "eval.msvd_qa"} <= set(parent.data.metrics)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    # one child per step: the resumed training continued the failed attempt's run, it did not start another
    assert sorted(r.data.tags["stage"] for r in children) == sorted(STEPS)
    by_stage = {r.data.tags["stage"]: r for r in children}
    for step in STEPS:
        assert by_stage[step].info.status == "FINISHED", step
        assert parent.data.tags[f"step.{step}.run_id"] == by_stage[step].info.run_id
    train_run = by_stage["train"]
    assert train_run.info.run_id == trained_model["train_run_id"]
    assert by_stage["prepare"].data.metrics["rows_written"] > 0

    version = client.get_model_version_by_alias("instructblip", "champion")
    assert version.version == "1" and version.run_id == train_run.info.run_id
    assert version.tags["workflow_run_id"] == parent.info.run_id and version.tags["eval_run_id"] == by_stage["evaluate"].info.run_id
    assert "eval.vsr" in version.tags and "accuracy_after" in version.tags


def test_the_exported_directory_was_evaluated(trained_model):
    outputs = trained_model["state"]["steps"]["evaluate"]["outputs"]
    results = json.loads(open(outputs["results"]).read())
    assert results["model"] == trained_model["export"]  # an exported directory is a model URI too
    assert set(results["scores"]) == {"msvd_qa", "vsr"}
    run = _client(trained_model["tracking_uri"]).get_run(outputs["run_id"])
    assert run.data.params["model"] == trained_model["export"]


def test_running_it_again_skips_every_unchanged_step_then_serves(trained_model, local_ray):
    """In this process (the test session's Ray): nothing to redo; with --serve --detach the registered
    model is deployed and the URL and a ready-to-paste curl are printed."""
    import urllib.request

    from integration_support import free_port
    from ray import serve

    work = trained_model["job_env"]["IBLIP_WORK"]
    port = free_port()
    cfg = load_config(WorkflowConfig, str(REPO / "tests/integration/workflow_tiny.yaml"),
                      [f"work_dir={work}", f"mlflow.tracking_uri={trained_model['tracking_uri']}", f"serve.port={port}"])
    lines = []
    try:
        state = run_workflow(cfg, serve=True, detach=True, log=lines.append)
        assert sum("unchanged since" in line for line in lines) == len(STEPS)
        assert state["steps"]["register"]["output_id"] == trained_model["state"]["steps"]["register"]["output_id"]
        assert any(line.startswith(f"[run] browse the runs: open {trained_model['tracking_uri']}") for line in lines)
        usage = "\n".join(lines)
        url = f"http://127.0.0.1:{port}"
        assert f"Endpoint: {url}" in usage and f"curl -s {url}/v1/chat/completions" in usage
        with urllib.request.urlopen(f"{url}/healthz", timeout=30) as reply:
            assert reply.status == 200
    finally:
        serve.shutdown()
