"""The workflow's config and its step cache (`iblip run`): which steps can be skipped, and why.

A step is skipped when it finished successfully before with the same cache key. The key is a
content hash of the step's own config (without the keys the workflow fills in, like paths and
run names) and of its inputs: the raw data's file listing (path, size, modification time or
ETag), or the `output_id` of the upstream step. A step that actually runs gets a fresh
`output_id`, so everything downstream of a step that ran (or was forced) runs again, and
nothing downstream of a skipped step does. The code version is not part of the key: after
changing code, rerun with `--force STEP`.

The state lives in `<work_dir>/workflow_state.json` (any fsspec URI), written after every step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec

from components.config import ConfigError, doc, to_dict
from components.evaluation import EvalConfig
from components.preparation import PrepareConfig, RayConfig
from components.sample_world.world import MIN_PER_DATASET
from components.serving_model import ServeConfig
from components.training import TrainConfig

STEPS = ("sample_world", "prepare", "train", "evaluate", "register", "serve")
STATE_FILE = "workflow_state.json"
# config keys left out of a step's cache key: the workflow sets them itself, or they change how a
# step runs but not its result (a run resumed with more max_failures is the same training)
_NOT_IN_KEY = {
    "prepare": {"raw", "out", "ray"},
    "train": {"data", "storage", "run_name", "export", "ray", "mlflow", "fail_at_step", "max_failures", "log_every"},
    "evaluate": {"data", "model", "run_name", "out", "ray", "mlflow"},
}


@dataclass
class SampleWorldConfig:
    """The generated sample world (used when no raw data is given)."""

    per_dataset: int = doc("Records in each source's main split (the default training is tuned on 200).", 200)
    seed: int = doc("The world is a pure function of the seed.", 0)
    faults: bool = doc("Plant a few broken records per source (exercises prepare's reject path).", True)
    sources: list[str] = doc("Subset of raw sources to generate (empty = all 21).", default_factory=list)


@dataclass
class TrackingConfig:
    """MLflow settings that apply to every step of the workflow."""

    tracking_uri: str = doc(
        "Tracking store URI. Empty = the MLFLOW_TRACKING_URI environment variable, else "
        "sqlite:///<working dir>/mlflow.db.",
        "",
    )
    experiment: str = doc("Experiment of the workflow's parent run and of every step's child run.", "instructblip")
    artifact_location: str = doc("Artifact root for a newly created experiment ('' = MLflow's default, see train).", "")
    registered_model: str = doc("Model Registry name the register step uses.", "instructblip")
    alias: str = doc("Alias the register step points at the new version (what serving loads).", "champion")


@dataclass
class WorkflowConfig:
    """`iblip run`: sample world (when no raw data) -> prepare -> train -> evaluate -> register -> (serve).

    The step sections hold the stage configs, with the same keys as `iblip <stage> --show-config`;
    the workflow fills in the paths (under work_dir), run names, Ray and MLflow settings itself.
    """

    name: str = doc("Workflow name: prefix of the MLflow run names and of the training run.", "instructblip")
    work_dir: str = doc("Where the steps write (local path or fsspec URI): sample_world/, prepared/, runs/, eval/.",
                        "work_dirs/workflow")
    raw: str = doc("Raw datasets root (fsspec URI); empty = generate the sample world into <work_dir>/sample_world.", "")
    sample_world: SampleWorldConfig = doc("The generated sample world.", default_factory=SampleWorldConfig)
    # the stage sections lack their paths until the workflow fills them in: validated by validate() below
    prepare: PrepareConfig = doc("The prepare step (`iblip prepare` keys).", default_factory=PrepareConfig, validate=False)
    train: TrainConfig = doc("The train step (`iblip train` keys).", default_factory=TrainConfig, validate=False)
    evaluate: EvalConfig = doc("The evaluate step (`iblip evaluate` keys; 20 rows per dataset by default).",
                               default_factory=lambda: EvalConfig(max_samples=20), validate=False)
    serve: ServeConfig = doc("The serve step, run with --serve (`iblip serve` keys).", default_factory=ServeConfig,
                             validate=False)
    mlflow: TrackingConfig = doc("MLflow, for every step.", default_factory=TrackingConfig)
    ray: RayConfig = doc("How to reach Ray, for every step.", default_factory=RayConfig)

    def validate(self) -> None:
        if not self.name.strip() or any(c in self.name for c in "/'\"\\ "):
            raise ConfigError(f"name {self.name!r} must be non-empty, without spaces, quotes or slashes")
        if not self.work_dir.strip():
            raise ConfigError("work_dir must not be empty")
        if self.sample_world.per_dataset < MIN_PER_DATASET:
            raise ConfigError(f"sample_world.per_dataset must be >= {MIN_PER_DATASET}, got {self.sample_world.per_dataset}")
        prepared = self.path("prepared")
        fills = {"prepare": {"raw": self.raw_root(), "out": prepared}, "train": {"data": prepared},
                 "evaluate": {"data": prepared}, "serve": {}}
        for step, fill in fills.items():
            section = copy.deepcopy(getattr(self, step))
            for key, value in fill.items():
                setattr(section, key, value)
            try:
                section.validate()
            except ConfigError as exc:
                raise ConfigError(f"{step}: {exc}") from exc

    # ------------------------------------------------------------ where each step writes

    def path(self, *parts: str) -> str:
        root = self.work_dir.rstrip("/")
        return posixpath.join(root, *parts) if "://" in root else posixpath.join(_abspath(root), *parts)

    def raw_root(self) -> str:
        return self.raw or self.path("sample_world")

    def resolve_paths(self) -> None:
        """Make local work_dir and raw absolute (against the current directory), once."""
        self.work_dir = self.path()
        if self.raw and "://" not in self.raw:
            self.raw = _abspath(self.raw)


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(path)


# ---------------------------------------------------------------------------------- keys


def content_hash(obj: Any) -> str:
    """sha256 of a JSON-able object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def step_config(cfg: WorkflowConfig, step: str) -> dict[str, Any]:
    """The part of a step's config that decides its result (what the workflow fills in is left out)."""
    if step == "sample_world":
        return to_dict(cfg.sample_world)
    if step == "register":
        return {"registered_model": cfg.mlflow.registered_model, "alias": cfg.mlflow.alias}
    section = to_dict(getattr(cfg, step))
    return {k: v for k, v in section.items() if k not in _NOT_IN_KEY.get(step, set())}


