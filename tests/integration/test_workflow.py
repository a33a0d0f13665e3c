"""The workflow (`iblip run`) as users submit it: ray_job.yaml on a real two-node Ray cluster, tracked in a
real `mlflow server`, checked through the MLflow client.

The `trained_model` fixture (conftest.py) submits the job twice: the first submission fails in training
(injected), the second resumes. These tests check what both left behind.
"""

import json

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
    assert "step 'train' failed" in said and "resumes at 'train'" in said, said[-6000:]
    log = resumed.stdout
    assert "SUCCEEDED" in log
    for step in ("sample_world", "prepare"):
        assert f"[run] {step}: unchanged since" in log, step
    assert "[run] train: running (attempt 2, resuming)" in log
    state = trained_model["state"]
    assert state["status"] == "succeeded" and all(state["steps"][s]["status"] == "succeeded" for s in STEPS)
    # training went on from the checkpoint written before the injected failure
    assert state["steps"]["train"]["outputs"]["resumed_from"] == [3]
    assert state["steps"]["train"]["attempts"] == 2


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
    losses = sorted(m.step for m in client.get_metric_history(train_run.info.run_id, "loss"))
    assert losses[-1] == 6
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


def test_running_it_again_skips_every_unchanged_step(trained_model):
    work = trained_model["job_env"]["IBLIP_WORK"]
    cfg = load_config(WorkflowConfig, str(REPO / "tests/integration/workflow_tiny.yaml"),
                      [f"work_dir={work}", f"mlflow.tracking_uri={trained_model['tracking_uri']}"])
    lines = []
    state = run_workflow(cfg, log=lines.append)
    assert sum("unchanged since" in line for line in lines) == len(STEPS)
    assert state["steps"]["register"]["output_id"] == trained_model["state"]["steps"]["register"]["output_id"]
    assert any(line.startswith(f"[run] browse the runs: open {trained_model['tracking_uri']}") for line in lines)
