"""MLflow tracking for training runs: the run, its parameters, metrics, data lineage and tables.

The training job is split across processes, so nothing here relies on MLflow's global
"active run":

- the driver calls `start_run(cfg, run_name, tags)` once; it creates (or, on a re-launch with
  the same run name, reopens) the run and returns its id;
- worker rank 0 builds `RunLogger(run_id, tracking_uri, ...)`, which talks to that run through
  an `MlflowClient` and samples system metrics (CPU, memory, disk, network, GPU) in a thread.

Pass the tracking URI the driver resolved (`resolve_tracking_uri`) to the workers: a Ray
worker runs in another working directory and may not see the driver's environment.

The default store is `sqlite:///<cwd>/mlflow.db`, MLflow 3's own default: unlike the
deprecated `./mlruns` file store it supports the Model Registry without a server.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from components.config import ConfigError, doc

_log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation), repeated so this module imports without mlflow
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

PARENT_RUN_TAG = "mlflow.parentRunId"  # how MLflow (and its UI) nests a child run under its parent
_ALIAS = re.compile(r"^[\w\-]+$")
_FINISHED_STATUSES = ("FINISHED", "FAILED", "KILLED")


@dataclass
class MLflowConfig:
    """Where and how a training run is tracked in MLflow."""

    tracking_uri: str = doc(
        "Tracking store URI. Empty = the MLFLOW_TRACKING_URI environment variable, else "
        "sqlite:///<working dir>/mlflow.db (a local store with a Model Registry, no server).",
        "",
    )
    experiment: str = doc("Experiment the runs are grouped under (created when missing).", "instructblip")
    artifact_location: str = doc(
        "Artifact root for a newly created experiment. Empty = `mlruns/<experiment>/` next to a "
        "local sqlite database, or the tracking server's default.",
        "",
    )
    registered_model: str = doc("Model Registry name the final model is registered under.", "instructblip")
    alias: str = doc("Registry alias pointed at the newly registered version (what serving loads).", "champion")
    system_metrics: bool = doc("Log CPU, memory, disk, network and GPU use as system/* metrics.", True)
    system_metrics_interval: float = doc("Seconds between system-metrics samples.", 10.0)
    log_every: int = doc("Log training metrics every this many optimizer steps.", 10)
    register: bool = doc("Register the final model (`iblip run` turns this off and registers after evaluating).", True)
    parent_run_id: str = doc("Nest the run under this MLflow run ('' = top level; `iblip run` sets its own run).", "")

    def validate(self) -> None:
        if not self.experiment.strip():
            raise ConfigError("mlflow.experiment must not be empty")
        if not self.registered_model.strip():
            raise ConfigError("mlflow.registered_model must not be empty")
        # the registry's own rules, checked here so a bad alias fails at launch, not after training
        if not _ALIAS.match(self.alias) or self.alias.lower() == "latest" or re.match(r"^[vV]\d+$", self.alias):
            raise ConfigError(
                f"mlflow.alias {self.alias!r} must be letters, digits, '_' or '-', "
                "and not 'latest' or a version name like 'v3'"
            )
        if self.log_every < 1:
            raise ConfigError("mlflow.log_every must be >= 1")
        if not self.system_metrics_interval > 0:
            raise ConfigError("mlflow.system_metrics_interval must be > 0 seconds")


def resolve_tracking_uri(cfg: MLflowConfig) -> str:
    """The tracking URI to use: the config's, else $MLFLOW_TRACKING_URI, else a local sqlite store.

    Local stores come back with absolute paths, so the URI means the same database in a Ray
    worker (which runs in another working directory) as on the driver.
    """
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return "sqlite:///" + os.path.abspath("mlflow.db")
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return "sqlite:///" + os.path.abspath(path)
        return uri
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        # a bare directory: MLflow's (deprecated) file store
        return "file://" + os.path.abspath(uri)
    return uri


def check_reachable(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """Fail at once when an MLflow tracking server cannot be reached.

    MLflow's client retries a refused connection with back-off for about 4 minutes (measured)
    before it reports anything, so a mistyped `mlflow.tracking_uri` would surface only after
    minutes of work. Jobs call this first. Only http(s) servers are probed (their `/health`
    page, once); any HTTP answer counts as reachable (a proxy may ask for credentials), only a
    failed connection does not. Local stores are not probed.

    Raises:
        ConfigError: naming the server (without any credentials in the URI) and the reason.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"the MLflow tracking URI's port is not a number (host {host})") from None
    # the server without credentials, query or fragment: what error messages show and the probe asks
    shown = parts._replace(netloc=host + (f":{port}" if port else ""), query="", fragment="").geturl()
    try:
        # a GET to the tracking server the user configured (their own config, not request input)
        with urllib.request.urlopen(shown.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # the server answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"the MLflow tracking server {shown} is not reachable ({reason}): start it, or set "
            "mlflow.tracking_uri (or MLFLOW_TRACKING_URI) to one that is; '' uses a local store") from None


