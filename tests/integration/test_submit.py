"""`iblip submit` against a real multi-process Ray cluster (a head and a second node started with `ray start`).

The workflow job itself (ray_job.yaml) is submitted by the `trained_model` fixture and checked in
test_workflow.py; these are the submission mechanics.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from integration_support import REPO, Output, foreground_job, local_cluster, submit

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster():
    with local_cluster() as cluster:
        yield cluster


def _spec(tmp_path, entrypoint: str):
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""entrypoint: {entrypoint}
runtime_env:
  working_dir: {REPO}
  excludes: [".venv", "work_dirs", "mlruns", "mlflow.db", ".git", "*.egg-info"]
  env_vars:
    FROM_SUBMITTER: "${{SUBMITTER_VALUE}}"
metadata:
  test: submit
""")
    return spec


def test_submit_waits_for_success_on_a_two_node_cluster(ray_cluster, tmp_path):
    probe = ("python -c \"import os, ray, components.serving; ray.init(); "
             "print('nodes', len([n for n in ray.nodes() if n['Alive']]), os.environ['FROM_SUBMITTER'])\"")
    out = submit(ray_cluster, _spec(tmp_path, probe), "--wait", env={"SUBMITTER_VALUE": "forty-two"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nodes 2 forty-two" in out.stdout  # the job saw both nodes, the repo and the submitter's variable
    assert "SUCCEEDED" in out.stdout and "raysubmit_" in out.stdout


def test_failed_job_exits_nonzero_and_no_wait_returns_at_once(ray_cluster, tmp_path):
    env = {"SUBMITTER_VALUE": "x"}
    failed = submit(ray_cluster, _spec(tmp_path, "python -c 'raise SystemExit(3)'"), "--wait", env=env)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    queued = submit(ray_cluster, _spec(tmp_path, "python -c 'print(1)'"), env=env)
    assert queued.returncode == 0 and "submitted raysubmit_" in queued.stdout


def test_ctrl_c_while_waiting_stops_following_not_the_job(ray_cluster, tmp_path):
    """Ctrl-C on `iblip submit --wait` ends the command (exit 130) and says how to stop the job, which
    goes on running on the cluster."""
    def ray_job(*args):
        return subprocess.run([str(Path(sys.executable).with_name("ray")), "job", *args, "--address",
                               ray_cluster["address"]], env=ray_cluster["env"], capture_output=True, text=True,
                              timeout=120)

    # the job's line is built at run time: the entrypoint itself (echoed by `[submit] submitted`) must not match
    spec = _spec(tmp_path, "python -c \"import time; print('job', 'started', flush=True); time.sleep(300)\"")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "submit", str(spec), "--wait", "--address",
                             ray_cluster["address"]], cwd=REPO, env={**ray_cluster["env"], "SUBMITTER_VALUE": "x"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=foreground_job)
    out = Output(proc)
    job = None
    try:
        out.wait_for("[submit] logs: ", timeout_s=180)
        out.wait_for("job started", timeout_s=180)
        assert not any("job started" in line for line in out.lines if line.startswith("[submit] "))
        job = next(line.split()[2] for line in out.lines if line.startswith("[submit] submitted "))
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
        text = out.rest()
        assert code == 130, text[-2000:]
        assert f"stopped following {job}; the job keeps running" in text, text[-2000:]
        assert f"ray job stop --address {ray_cluster['address']} {job}" in text
        assert "iblip submit: interrupted" in text
        status = ray_job("status", job)
        assert "RUNNING" in status.stdout + status.stderr, status.stdout + status.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        if job:
            ray_job("stop", job)


def test_ctrl_c_just_after_submission_still_names_the_job(ray_cluster, tmp_path, monkeypatch):
    """The job exists as soon as it is submitted: a Ctrl-C that lands before the log stream starts
    (while the submission lines print) says so and how to stop the job, as one during the stream does."""
    from pipelines.submit import load_job_spec, submit as submit_job

    for name in ("RAY_AUTH_MODE", "RAY_TMPDIR", "RAY_AUTH_TOKEN"):  # the cluster's token, as the CLI finds it
        if name in ray_cluster["env"]:
            monkeypatch.setenv(name, ray_cluster["env"][name])
    monkeypatch.setenv("SUBMITTER_VALUE", "x")
    spec = load_job_spec(str(_spec(tmp_path, "python -c 'import time; time.sleep(300)'")))
    said: list[str] = []

    def log(line: str) -> None:
        said.append(line)
        if line.startswith("[submit] logs: "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        submit_job(spec, ray_cluster["address"], wait=True, log=log)
    job = said[0].split()[2]
    assert job.startswith("raysubmit_")
    assert said[-1].startswith(f"[submit] stopped following {job}; the job keeps running"), said
    subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "stop", "--address", ray_cluster["address"],
                    job], env=ray_cluster["env"], capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_job_stop_ends_a_training_job_cleanly(ray_cluster, small_world, tmp_path):
    """`ray job stop` (what KubeRay does when a RayJob is deleted) sends SIGTERM to the job's driver and
    SIGKILL 3 s later: within that, `iblip train` says so, marks its MLflow run KILLED and exits, and the
    cluster's CPUs are free again (its training workers belonged to the driver's job)."""
    import json
    import time

    from mlflow import MlflowClient

    def ray(*args):
        return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], env=ray_cluster["env"],
                              capture_output=True, text=True, timeout=120)

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = {"data": str(small_world / "prepared"), "storage": str(tmp_path / "runs"), "run_name": "stopped",
                 "mlflow.tracking_uri": tracking, "model.tiny.hidden_size": 48, "model.tiny.num_heads": 2,
                 "model.vision_steps": 10, "model.reader_steps": 30, "schedule.total_steps": 1000}
    command = "python -m pipelines.train " + " ".join(f"'{k}={json.dumps(v)}'" for k, v in overrides.items())
    out = submit(ray_cluster, _spec(tmp_path, command), env={"SUBMITTER_VALUE": "x"})
    assert out.returncode == 0, out.stdout + out.stderr
    job = next(line.split()[2] for line in out.stdout.splitlines() if line.startswith("[submit] submitted "))
    deadline = time.monotonic() + 300
    while "[train] step " not in (logs := ray("job", "logs", "--address", ray_cluster["address"], job).stdout):
        assert time.monotonic() < deadline and "FAILED" not in ray("job", "status", "--address", ray_cluster["address"],
                                                                     job).stdout, logs[-3000:]
        time.sleep(2)
    stop = ray("job", "stop", "--address", ray_cluster["address"], job)
    assert "was stopped" in stop.stdout + stop.stderr, stop.stdout + stop.stderr
    logs = ray("job", "logs", "--address", ray_cluster["address"], job).stdout
    assert "iblip train: terminated (SIGTERM)" in logs, logs[-3000:]
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("instructblip").experiment_id])
    assert run.info.status == "KILLED"
    deadline = time.monotonic() + 60
    while True:
        status = ray("status", "--address", ray_cluster["gcs"]).stdout
        if " 0.0/8.0 CPU" in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
