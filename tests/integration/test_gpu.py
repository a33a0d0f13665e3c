"""The GPU code paths, where a CUDA GPU is (`make test-gpu`; skipped without one, so the default suite
only collects them): training on one GPU in bf16 over NCCL with ZeRO-2 and ZeRO-3 (a worker lost and
replaced, its checkpoint restored, the export gathered), serving the model on the GPU (in process and
as a Serve replica that holds the GPU) and evaluation with inference actors on the GPU. The default
suite runs the same paths on CPU (gloo, fp32; ZeRO-3 and bf16 in tests/integration/test_ablate.py).

IBLIP_GPU_TESTS_ON_CPU=1 rehearses this file where no GPU is: the same tests with CPU expectations
(gloo, bf16 asked for explicitly, a float32 model on the CPU, no GPUs for replicas and actors), a
check of the tests themselves (`make test-gpu-rehearsal`).
"""

import base64
import io
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from integration_support import check_bf16_export, export_tiny_model

ON_GPU = os.environ.get("IBLIP_GPU_TESTS_ON_CPU") != "1"
# the device training and serving must report, the process-group backend, a served model's (device, dtype)
DEVICE, BACKEND, SERVED = ("cuda", "nccl", ("cuda:0", "bfloat16")) if ON_GPU else ("cpu", "gloo", ("cpu", "float32"))
GPUS = 1 if ON_GPU else 0

pytestmark = [pytest.mark.integration, pytest.mark.gpu,
              pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny model (LLM pre-trained briefly, so that it answers in words) exported in fp32."""
    return export_tiny_model(tmp_path_factory.mktemp("gpu-model") / "model", {"reader_steps": 150, "vision_steps": 20})


def _scene() -> bytes:
    from components.sample_world import scene as scenes

    return scenes.encode(scenes.draw(scenes.random_scene(random.Random(0), 1, 4), 160))


@pytest.mark.parametrize("stage", [2, 3])
def test_training_on_a_gpu_in_bf16_over_nccl(small_world, stage):
    from mlflow import MlflowClient

    from components.config import load_config
    from components.training import TrainConfig
    from pipelines.train import train

    tracking = f"sqlite:///{small_world}/mlflow.db"
    overrides = {
        "data": str(small_world / "prepared"), "storage": str(small_world / "runs"), "run_name": f"gpu-zero{stage}",
        "mlflow.tracking_uri": tracking, "mlflow.register": False,
        "model.reader_steps": 30, "model.vision_steps": 10, "model.tiny.hidden_size": 48, "model.tiny.num_heads": 2,
        # precision `auto` on GPUs: bf16 because the workers have GPUs (the rehearsal asks for bf16)
        "scaling.use_gpu": ON_GPU, "deepspeed.precision": "auto" if ON_GPU else "bf16",
        "scaling.num_workers": 1, "deepspeed.zero_stage": stage,
        "global_batch_size": 8, "micro_batch_size": 4, "schedule.warmup_steps": 1, "schedule.total_steps": 4,
        "validation.every_steps": 4, "validation.max_samples": 8, "checkpoint.every_steps": 2,
        "fail_at_step": 3,  # the worker exits once at step 3: replaced, resumed from the step-2 checkpoint
        "gradient_checkpointing": stage == 3,  # what a large LLM would run with
    }
    cfg = load_config(TrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    summary = train(cfg, log=lambda _: None)
    assert summary["resumed_from"] == [2]
    assert 0.0 <= summary["accuracy_after"] <= 1.0

    run = MlflowClient(tracking).get_run(summary["mlflow_run_id"])
    params = run.data.params
    ran = (params["runtime.device"], params["runtime.dist_backend"], params["runtime.precision"])
    assert ran == (DEVICE, BACKEND, "bf16")
    assert params["gradient_checkpointing"] == str(stage == 3).lower()
    assert math.isfinite(run.data.metrics["loss"]) and "val_exact_match" in run.data.metrics

    check_bf16_export(Path(summary["export"]).parent)


def test_the_serving_model_on_a_gpu(export):
    from PIL import Image

    from components.serving_model import Job, ServingModel

    model = ServingModel.from_directory(str(export), DEVICE)
    assert tuple(model.placement().values()) == SERVED
    image = _scene()
    questions = ["What color is the circle?", "A short image caption:", "What is in the picture?"]
    jobs = [Job(pixels=model.pixels([image]), instruction=q, max_new_tokens=n) for q, n in zip(questions, (2, 5, 8))]
    results = model.generate(jobs)  # one batch on the GPU
    assert len(results) == 3
    for job, result in zip(jobs, results):
        # each answer stops at its own limit, or earlier at the end-of-sequence token
        assert isinstance(result.text, str) and result.batch_size == 3
        if result.finish_reason == "length":
            assert result.completion_tokens == job.max_new_tokens
        else:
            assert result.finish_reason == "stop" and result.completion_tokens < job.max_new_tokens
    grid, png = model.attention(image, questions[0])
    side = model.spec.size
    assert Image.open(io.BytesIO(png)).size == (side, side) and len(grid) > 0
    assert model.health_check() > 0


def test_a_serve_replica_holds_the_gpu(local_ray, export):
    import requests
    from ray import serve

    from components.config import load_config
    from components.serving_model import ServeConfig
    from integration_support import free_port
    from pipelines.serve import start

    cfg = load_config(ServeConfig, "configs/serve.yaml", [f"model={export}", f"port={free_port()}",
                                                          f"deployment.gpus_per_replica={GPUS}"])
    url = start(cfg, log=lambda _: None)
    try:
        health = requests.get(url + "/healthz", timeout=120).json()
        assert health["status"] == "ok" and (health["device"], health["dtype"]) == SERVED
        body = {"model": cfg.model_name(), "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What color is the circle?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(_scene()).decode()}}]}]}
        reply = requests.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["role"] == "assistant"
    finally:
        serve.shutdown()


def test_evaluation_with_inference_actors_on_the_gpu(small_world, export, tmp_path):
    from components.config import load_config
    from components.evaluation import EvalConfig
    from pipelines.evaluate import evaluate

    overrides = {"data": str(small_world / "prepared"), "model": str(export), "out": str(tmp_path / "eval"),
                 "run_name": "gpu-eval", "max_samples": 8, "datasets": ["vsr", "msvd_qa", "nocaps"],
                 "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                 "inference.gpus_per_actor": GPUS, "inference.actors": 1, "inference.batch_size": 8}
    cfg = load_config(EvalConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    scores = evaluate(cfg, log=lambda _: None)["scores"]
    assert set(scores) == {"vsr", "msvd_qa", "nocaps"}
    for name, s in scores.items():
        assert s["scored"] == 8 and s["failed"] == 0 and not math.isnan(s["value"]), (name, s)