def _sqlite_path(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        return tracking_uri[len("sqlite:///") :]
    return None


def _artifact_location(cfg: MLflowConfig, tracking_uri: str) -> str | None:
    if cfg.artifact_location:
        return cfg.artifact_location
    db = _sqlite_path(tracking_uri)
    if not db:
        return None
    # MLflow would use ./mlruns of whichever process creates the experiment; next to the
    # database keeps a local store's runs and artifacts together, one folder per experiment
    return os.path.join(os.path.dirname(db), "mlruns", re.sub(r"[^\w.\-]", "_", cfg.experiment))


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

# A key is a secret when one of its words is one of these ...
_SECRET_WORDS = frozenset(
    {"secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials", "apikey", "authorization", "cookie"}
)
# ... or when its last word is `token` or `key` (`hf_token`, `api_key`, `access_key`, plain
# `key`), unless the word before says it is a tokenizer token or a data field: `pad_token`,
# `image_key`. Plurals and longer words (`max_new_tokens`, `tokenizer`, `keys`) never match.
_SECRET_LAST_WORDS = frozenset({"token", "key"})
_NOT_SECRET_QUALIFIERS = frozenset(
    {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "image", "video", "query", "special", "start", "end",
     "decoder", "placeholder", "text", "label", "target", "instruction", "answer", "question", "caption",
     "input", "output", "id", "sort", "group", "partition", "column", "field", "dataset", "join", "primary",
     "foreign", "cache", "dict", "metric", "split", "shuffle", "seed", "random"}
)  # fmt: skip
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)[^/@\s]+@")
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def _words(name: str) -> list[str]:
    """`hfToken` / `HF_TOKEN` / `hf-token` -> ['hf', 'token']."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(name))
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_secret_key(name: str) -> bool:
    """True when a config key names a secret (the rule is at `_SECRET_WORDS`)."""
    words = _words(name)
    if any(w in _SECRET_WORDS for w in words):
        return True
    if words and words[-1] in _SECRET_LAST_WORDS:
        return len(words) == 1 or words[-2] not in _NOT_SECRET_QUALIFIERS
    return False


def _param_value(value: Any) -> str:
    # YAML-style scalars (true, null, 0.5), so a logged value can be pasted back as an override
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = _URL_USERINFO.sub(r"\g<scheme>***@", text)  # s3://user:pass@host -> s3://***@host
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        marker = "...[truncated]"
        text = text[: MAX_PARAM_VALUE_LENGTH - len(marker)] + marker
    return text


def _param_key(path: list[str]) -> str:
    key = _BAD_KEY_CHARS.sub("_", ".".join(path))
    return key[:MAX_KEY_LENGTH]


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A nested config mapping as MLflow params: dotted keys, string values.

    - Mappings nest (`mixing.weights.okvqa`); lists of mappings are indexed (`custom.0.name`);
      other lists and scalars become one YAML-style string (`[a, b]`, `true`, `null`).
    - Any key on the path that names a secret (`api_key`, `hf_token`, `password`, ...) drops
      that value or whole section; credentials inside URLs are masked.
    - Values longer than MLflow's limit are truncated; keys lose characters MLflow rejects.
    """
    out: dict[str, str] = {}

    def walk(node: Any, path: list[str]) -> None:
        if path and is_secret_key(path[-1]):
            return
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, path + [str(k)])
        elif isinstance(node, (list, tuple)) and node and all(isinstance(v, Mapping) for v in node):
            for i, v in enumerate(node):
                walk(v, path + [str(i)])
        elif path:
            out[_param_key(path)] = _param_value(list(node) if isinstance(node, tuple) else node)

    walk(config, [])
    return out


