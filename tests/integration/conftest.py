import pytest


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
def trained_model(local_ray, tmp_path_factory):
    """The whole sample world prepared, and a tiny model trained on it for a few steps.

    The model is registered as `instructblip@champion` in a sqlite MLflow store of its own. Its LLM
    (hidden 48) is pre-trained for 150 steps: hidden 32 and 30 steps left it answering every prompt
    with </s> at once, which gives the serving tests nothing to stream.
    Shared by the tests that need a trained, registered model (evaluation, serving).
    """
    import json

    from components.config import load_config
    from components.preparation import PrepareConfig
    from components.sample_world.world import generate
    from components.training import TrainConfig
    from pipelines.prepare import run_prepare
    from pipelines.train import train

    root = tmp_path_factory.mktemp("world")
    raw, prepared = root / "raw", root / "prepared"
    generate(str(raw), per_dataset=16, seed=3, faults=False, log=lambda _: None)
    run_prepare(load_config(PrepareConfig, "configs/prepare.yaml", [f"raw={raw}", f"out={prepared}"]), log=lambda _: None)
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    overrides = {
        "data": str(prepared), "storage": str(root / "runs"), "run_name": "tiny", "mlflow.tracking_uri": tracking_uri,
        "model.reader_steps": 150, "model.vision_steps": 20, "model.tiny.hidden_size": 48, "model.tiny.num_heads": 2,
        "global_batch_size": 8, "micro_batch_size": 4, "schedule.warmup_steps": 2, "schedule.total_steps": 6,
        "validation.every_steps": 6, "validation.max_samples": 16, "checkpoint.every_steps": 0,
    }
    cfg = load_config(TrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    summary = train(cfg, log=lambda _: None)
    return {"prepared": prepared, "tracking_uri": tracking_uri, "model_uri": "models:/instructblip@champion",
            "export": summary["export"], "train_run_id": summary["mlflow_run_id"], "root": root}
