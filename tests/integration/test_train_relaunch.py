"""Relaunching a killed `iblip train` under its run name resumes it (marked `slow`: CI's `.ci/run` runs
it after the suite, `make test-slow`).

The first launch is a real driver process, joined to the test session's local Ray, killed with SIGKILL
once its first checkpoint is complete (a lost node or a cancelled job: nothing gets to clean up). The
second launch, under the same run name, must resume from the last checkpoint the first one reported
(Ray Train restores it from `<storage>/<run name>`), with the run's own initial model, continue the same
MLflow run (left RUNNING by the killed driver) and finish it."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from integration_support import wait_for_a_registered_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOTAL_STEPS, EVERY = 60, 2  # steps take ~0.1 s: the kill lands early in the run


def test_a_killed_job_relaunched_under_its_name_resumes_its_checkpoint_and_mlflow_run(small_world, local_ray,
                                                                                    tmp_path):
    from mlflow import MlflowClient
    from transformers import InstructBlipForConditionalGeneration

    from components.config import load_config
    from components.training import TrainConfig
    from pipelines.train import train

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = {
        "data": str(small_world / "prepared"), "storage": str(tmp_path / "runs"), "run_name": "relaunch",
        "mlflow.tracking_uri": tracking, "mlflow.register": False, "mlflow.log_every": 1,
        "ray.address": local_ray.get_runtime_context().gcs_address,
        "model.tiny_cache": str(tmp_path / "cache"), "model.reader_steps": 30, "model.reader_batch_size": 32,
        "model.vision_steps": 10, "model.tiny.hidden_size": 48, "model.tiny.num_heads": 2,
        "global_batch_size": 8, "micro_batch_size": 4, "schedule.warmup_steps": 1,
        "schedule.total_steps": TOTAL_STEPS, "validation.every_steps": TOTAL_STEPS, "validation.max_samples": 8,
        "checkpoint.every_steps": EVERY, "checkpoint.keep": 2,
    }
    args = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "pipelines.train", *args], cwd=REPO, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        registered = wait_for_a_registered_checkpoint(tmp_path / "runs" / "relaunch", first, log, timeout_s=240)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    client = MlflowClient(tracking)
    (killed,) = client.search_runs([client.get_experiment_by_name("instructblip").experiment_id])
    assert killed.info.status == "RUNNING"  # nobody was left to close it
    steps_before = {m.step for m in client.get_metric_history(killed.info.run_id, "loss")}

    lines = []
    cfg = load_config(TrainConfig, None, args)
    summary = train(cfg, log=lines.append)

    assert f"[train] reusing the run's initial model {tmp_path / 'runs' / 'relaunch' / 'initial_model'}" in lines
    (resumed,) = summary["resumed_from"]  # once, from the last checkpoint the killed launch reported
    assert resumed % EVERY == 0 and registered <= resumed < TOTAL_STEPS  # later ones may have landed before the kill
    assert steps_before and max(steps_before) >= resumed  # it had trained at least that far
    assert summary["mlflow_run_id"] == killed.info.run_id  # the same MLflow run, continued
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    after = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    assert max(after) == TOTAL_STEPS and set(range(resumed + 1, TOTAL_STEPS + 1)) <= after
    model = InstructBlipForConditionalGeneration.from_pretrained(summary["export"])
    assert model.config.num_query_tokens == 16

    # launched again as it is: finished, nothing to train (before: the model validated, exported and
    # registered again, in a new MLflow run)
    again = []
    assert train(load_config(TrainConfig, None, args), log=again.append) == summary
    assert any(f"run relaunch finished already: {TOTAL_STEPS} of {TOTAL_STEPS} steps" in line for line in again), again
    assert len(client.search_runs([killed.info.experiment_id])) == 1

    # with more steps: it trains on from its final checkpoint, in a new MLflow run (the first one is FINISHED)
    more = load_config(TrainConfig, None, [*args, f"schedule.total_steps={TOTAL_STEPS + 4}"])
    further = train(more, log=lambda _: None)
    assert further["resumed_from"] == [resumed, TOTAL_STEPS] and further["step"] == TOTAL_STEPS + 4
    assert further["mlflow_run_id"] != summary["mlflow_run_id"]
    losses = {m.step for m in client.get_metric_history(further["mlflow_run_id"], "loss")}
    assert losses == set(range(TOTAL_STEPS + 1, TOTAL_STEPS + 5))