def redact(config: Any) -> Any:
    """A copy of a nested config with secret values replaced by '***' (for config artifacts)."""
    if isinstance(config, Mapping):
        return {k: "***" if is_secret_key(str(k)) else redact(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact(v) for v in config]
    if isinstance(config, str):
        return _URL_USERINFO.sub(r"\g<scheme>***@", config)
    return config


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_status(tracking_uri: str, run_id: str) -> str | None:
    """The status of an MLflow run (RUNNING, FINISHED, FAILED, KILLED), or None when the store has no
    such run or it was deleted."""
    from mlflow.exceptions import MlflowException

    try:
        info = _client(tracking_uri).get_run(run_id).info
    except MlflowException:
        return None
    return None if info.lifecycle_stage == "deleted" else info.status


def get_or_create_experiment(cfg: MLflowConfig, tracking_uri: str) -> str:
    """The id of experiment `cfg.experiment`, created (with its artifact location) when missing."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ConfigError(
                f"mlflow.experiment {cfg.experiment!r} is deleted in {tracking_uri}; restore it or pick another name"
            )
        return experiment.experiment_id
    try:
        return client.create_experiment(cfg.experiment, artifact_location=_artifact_location(cfg, tracking_uri))
    except MlflowException:
        # another launch created it between our lookup and create
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


def start_run(cfg: MLflowConfig, run_name: str = "", tags: Mapping[str, str] | None = None) -> str:
    """Create the training run (driver side) and return its id; the run is left RUNNING.

    When the experiment's latest run called `run_name` did not finish (FAILED, KILLED, or
    still RUNNING after a crashed driver), that run is reopened instead, so re-launching a job
    under the same name continues one MLflow run: training metrics go on at the resumed
    steps, system metrics after their last step (`RunLogger`), and new tags are added. A
    FINISHED run is never reopened. An empty `run_name` lets MLflow pick one.

    Raises:
        ConfigError: the experiment is deleted, or `run_name` holds both kinds of quote.
    """
    tracking_uri = resolve_tracking_uri(cfg)
    db = _sqlite_path(tracking_uri)
    if db:
        os.makedirs(os.path.dirname(db) or ".", exist_ok=True)
    client = _client(tracking_uri)
    experiment_id = get_or_create_experiment(cfg, tracking_uri)
    tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if cfg.parent_run_id:
        tags[PARENT_RUN_TAG] = cfg.parent_run_id
    if run_name:
        previous = _latest_run_named(client, experiment_id, run_name)
        if previous is not None and previous.info.status != "FINISHED":
            run_id = previous.info.run_id
            _log.info("reopening MLflow run %s (%s, was %s)", run_name, run_id, previous.info.status)
            client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            return run_id
    run = client.create_run(experiment_id, run_name=run_name or None, tags=tags)
    return run.info.run_id


def _latest_run_named(client, experiment_id: str, run_name: str):
    if "'" not in run_name:
        quoted = f"'{run_name}'"
    elif '"' not in run_name:
        quoted = f'"{run_name}"'
    else:
        raise ConfigError(f"run name {run_name!r} must not contain both ' and \"")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.run_name = {quoted}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


# ---------------------------------------------------------------------------------------------
# Rank-0 side
# ---------------------------------------------------------------------------------------------


def manifest_table(manifest: Mapping[str, Any]):
    """The prepare manifest as a DataFrame, one row per dataset split (what a run trained on)."""
    import pandas as pd

    rows = []
    for name, entry in manifest.get("datasets", {}).items():
        for split, stats in entry.get("splits", {}).items():
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "role": entry.get("role"),
                    "category": entry.get("category"),
                    "task": entry.get("task"),
                    "records_written": int(stats.get("records_written", 0)),
                    "records_rejected": int(stats.get("records_rejected", 0)),
                    "rows_written": int(stats.get("rows_written", 0)),
                    "bytes": int(stats.get("bytes", 0)),
                    "mixing_probability": float(stats.get("mixing_probability", math.nan)),
                }
            )
    columns = ["dataset", "split", "role", "category", "task", "records_written", "records_rejected",
               "rows_written", "bytes", "mixing_probability"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _dataset_source(source_uri: str):
    """MLflow's source for `source_uri`, or a plain URI source for schemes MLflow lacks (memory://, hf://)."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    class UriDatasetSource(DatasetSource):
        """Any fsspec URI, recorded as-is."""

        def __init__(self, uri: str) -> None:
            self.uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "uri"

        def load(self, **kwargs):
            raise NotImplementedError("open the URI with fsspec")

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            return cls(str(raw_source))

        def to_dict(self) -> dict[str, Any]:
            return {"uri": self.uri}

        @classmethod
        def from_dict(cls, source_dict):
            return cls(source_dict["uri"])

    try:
        return resolve_dataset_source(source_uri)
    except MlflowException:
        return UriDatasetSource(source_uri)


