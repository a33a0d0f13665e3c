"""Shared integration fixtures: a local Ray, a real multi-process Ray cluster, a real MLflow server,
and the trained model that the workflow submitted to that cluster registered in that server."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from integration_support import free_port, job_spec, local_cluster, make_small_world, stop_processes_under, submit


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray cluster shared by the integration tests.

    4 logical CPUs on a 2-core machine: Ray Data's tasks must never wait behind
    CPUs that other work holds (see README, "CPU budgeting").
    """
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_world(local_ray, tmp_path_factory):
    """A prepared sample world (the size of the integration tests' tiny workflow): `<root>/prepared`.

    IBLIP_SMALL_WORLD names one made beforehand (`tests/device/build_kit.py` makes it where the GPU
    checks cannot: there is no PyAV for the sample world's videos on the lent GPU machines)."""
    if os.environ.get("IBLIP_SMALL_WORLD"):
        made = Path(os.environ["IBLIP_SMALL_WORLD"])
        assert (made / "prepared" / "manifest.json").is_file(), f"IBLIP_SMALL_WORLD={made}: no prepared/manifest.json"
        return made
    return make_small_world(tmp_path_factory.mktemp("small-world"))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, artifacts served through the server)."""
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, cwd=root,
        # no background job runner (7 extra processes for MLflow's GenAI jobs, which these tests do not use)
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_processes_under(str(root))  # its worker processes


@pytest.fixture(scope="session")
def trained_model(local_ray, mlflow_server, tmp_path_factory):
    """The tiny workflow (workflow_tiny.yaml) submitted with ray_job.yaml to a two-node cluster, tracked
    in the MLflow server: the whole sample world prepared, a tiny model trained (2 workers, ZeRO-2),
    evaluated and registered as `instructblip@champion`.

    The first submission has a training worker exit at step 5 (Ray Train replaces it and the run
    resumes from its step-3 checkpoint) and an evaluation config that fails (a held-in dataset);
    the second, the same job without that, must skip the finished steps and resume at evaluation.
    Both submissions are returned for tests/integration/test_workflow.py. Shared by the tests that
    need a trained, registered model (evaluation, serving, ablation).
    """
    root = tmp_path_factory.mktemp("workflow")
    spec = job_spec(root)
    env = {"IBLIP_WORK": str(root / "work"), "IBLIP_CONFIG": "tests/integration/workflow_tiny.yaml",
           "MLFLOW_TRACKING_URI": mlflow_server}
    # a cluster of its own, stopped once the workflow is done: idle Ray processes slow the tests after
    with local_cluster() as cluster:
        failed = submit(cluster, spec, "--wait", env={**env, "IBLIP_RUN_ARGS": "train.fail_at_step=5 evaluate.datasets=[vqav2]"})
        resumed = submit(cluster, spec, "--wait", env=env)
    for i, attempt in enumerate((failed, resumed)):  # for a reader of a failing test
        (root / f"submission{i + 1}.log").write_text(attempt.stdout + attempt.stderr)
    assert resumed.returncode == 0, resumed.stdout[-6000:] + resumed.stderr[-3000:]
    state = json.loads((root / "work" / "workflow_state.json").read_text())
    trained = state["steps"]["train"]["outputs"]
    return {"prepared": root / "work" / "prepared", "tracking_uri": mlflow_server, "model_uri": "models:/instructblip@champion",
            "export": trained["export"], "train_run_id": trained["run_id"], "root": root, "state": state,
            "attempts": [failed, resumed], "job_env": env, "spec": spec}
