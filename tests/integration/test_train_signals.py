"""`iblip train` stopped by a signal, as real processes (marked `slow`: CI's `.ci/run` runs them after
the suite, `make test-slow`).

SIGTERM is how a job is stopped outside a terminal (`kill`, `ray job stop`, Kubernetes); Ctrl-C sends
SIGINT to the terminal's process group. Both must end the job with one line saying so, the shell's
exit code, nothing half-written left behind, and a run that the same command resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from integration_support import (REPO, Output, foreground_job, processes_left_under, registered_step,
                                 stop_processes_under, wait_for_a_registered_checkpoint)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {"model.tiny.hidden_size": 48, "model.tiny.num_heads": 2, "model.vision_steps": 10}


def _args(overrides: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


def _launch(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "train", *args], cwd=REPO,
                            env={**env, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigterm_while_the_tiny_model_first_pretrains_ends_at_once(small_world, tmp_path):
    """The tiny LLM pre-trains in a thread while the job's own local Ray starts. SIGTERM then used to hit
    the handler ray.init installs: an abort with a C++ stack dump (exit -6), a daemon thread killed
    inside torch. Now: the pre-training stops at its next step, "terminated (SIGTERM)", exit 143, no
    cache entry and no staging folder, the local Ray gone."""
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix socket paths live under it
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp}
    cache = tmp_path / "cache"
    args = _args({"data": str(small_world / "prepared"), "storage": str(tmp_path / "runs"), "run_name": "term",
                  "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "model.tiny_cache": str(cache),
                  **TINY})  # the default 1500 reader steps: minutes
    proc = _launch(args, env, stdout=subprocess.PIPE)
    out = Output(proc)
    try:
        # both under way: Ray started (its SIGTERM handler installed), the LLM pre-training
        out.wait_for("Started a local Ray instance", "[model] pre-training the tiny t5 LLM", timeout_s=180)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        text = out.rest()
        assert code == 143, text[-3000:]
        assert "iblip train: terminated (SIGTERM)" in text, text[-3000:]
        for crash in ("Traceback", "Aborted", "SIGTERM received", "Fatal Python error"):
            assert crash not in text, text[-3000:]
        assert not any(p.name.startswith(".building") for p in cache.rglob("*"))
        assert not list(cache.rglob("config.json"))  # no model cached half pre-trained
        assert not processes_left_under(ray_tmp, timeout_s=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_processes_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ctrl_c_while_training_marks_the_run_killed_and_the_same_command_resumes(small_world, local_ray, tmp_path):
    """Ray Train's own Ctrl-C handler ended `fit` with SystemExit(1): exit 1 and no message, the MLflow run
    FAILED. Now "interrupted", exit 130, the MLflow run KILLED; the relaunch resumes from the last
    checkpoint Ray Train registered, in the same MLflow run."""
    from mlflow import MlflowClient

    from components.config import load_config
    from components.training import TrainConfig
    from pipelines.train import train

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = {
        "data": str(small_world / "prepared"), "storage": str(tmp_path / "runs"), "run_name": "ctrl-c",
        "mlflow.tracking_uri": tracking, "mlflow.register": False, "mlflow.log_every": 1,
        "ray.address": local_ray.get_runtime_context().gcs_address,
        "model.tiny_cache": str(tmp_path / "cache"), "model.reader_steps": 30, "model.reader_batch_size": 32, **TINY,
        "global_batch_size": 8, "micro_batch_size": 4, "schedule.warmup_steps": 1,
        "schedule.total_steps": 2000, "validation.every_steps": 2000, "validation.max_samples": 8,
        "checkpoint.every_steps": 2, "checkpoint.keep": 2,
    }
    log = tmp_path / "first.log"
    with open(log, "w") as first_out:
        # its own process group, as a terminal's foreground job: Ctrl-C signals the whole group
        first = _launch(_args(overrides), dict(os.environ), stdout=first_out, start_new_session=True,
                        preexec_fn=foreground_job)
    try:
        wait_for_a_registered_checkpoint(tmp_path / "runs" / "ctrl-c", first, log, timeout_s=240)
        os.killpg(first.pid, signal.SIGINT)
        code = first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "iblip train: interrupted" in text and "Traceback" not in text, text[-3000:]
    client = MlflowClient(tracking)
    (stopped,) = client.search_runs([client.get_experiment_by_name("instructblip").experiment_id])
    assert stopped.info.status == "KILLED"

    last = registered_step(tmp_path / "runs" / "ctrl-c")
    summary = train(load_config(TrainConfig, None, _args({**overrides, "schedule.total_steps": last + 2})),
                    log=lambda _: None)
    assert summary["resumed_from"] == [last] and summary["step"] == last + 2
    assert summary["mlflow_run_id"] == stopped.info.run_id
    assert client.get_run(stopped.info.run_id).info.status == "FINISHED"