def _pil_image(data: Any, row: int):
    from PIL import Image

    if isinstance(data, Image.Image):
        return data
    try:
        image = Image.open(io.BytesIO(bytes(data)))
        image.load()
    except Exception as exc:  # PIL raises several types for bad data
        raise ValueError(f"predictions row {row}: image cannot be decoded ({exc})") from exc
    # the table viewer gets a PNG and a WebP; both want RGB(A)
    return image if image.mode in ("RGB", "RGBA") else image.convert("RGB")


class RunLogger:
    """Logs into an existing run through `MlflowClient`; safe in any process (a Ray worker).

    Args:
        run_id: the run `start_run` returned on the driver.
        tracking_uri: the URI the driver resolved (`resolve_tracking_uri`).
        system_metrics: sample CPU/memory/disk/network/GPU into `system/*` metrics until
            `finish()`; their steps continue after a reopened run's.
        system_metrics_interval: seconds between samples (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
            overrides it, as in MLflow).
    """

    def __init__(self, run_id: str, tracking_uri: str, system_metrics: bool = False,
                 system_metrics_interval: float = 10.0) -> None:  # fmt: skip
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.client = _client(tracking_uri)
        self._monitor = None
        if system_metrics:
            self._monitor = self._start_system_metrics(system_metrics_interval)

    @classmethod
    def from_config(cls, cfg: MLflowConfig, run_id: str, tracking_uri: str) -> "RunLogger":
        """A logger with the config's system-metrics settings."""
        return cls(run_id, tracking_uri, cfg.system_metrics, cfg.system_metrics_interval)

    def _start_system_metrics(self, interval: float):
        import importlib.util

        if importlib.util.find_spec("psutil") is None:
            _log.warning("system metrics are off: the psutil package is not installed")
            return None
        # the monitor `mlflow.start_run(log_system_metrics=True)` uses, without an active run
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval, resume_logging=True, tracking_uri=self.tracking_uri
        )
        monitor.start()
        return monitor

    # -- values ---------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as params, through `flatten_params` (so never a secret).

        MLflow params cannot change. On a reopened run, values equal to the logged ones are
        skipped, and a changed value is kept as tag `changed_param.<key>` with a warning
        (the run's params keep describing its first launch).
        """
        from mlflow.entities import Param, RunTag

        flat = flatten_params(params)
        logged = self.client.get_run(self.run_id).data.params
        new = {k: v for k, v in flat.items() if k not in logged}
        changed = {k: v for k, v in flat.items() if k in logged and logged[k] != v}
        if changed:
            _log.warning("params changed since this run was first launched (kept as changed_param.* tags): %s",
                         ", ".join(sorted(changed)))  # fmt: skip
        items = sorted(new.items())
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + MAX_PARAMS_PER_BATCH]])
        tags = [RunTag(_param_key(["changed_param", k]), v) for k, v in sorted(changed.items())]
        for i in range(0, len(tags), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=tags[i : i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at `step` in one batch (torch / numpy scalars are fine)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_param_key([str(k)]), float(v), now, int(step)) for k, v in metrics.items()]
        for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i : i + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (mutable, unlike params)."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    # -- artifacts ------------------------------------------------------------------------------

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write `obj` as a JSON or YAML artifact (by `artifact_file`'s extension)."""
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_input_manifest(self, manifest: Mapping[str, Any], source_uri: str, context: str = "training",
                           name: str = "prepared") -> str:  # fmt: skip
        """Record the prepared data this run reads as a run input (training data lineage).

        The dataset is the manifest's per-split table (`manifest_table`): its digest changes
        when the prepared data's composition changes, not when it is merely re-prepared. The
        full manifest is kept as artifact `inputs/manifest.json`.

        Args:
            manifest: the prepare manifest (`components.manifest.read_manifest(out)`).
            source_uri: where the prepared data lives (the `--out` of `iblip prepare`).
            context: the input's role, shown in the run's inputs ("training", "validation").
            name: the dataset's name in MLflow.

        Returns:
            the dataset's digest.
        """
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():
            # MLflow's hint that integer columns cannot hold missing values: counts never miss
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            dataset = mlflow.data.from_pandas(manifest_table(manifest), source=_dataset_source(source_uri), name=name)
            entity = dataset._to_mlflow_entity()  # what mlflow.log_input sends, for a given run id
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        if manifest.get("created"):
            tags.append(InputTag("manifest_created", str(manifest["created"])))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags)])
        self.log_dict(redact(dict(manifest)), "inputs/manifest.json")
        return dataset.digest

    def log_predictions_table(self, rows: Sequence[Mapping[str, Any]], step: int | None = None,
                              artifact_file: str | None = None) -> str:  # fmt: skip
        """Log sample predictions as an MLflow table with an image column.

        Each row holds `image` (encoded bytes or a PIL image), `instruction`, `target` and
        `prediction`; other keys become extra columns. MLflow stores each image as PNG + WebP
        artifacts under `table_images/` and the table as JSON, which the UI's artifact and
        evaluation views render with thumbnails.

        Args:
            rows: the predictions.
            step: the training step; names the file `predictions/step_<step>.json`.
            artifact_file: explicit artifact path (.json); logging to an existing one appends.

        Returns:
            the table's artifact path.

        Raises:
            ValueError: a row lacks a column or its image cannot be decoded (names the row).
        """
        import pandas as pd

        if artifact_file is None:
            artifact_file = f"predictions/step_{step:07d}.json" if step is not None else "predictions/table.json"
        records = []
        for i, row in enumerate(rows):
            missing = [c for c in ("image", "instruction", "target", "prediction") if c not in row]
            if missing:
                raise ValueError(f"predictions row {i}: missing {', '.join(missing)}")
            record = {k: v for k, v in row.items() if k != "image"}
            record["image"] = _pil_image(row["image"], i)
            records.append(record)
        if not records:
            return artifact_file
        columns = ["image", "instruction", "target", "prediction"]
        columns += [c for c in records[0] if c not in columns]
        self.client.log_table(self.run_id, pd.DataFrame(records, columns=columns), artifact_file)
        return artifact_file

    # -- end ------------------------------------------------------------------------------------

    def stop_system_metrics(self) -> None:
        """Stop sampling and flush the samples taken so far."""
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None

    def finish(self, status: str = "FINISHED") -> None:
        """Stop system metrics and mark the run FINISHED, FAILED or KILLED."""
        if status not in _FINISHED_STATUSES:
            raise ValueError(f"status must be one of {_FINISHED_STATUSES}, got {status!r}")
        self.stop_system_metrics()
        self.client.set_terminated(self.run_id, status)

    def end(self, error: BaseException | None = None) -> None:
        """`finish` after the job's outcome: FINISHED without an `error`, KILLED when it is Ctrl-C or
        SIGTERM (a KeyboardInterrupt), FAILED otherwise."""
        self.finish("FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(exc)
