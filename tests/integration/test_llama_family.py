"""A Vicuna-style (LLaMA) LLM through the whole job on a real local Ray (marked `slow`: CI's `.ci/run`
runs it after the suite, `make test-slow`): the tiny model with `model.tiny.llm_family=llama`, whose
tokenizer puts <s> first and has no pad token, as LLaMA/Vicuna's do, trained by 2 workers with ZeRO-2
(one lost at step 3 and replaced), exported, registered and answering through the MLflow pyfunc
model and the serving model. The unit tests run every component on it; this checks the job."""

import io
import json
import math
from pathlib import Path

import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def test_a_llama_llm_trains_resumes_exports_and_answers(small_world, tmp_path):
    import pandas as pd
    from mlflow import MlflowClient
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    from components.config import load_config
    from components.pyfunc_model import load_registered
    from components.serving_model import Job, ServingModel
    from components.training import TrainConfig
    from pipelines.train import train

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = {
        "data": str(small_world / "prepared"), "storage": str(tmp_path / "runs"), "run_name": "llama",
        "mlflow.tracking_uri": tracking, "mlflow.registered_model": "vicuna-style",
        "model.tiny.llm_family": "llama", "model.tiny_cache": str(tmp_path / "cache"),
        "model.reader_steps": 30, "model.reader_batch_size": 32, "model.vision_steps": 10,
        "model.tiny.hidden_size": 48, "model.tiny.num_heads": 2,
        "global_batch_size": 8, "micro_batch_size": 4, "schedule.warmup_steps": 1, "schedule.total_steps": 4,
        "validation.every_steps": 4, "validation.max_samples": 8, "checkpoint.every_steps": 2,
        "fail_at_step": 3,  # the last worker exits once at step 3: replaced, resumed from the step-2 checkpoint
    }
    cfg = load_config(TrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    summary = train(cfg, log=lambda _: None)
    assert summary["resumed_from"] == [2]

    client = MlflowClient(tracking, registry_uri=tracking)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.params["model.tiny.llm_family"] == "llama"
    assert math.isfinite(run.data.metrics["loss"])

    export = Path(summary["export"])
    model = InstructBlipForConditionalGeneration.from_pretrained(export)
    processor = InstructBlipProcessor.from_pretrained(export)
    assert type(model.language_model).__name__ == "LlamaForCausalLM" and model.config.use_decoder_only_language_model
    assert processor.tokenizer.pad_token is None and processor.tokenizer.bos_token == "<s>"

    images = [_png((200, 0, 0)), _png((0, 0, 200))]
    questions = ["What color is the circle?", "How many squares are there in the picture? Answer with a number."]
    pyfunc = load_registered(tracking, "vicuna-style", "champion", model_config={"device": "cpu"})
    answers = pyfunc.predict(pd.DataFrame({"image": images, "instruction": questions}), params={"max_new_tokens": 3})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    serving = ServingModel.from_directory(str(export))
    jobs = [Job(pixels=serving.pixels([image]), instruction=q, max_new_tokens=n)
            for image, q, n in zip(images, questions, (2, 4))]
    assert serving.prompt_tokens(questions[0]) < serving.prompt_tokens(questions[1])
    results = serving.generate(jobs)  # one batch: the shorter prompt left-padded with <unk>
    for job, result in zip(jobs, results):
        assert result.batch_size == 2 and result.completion_tokens <= job.max_new_tokens
    # greedy answers in a batch equal the answers one at a time: the padding is masked out
    assert [r.text for r in results] == [serving.generate([job])[0].text for job in jobs]
