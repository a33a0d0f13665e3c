"""The final model as an MLflow pyfunc: log into a run, register, load by alias, predict (real sqlite store)."""

import base64
import io
import json

import pandas as pd
import pytest
from PIL import Image

from components.model import TinyModelConfig, build_tiny
from components.pyfunc_model import InstructBlipPyfunc, load_registered, log_and_register, parse_input
from components.tracking import MLflowConfig, RunLogger, resolve_tracking_uri, start_run

TEXTS = [
    "what color is the square", "the square is red", "describe the image", "a blue circle on a white background",
    "how many shapes are there", "two", "is there a triangle", "yes", "no",
] * 4  # fmt: skip


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny random model exported, logged into a training run and registered as instructblip@champion."""
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pyfunc")
    model, processor = build_tiny(TEXTS, TinyModelConfig(hidden_size=32, num_heads=2, vocab_size=200))
    model_dir = root / "export"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    cfg = MLflowConfig(tracking_uri=f"sqlite:///{root}/mlflow.db", experiment="pyfunc-test")
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, "train-tiny")
    version = log_and_register(str(model_dir), run_id, uri, cfg.registered_model, cfg.alias)
    return {"uri": uri, "run_id": run_id, "version": version, "cfg": cfg, "model_dir": model_dir}


def test_log_register_and_predict_by_alias(registered):
    from mlflow import MlflowClient

    uri, cfg = registered["uri"], registered["cfg"]
    assert registered["version"] == 1
    client = MlflowClient(uri, registry_uri=uri)
    assert int(client.get_model_version_by_alias(cfg.registered_model, cfg.alias).version) == 1
    # the run is still RUNNING (the driver ends it after registering) and lists the model as an output
    run = client.get_run(registered["run_id"])
    assert run.info.status == "RUNNING"
    assert len(run.outputs.model_outputs) == 1

    model = load_registered(uri, cfg.registered_model, cfg.alias, model_config={"device": "cpu"})
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["image", "instruction"]
    rows = pd.DataFrame(
        {
            "image": [png((200, 0, 0)), base64.b64encode(png((0, 0, 200))).decode()],  # bytes, or base64 text
            "instruction": ["what color is the square", "describe the image"],
        }
    )
    answers = model.predict(rows, params={"max_new_tokens": 4})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # same answers as the exported directory itself gives: the pyfunc adds no behaviour of its own
    from components.inference import load_answerer

    direct = load_answerer(str(registered["model_dir"])).answer(
        [png((200, 0, 0)), png((0, 0, 200))], list(rows["instruction"]), max_new_tokens=4
    )
    assert list(answers) == direct

    # the REST path: `mlflow models serve` hands /invocations bodies to this handler, which
    # base64-decodes binary columns using the signature
    from mlflow.pyfunc.scoring_server import invocations

    body = json.dumps({
        "dataframe_split": {"columns": ["image", "instruction"],
                            "data": [[base64.encodebytes(png((200, 0, 0))).decode(), "what color is the square"]]},
        "params": {"max_new_tokens": 4},
    })  # fmt: skip
    response = invocations(body, "application/json", model, model.metadata.get_input_schema())
    assert response.status == 200, response.response
    assert json.loads(response.response)["predictions"] == list(model.predict(rows[:1], params={"max_new_tokens": 4}))

    RunLogger(registered["run_id"], uri).finish()
    # a second registration makes version 2 and moves the alias
    assert log_and_register(str(registered["model_dir"]), registered["run_id"], uri, cfg.registered_model, cfg.alias) == 2
    assert int(client.get_model_version_by_alias(cfg.registered_model, cfg.alias).version) == 2
    assert client.get_run(registered["run_id"]).info.status == "FINISHED"


def test_bad_rows_are_named(registered):
    cfg = registered["cfg"]
    model = load_registered(registered["uri"], cfg.registered_model, cfg.alias, model_config={"device": "cpu"})
    bad_image = pd.DataFrame({"image": [png((1, 2, 3)), b"not an image"], "instruction": ["a", "b"]})
    with pytest.raises(ValueError, match=r"row 1: image cannot be decoded"):
        model.predict(bad_image)
    bad_base64 = pd.DataFrame({"image": ["***"], "instruction": ["a"]})
    with pytest.raises(ValueError, match=r"row 0: image is a string but not valid base64"):
        model.predict(bad_base64)
    # MLflow's signature check rejects a missing column before the model runs
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="instruction"):
        model.predict(pd.DataFrame({"image": [png((1, 2, 3))]}))
    # ... and the model's own check says the same for direct callers
    with pytest.raises(ValueError, match="missing column"):
        parse_input(pd.DataFrame({"image": [png((1, 2, 3))]}))
    with pytest.raises(ValueError, match="row 0: instruction must be a string"):
        parse_input([{"image": png((1, 2, 3)), "instruction": None}])
    with pytest.raises(ValueError, match="max_new_tokens"):
        InstructBlipPyfunc().predict(None, bad_image, params={"max_new_tokens": 0})


def test_model_uris_resolve_to_the_exported_directory(registered, tmp_path):
    from components.model import load_pretrained
    from components.pyfunc_model import model_directory

    for uri in (f"models:/{registered['cfg'].registered_model}@{registered['cfg'].alias}",
                f"runs:/{registered['run_id']}/model"):
        local = model_directory(uri, registered["uri"], str(tmp_path / uri.split(":")[0]))
        model, processor = load_pretrained(local)
        assert model.config.num_query_tokens == processor.num_query_tokens
    assert model_directory(str(registered["model_dir"]), registered["uri"], str(tmp_path)) == str(registered["model_dir"])
    with pytest.raises(ValueError, match="runs:/0123456789abcdef/model"):
        model_directory("runs:/0123456789abcdef/model", registered["uri"], str(tmp_path / "x"))


def test_a_downloaded_model_is_removed_once_loaded(registered, tmp_path, monkeypatch):
    """Replicas and evaluation actors load a registered model from a download that does not outlive the load
    (each replica start used to leave a copy of the weights in the temporary directory)."""
    import os
    import tempfile

    from components.inference import load_answerer
    from components.pyfunc_model import local_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uri = f"models:/{registered['cfg'].registered_model}@{registered['cfg'].alias}"
    with local_model(uri, registered["uri"]) as model_dir:
        assert model_dir.startswith(str(tmp_path)) and os.path.isfile(os.path.join(model_dir, "config.json"))
        answerer = load_answerer(model_dir)
    assert list(tmp_path.iterdir()) == []
    # the model answers from memory, as the exported directory does
    images, questions = [png((200, 0, 0))], ["what color is the square"]
    expected = load_answerer(str(registered["model_dir"])).answer(images, questions, max_new_tokens=4)
    assert answerer.answer(images, questions, max_new_tokens=4) == expected
    with pytest.raises(RuntimeError, match="load failed"), local_model(uri, registered["uri"]):
        raise RuntimeError("load failed")
    assert list(tmp_path.iterdir()) == []
    # a directory (or an HF id) is handed over as it is, and kept
    with local_model(str(registered["model_dir"]), registered["uri"]) as model_dir:
        assert model_dir == str(registered["model_dir"])
    assert (registered["model_dir"] / "config.json").is_file()


def test_a_serving_replica_and_an_eval_actor_keep_no_download(registered, tmp_path, monkeypatch):
    """The classes Ray Serve and Ray Data instantiate, built here in-process from a registered model."""
    import tempfile

    from components.config import to_dict
    from components.evaluation import EvalConfig
    from components.serving_model import ServeConfig
    from pipelines.evaluate import EvalActor
    from pipelines.serve import InstructBlipServer

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uri = f"models:/{registered['cfg'].registered_model}@{registered['cfg'].alias}"
    # the class as written, under the ASGI wrapper Serve adds (whose __init__ needs Serve's event loop)
    server_class = InstructBlipServer.func_or_class.__mro__[1]
    assert server_class.__module__ == "pipelines.serve" and "ASGI" not in server_class.__mro__[1].__name__
    replica = object.__new__(server_class)
    server_class.__init__(replica, uri, registered["uri"], to_dict(ServeConfig(model=uri)))
    assert replica.model is not None and list(tmp_path.iterdir()) == []
    actor = EvalActor(uri, registered["uri"], to_dict(EvalConfig(data=str(tmp_path / "prepared"), model=uri)), {})
    assert actor.evaluator is not None and list(tmp_path.iterdir()) == []