def listing_fingerprint(uri: str) -> str:
    """A hash of every file under `uri`: relative path, size and modification time (or ETag).

    Raises:
        FileNotFoundError: nothing exists at `uri`.
    """
    fs, root = fsspec.core.url_to_fs(uri)
    if not fs.exists(root):
        raise FileNotFoundError(f"raw data not found: {uri}")
    entries = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        stamp = next((info[k] for k in ("mtime", "LastModified", "last_modified", "ETag", "etag", "md5", "created")
                      if info.get(k) is not None), None)
        entries.append([posixpath.relpath(path, root), info.get("size"), str(stamp)])
    return content_hash(entries)


# ---------------------------------------------------------------------------------- state


class WorkflowState:
    """What each step did last time: key, status, outputs, MLflow run, output_id."""

    def __init__(self, uri: str, data: dict[str, Any] | None = None) -> None:
        self.uri = uri
        self.data = data or {"steps": {}}

    @classmethod
    def load(cls, work_dir_uri: str) -> "WorkflowState":
        uri = posixpath.join(work_dir_uri.rstrip("/"), STATE_FILE)
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            return cls(uri)
        try:
            with fs.open(path, "r") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"workflow state {uri} is unreadable ({exc}); delete it to start over") from exc
        if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
            raise ConfigError(f"workflow state {uri} is not a workflow state file; delete it to start over")
        return cls(uri, data)

    def save(self) -> None:
        fs, path = fsspec.core.url_to_fs(self.uri)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with fs.open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, sort_keys=True)
        fs.mv(tmp, path)

    def step(self, name: str) -> dict[str, Any]:
        return self.data["steps"].get(name, {})

    def is_done(self, name: str, key: str) -> bool:
        record = self.step(name)
        return record.get("status") == "succeeded" and record.get("key") == key

    def begin(self, name: str, key: str, **fields: Any) -> dict[str, Any]:
        """Mark a step running; keeps the previous attempt's fields when it is the same key (a resume)."""
        previous = self.step(name)
        record = copy.deepcopy(previous) if previous.get("key") == key and previous.get("status") != "succeeded" else {}
        record.update(fields, key=key, status="running", started=time.time(), error="")
        record.setdefault("attempts", 0)
        record["attempts"] += 1
        self.data["steps"][name] = record
        self.save()
        return record

    def succeed(self, name: str, outputs: dict[str, Any]) -> dict[str, Any]:
        record = self.data["steps"][name]
        record.update(status="succeeded", outputs=outputs, output_id=uuid.uuid4().hex, finished=time.time())
        self.save()
        return record

    def fail(self, name: str, error: str) -> None:
        record = self.data["steps"].setdefault(name, {})
        record.update(status="failed", error=error, finished=time.time())
        self.save()
