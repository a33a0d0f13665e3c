"""The trained model as an MLflow pyfunc model: (image, instruction) rows in, answers out.

`log_and_register` logs an exported model directory (what `iblip train` writes) into the
training run as a pyfunc model, registers it and points an alias at the new version, so
serving and evaluation load `models:/<name>@<alias>` and never a path. The `components`
package travels inside the logged model (`code_paths`), so it loads wherever MLflow, torch
and transformers are installed.

Input: a DataFrame with columns `image` (encoded image bytes, or the same base64-encoded, as
JSON clients send them) and `instruction` (text); parameter `max_new_tokens` (default 16)
and `num_beams` (default 1). Output: one answer string per row.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
from typing import Any, Iterator

import mlflow.pyfunc
import pandas as pd

# what `mlflow.pyfunc.load_model(uri, model_config=...)` may override at load time
DEFAULT_MODEL_CONFIG = {"device": "auto", "batch_size": 16}
# the packages the model's code imports; pinned to the versions it was logged with
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "pillow", "numpy", "pandas", "fsspec", "pyyaml")
MODEL_NAME = "model"  # the logged model's name inside the run


def _image_bytes(value: Any, row: int) -> bytes:
    """Row `row`'s image as encoded bytes; base64 text is decoded."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            # line breaks are allowed: MLflow's own JSON encoding of binary columns has them
            data = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"row {row}: image is a string but not valid base64 ({exc})") from exc
    elif value is None or (isinstance(value, float) and value != value):
        raise ValueError(f"row {row}: image is missing")
    else:
        raise ValueError(f"row {row}: image must be bytes or a base64 string, got {type(value).__name__}")
    if not data:
        raise ValueError(f"row {row}: image is empty")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:  # PIL raises several types for bad data
        raise ValueError(f"row {row}: image cannot be decoded ({type(exc).__name__}: {exc})") from exc
    return data


def parse_input(model_input: Any) -> tuple[list[bytes], list[str]]:
    """Check a prediction request and return (image bytes, instructions), row by row.

    Accepts a pandas DataFrame, a dict of columns, or a list of row dicts.

    Raises:
        ValueError: a column is missing, or a row's image or instruction is unusable (names the row).
    """
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    elif isinstance(model_input, list):
        model_input = pd.DataFrame.from_records(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise ValueError(f"expected a DataFrame with columns image, instruction; got {type(model_input).__name__}")
    missing = [c for c in ("image", "instruction") if c not in model_input.columns]
    if missing:
        raise ValueError(f"input is missing column(s) {', '.join(missing)} (has: {', '.join(map(str, model_input.columns))})")
    images, instructions = [], []
    for row, (image, instruction) in enumerate(zip(model_input["image"], model_input["instruction"])):
        if not isinstance(instruction, str):
            raise ValueError(f"row {row}: instruction must be a string, got {type(instruction).__name__}")
        images.append(_image_bytes(image, row))
        instructions.append(instruction)
    return images, instructions


class InstructBlipPyfunc(mlflow.pyfunc.PythonModel):
    """Answers (image, instruction) rows with an exported InstructBLIP directory.

    The directory is the artifact `model_dir`; it is loaded by `components.inference.load_answerer`
    (model, processor, and the collator options it was trained with). Model config: `device`
    ("auto" = CUDA when available, else CPU; or "cpu", "cuda:1", ...) and `batch_size`.
    """

    def load_context(self, context) -> None:
        import torch

        from components.inference import load_answerer

        config = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}
        device = config["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.batch_size = int(config["batch_size"])
        self.answerer = load_answerer(context.artifacts["model_dir"], device=device)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """One answer per input row, in order.

        Raises:
            ValueError: bad input (missing column, undecodable image, bad parameter), naming
                the row and the problem.
        """
        params = params or {}
        max_new_tokens = int(params.get("max_new_tokens", 16))
        num_beams = int(params.get("num_beams", 1))
        if max_new_tokens < 1 or num_beams < 1:
            raise ValueError(f"max_new_tokens and num_beams must be >= 1, got {max_new_tokens} and {num_beams}")
        images, instructions = parse_input(model_input)
        if not images:
            return []
        return self.answerer.answer(
            images, instructions, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=self.batch_size
        )


def signature():
    """Input: image (binary; JSON clients send base64), instruction (string). Output: string."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, "image"), ColSpec(DataType.string, "instruction")]),
        outputs=Schema([ColSpec(DataType.string)]),
        params=ParamSchema([ParamSpec("max_new_tokens", DataType.long, 16), ParamSpec("num_beams", DataType.long, 1)]),
    )


def input_example():
    """One row with a small generated PNG (MLflow runs it through the model when logging)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (180, 40, 40)).save(buf, format="PNG")
    return pd.DataFrame({"image": [buf.getvalue()], "instruction": ["What color is the image?"]})


def requirements() -> list[str]:
    """`REQUIREMENTS` pinned to the installed versions (local tags like +cpu dropped: pip picks the build)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


@contextlib.contextmanager
def _using(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model, register_model, load_model) pointed at one store, then restored."""
    before_tracking, before_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_tracking)
        mlflow.set_registry_uri(before_registry)


