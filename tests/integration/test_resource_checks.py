"""Jobs asking for more than the Ray cluster has are refused (a local Ray) or warned about (a cluster)
instead of waiting for ever: training workers, serving replicas, evaluation actors. On a real Ray."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from components.config import ConfigError, load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _cpus(ray) -> str:
    return f"{ray.cluster_resources()['CPU']:g}"


@pytest.fixture
def no_cluster_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_training_workers_that_do_not_fit_are_refused_on_a_local_ray(local_ray, no_cluster_address):
    from components.training import TrainConfig
    from pipelines.train import check_workers

    lines = []
    check_workers(load_config(TrainConfig, overrides=["data=x"]), lines.append)  # the default: 2 x 1 CPU of 4
    assert lines == []
    gpu = load_config(TrainConfig, overrides=["data=x", "scaling.use_gpu=true"])
    with pytest.raises(ConfigError, match=re.escape(
            "scaling asks for 2 training workers: 2 x {CPU 1, GPU 1} and {CPU 1} free for the Ray Data tasks that "
            f"feed them, and 2 of these cannot be placed on this Ray (node 1: CPU {_cpus(local_ray)}, GPU 0); a local "
            "Ray never gets more")) as err:
        check_workers(gpu)
    assert "scaling.use_gpu=false" in str(err.value)
    large = load_config(TrainConfig, overrides=["data=x", "scaling.cpus_per_worker=3"])  # 2 x 3 CPUs, one node of 4
    with pytest.raises(ConfigError, match="1 of these cannot be placed") as err:
        check_workers(large)
    assert "ray.num_cpus" in str(err.value) and "use_gpu" not in str(err.value)
    # the workers fit, but hold every CPU: Ray Data could not feed them (measured: the job hung after its
    # first validation, Ray Data logging "Cluster resources are not enough to run any task")
    every_cpu = load_config(TrainConfig, overrides=["data=x", f"scaling.num_workers={_cpus(local_ray)}",
                                                    "global_batch_size=64", "micro_batch_size=16"])
    with pytest.raises(ConfigError, match=re.escape(f"{_cpus(local_ray)} x {{CPU 1}} and {{CPU 1}} free for the Ray "
                                                    "Data tasks that feed them, and 1 of these cannot be placed")):
        check_workers(every_cpu)


def test_on_a_cluster_the_job_is_only_warned_about(local_ray, no_cluster_address):
    """Connected to a cluster, whose autoscaler may add GPU nodes: a warning, and the job goes on."""
    from components.training import TrainConfig
    from pipelines.train import check_workers

    cfg = load_config(TrainConfig, overrides=["data=x", "scaling.use_gpu=true",
                                              f"ray.address={local_ray.get_runtime_context().gcs_address}"])
    lines = []
    check_workers(cfg, lines.append)
    (line,) = lines
    assert line.startswith("warning: scaling asks for 2 training workers") and "autoscaler" in line


@pytest.mark.parametrize("overrides, named", [
    (["deployment.gpus_per_replica=1"], "deployment.gpus_per_replica=0"),
    (["deployment.num_replicas=5"], "deployment.num_replicas"),
    (["deployment.autoscaling.enabled=true", "deployment.autoscaling.min_replicas=5",
      "deployment.autoscaling.max_replicas=6"], "deployment.autoscaling.min_replicas"),
])
def test_serving_replicas_that_do_not_fit_are_refused(local_ray, no_cluster_address, overrides, named):
    from components.serving_model import ServeConfig
    from pipelines.serve import check_replicas

    check_replicas(load_config(ServeConfig, overrides=[]), print)  # the default: one replica, 1 CPU
    with pytest.raises(ConfigError, match="the deployment asks for") as err:
        check_replicas(load_config(ServeConfig, overrides=overrides))
    assert named in str(err.value)


def test_a_serve_config_files_app_that_does_not_fit_is_warned_about(local_ray, no_cluster_address):
    """`serve run` / `serve deploy` build the app with `app_builder` on a Ray that may be a cluster: a
    warning in Serve's log naming the setting, and the app is still built."""
    import logging

    from pipelines.serve import app_builder

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    serve_log = logging.getLogger("ray.serve")
    serve_log.addHandler(handler)
    try:
        assert app_builder({"model": "/m"}) is not None and records == []  # the default fits
        assert app_builder({"model": "/m", "deployment.gpus_per_replica": 1}) is not None
    finally:
        serve_log.removeHandler(handler)
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("warning: the deployment asks for 1 replicas: 1 x {CPU 1, GPU 1}")
    assert "deployment.gpus_per_replica=0" in record.getMessage()


def test_evaluation_actors_that_do_not_fit_are_refused(local_ray, no_cluster_address):
    from components.evaluation import EvalConfig
    from pipelines.evaluate import check_actors

    check_actors(load_config(EvalConfig, overrides=["data=x"]), print)
    with pytest.raises(ConfigError, match=r"inference asks for 2 model actors: 2 x \{CPU 1, GPU 0.5\}") as err:
        check_actors(load_config(EvalConfig, overrides=["data=x", "inference.gpus_per_actor=0.5"]))
    assert "inference.gpus_per_actor=0" in str(err.value)
    with pytest.raises(ConfigError, match="free for the Ray Data tasks that feed them, and 1 of these"):
        check_actors(load_config(EvalConfig, overrides=["data=x", f"inference.actors={_cpus(local_ray)}"]))


def test_iblip_train_asking_for_gpus_on_a_cpu_machine_stops_before_the_pre_training(small_world, tmp_path):
    """The command line, on a local Ray of its own: one clear error (exit 2) while the tiny model would
    still be pre-training (minutes), instead of Ray Train waiting for GPUs for ever."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", "--data", str(small_world / "prepared"),
         "--storage", str(tmp_path / "runs"), "scaling.use_gpu=true", f"model.tiny_cache={tmp_path / 'cache'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "iblip train: error: scaling asks for 2 training workers: 2 x {CPU 1, GPU 1} and {CPU 1} free" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "cache").glob("tiny/t5-*/config.json"))  # stopped before the model was built


def test_iblip_run_serve_checks_the_replicas_before_the_first_step(local_ray, no_cluster_address, tmp_path):
    """With --serve, replicas that cannot start are named before anything runs (not after training)."""
    from components.workflow import WorkflowConfig
    from integration_support import free_port
    from pipelines.workflow import run_workflow

    cfg = load_config(WorkflowConfig, overrides=[
        f"work_dir={tmp_path / 'work'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"serve.port={free_port()}", "serve.deployment.gpus_per_replica=1"])
    with pytest.raises(ConfigError, match=re.escape("the deployment asks for 1 replicas: 1 x {CPU 1, GPU 1}")) as err:
        run_workflow(cfg, serve=True, log=lambda _: None)
    assert "serve.deployment.gpus_per_replica=0" in str(err.value)
    assert not (tmp_path / "work" / "sample_world").exists()  # no step ran