def log_and_register(model_dir: str, run_id: str, tracking_uri: str, registered_model: str, alias: str) -> int:
    """Log `model_dir` as a pyfunc model of run `run_id`, register it, point `alias` at it.

    The run's status is left as it was: MLflow's fluent logging reopens the run for the
    call, and a run still RUNNING (the driver ends it after registering) stays RUNNING.
    Call it with no fluent run active in this process (`mlflow.start_run`), and after the
    run's system-metrics monitor has stopped (it ends when the run is briefly not RUNNING).
    Logging loads the model once to check the input example, as serving would.

    Args:
        model_dir: exported model directory (local path or a URI MLflow can download).
        run_id: the training run.
        tracking_uri: store holding the run; also used as the Model Registry.
        registered_model: registry name (created when missing).
        alias: alias set on the new version, e.g. "champion".

    Returns:
        the new model version number.
    """
    import components

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    before = client.get_run(run_id).info
    with _using(tracking_uri):
        # log_model attaches the logged model to the active run and its experiment; no
        # system-metrics thread for this short reopening (MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING)
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=InstructBlipPyfunc(),
                artifacts={"model_dir": model_dir},
                code_paths=[os.path.dirname(os.path.abspath(components.__file__))],
                signature=signature(),
                input_example=input_example(),
                pip_requirements=requirements(),
                model_config=dict(DEFAULT_MODEL_CONFIG),
            )
        _restore_status(client, before)
        version = mlflow.register_model(info.model_uri, registered_model, tags={"source_run_id": run_id})
    client.set_registered_model_alias(registered_model, alias, version.version)
    return int(version.version)


def _restore_status(client, before) -> None:
    if before.status == "RUNNING":
        client.update_run(before.run_id, status="RUNNING")
    else:
        client.set_terminated(before.run_id, before.status, end_time=before.end_time)


def load_registered(tracking_uri: str, name: str, alias: str, model_config: dict[str, Any] | None = None):
    """The pyfunc model at `models:/<name>@<alias>` (e.g. model_config={"device": "cpu"})."""
    with _using(tracking_uri):
        return mlflow.pyfunc.load_model(f"models:/{name}@{alias}", model_config=model_config)


def is_mlflow_uri(uri: str) -> bool:
    """True for the model URIs MLflow resolves itself (`models:/name@alias`, `runs:/<id>/<path>`)."""
    return uri.startswith(("models:/", "runs:/"))


def model_directory(uri: str, tracking_uri: str, dst: str) -> str:
    """The exported model directory behind a model URI, ready for `load_pretrained`.

    An MLflow URI is downloaded into `dst` and the directory logged as the pyfunc model's
    `model_dir` artifact is returned; anything else (a directory, an fsspec URI, a Hugging Face
    id) is returned as it is.

    Raises:
        ValueError: the MLflow model is not one `log_and_register` wrote (no model_dir artifact),
            or the URI names no model (unknown name, alias or run), with MLflow's reason.
    """
    if not is_mlflow_uri(uri):
        return uri
    import yaml
    from mlflow.exceptions import MlflowException

    with _using(tracking_uri):
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
        except MlflowException as exc:
            raise ValueError(f"model {uri!r} cannot be loaded from {tracking_uri}: {exc.message}") from exc
    with open(os.path.join(local, "MLmodel")) as f:
        spec = yaml.safe_load(f)
    artifacts = (spec.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
    entry = artifacts.get("model_dir")
    if not entry:
        raise ValueError(f"model {uri!r} has no 'model_dir' artifact: it was not logged by `iblip train`")
    return os.path.join(local, entry["path"])


@contextlib.contextmanager
def local_model(uri: str, tracking_uri: str) -> Iterator[str]:
    """`model_directory` for as long as the block runs: load the model inside it.

    An MLflow model is downloaded into a temporary directory that is removed when the block ends,
    error or not (a serving replica or an evaluation actor holds the model in memory once loaded;
    every replica start, restart and autoscaling step used to leave a copy of the weights in /tmp,
    gigabytes each for a real LLM). Other URIs are yielded as they are and nothing is removed.

    Raises:
        ValueError: as `model_directory`.
    """
    if not is_mlflow_uri(uri):
        yield uri
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="iblip-model-") as tmp:
        yield model_directory(uri, tracking_uri, tmp)


def check_model(uri: str, tracking_uri: str, on_cluster: bool = False, log=print) -> dict[str, str]:
    """Fail early on a model URI that names nothing; returns tags linking the run to the model.
    Paths and Hugging Face ids as `components.model.check_model_path` (`on_cluster`, `log`: see there).

    Raises:
        ValueError: an MLflow URI that names no run or registered version, a local path that is no
            exported model directory, a string that is neither a path nor a Hugging Face id, or a hub
            id the hub does not have (or cannot be asked about) and the local cache does not hold.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.model import check_model_path

    if not is_mlflow_uri(uri):
        check_model_path(uri, "model", on_cluster, log)
        return {"model_uri": uri}
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        if uri.startswith("runs:/"):
            run_id = uri.removeprefix("runs:/").split("/")[0]
            client.get_run(run_id)
            return {"model_uri": uri, "model_run_id": run_id}
        name, _, ref = uri.removeprefix("models:/").partition("@")
        if ref:
            version = client.get_model_version_by_alias(name, ref)
        else:
            name, _, number = name.partition("/")
            version = client.get_model_version(name, number) if number else client.search_model_versions(
                f"name='{name}'", order_by=["version_number DESC"], max_results=1)[0]
    except (MlflowException, IndexError) as exc:
        message = getattr(exc, "message", str(exc))
        raise ValueError(f"model {uri!r} not found in {tracking_uri}: {message}") from exc
    return {"model_uri": uri, "model_version": str(version.version), "model_run_id": str(version.run_id)}
