"""MLflow tracking helpers against a real local sqlite store (no mocks)."""

import io
import json
import os
import time
import uuid

import pytest
from PIL import Image

from components.config import ConfigError, from_dict
from components.tracking import (
    MLflowConfig,
    RunLogger,
    check_reachable,
    flatten_params,
    is_secret_key,
    manifest_table,
    redact,
    resolve_tracking_uri,
    start_run,
)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    # one database for the module: creating MLflow's schema takes seconds
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture
def cfg(tracking_uri):
    # a fresh experiment per test keeps run-name lookups independent
    return MLflowConfig(tracking_uri=tracking_uri, experiment=f"test-{uuid.uuid4().hex[:8]}")


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def png(color=(200, 30, 30), size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


MANIFEST = {
    "version": 1,
    "created": "2026-01-01T00:00:00Z",
    "config": {"mixing": {"weights": {"okvqa": 2.0}}, "storage": {"api_key": "hunter2"}},
    "datasets": {
        "coco_caption": {
            "role": "held_in", "category": "image_captioning", "task": "caption",
            "splits": {
                "train": {"records_read": 10, "records_written": 9, "records_rejected": 1, "rows_written": 9,
                          "bytes": 1000, "sqrt_weight": 3.0, "multiplier": 1.0, "mixing_probability": 0.6},
                "val": {"records_read": 3, "records_written": 3, "records_rejected": 0, "rows_written": 3, "bytes": 300},
            },
        },
        "okvqa": {
            "role": "held_in", "category": "knowledge_vqa", "task": "vqa",
            "splits": {"train": {"records_read": 4, "records_written": 4, "records_rejected": 0, "rows_written": 4,
                                 "bytes": 400, "sqrt_weight": 2.0, "multiplier": 2.0, "mixing_probability": 0.4}},
        },
    },
}  # fmt: skip


# --- config ------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    assert from_dict(MLflowConfig, {}).alias == "champion"
    for bad in ({"alias": "latest"}, {"alias": "v3"}, {"alias": "has space"}, {"log_every": 0},
                {"experiment": " "}, {"system_metrics_interval": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            from_dict(MLflowConfig, bad)
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(MLflowConfig, {"tracking_url": "x"})


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(MLflowConfig()) == f"sqlite:///{tmp_path}/mlflow.db"
    # relative paths become absolute so a Ray worker (other working dir) opens the same store
    assert resolve_tracking_uri(MLflowConfig(tracking_uri="sqlite:///runs/m.db")) == f"sqlite:///{tmp_path}/runs/m.db"
    assert resolve_tracking_uri(MLflowConfig(tracking_uri="http://mlflow:5000")) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert resolve_tracking_uri(MLflowConfig()) == "http://from-env:5000"
    assert resolve_tracking_uri(MLflowConfig(tracking_uri="sqlite:////x/y.db")) == "sqlite:////x/y.db"


# --- params ------------------------------------------------------------------------------------


def test_secret_key_rule():
    for secret in ("api_key", "apiKey", "APIKEY", "hf_token", "HF_TOKEN", "access_token", "password",
                   "db_password", "client_secret", "secret_access_key", "credentials", "private-key", "key",
                   "github_token", "auth_token", "sas_token", "encryption_key", "token"):  # fmt: skip
        assert is_secret_key(secret), secret
    for public in ("keys", "key_field", "max_new_tokens", "max_target_tokens", "tokenizer", "token_id",
                   "num_tokens", "monkey", "keyword", "sort_keys", "weights", "okvqa", "pad_token", "eos_token",
                   "image_token", "image_key", "text_key", "sort_key", "pad_token_id", "private_key_path"):  # fmt: skip
        assert not is_secret_key(public), public


def test_flatten_params_nesting_values_and_secrets():
    config = {
        "model": {"name": "tiny", "tiny": {"hidden_size": 32, "tie": True, "extra": None}},
        "mixing": {"weights": {"okvqa": 2.0, "aokvqa": 0.5}, "keys": ["okvqa", "aokvqa"]},
        "datasets": [],
        "custom": [{"name": "mine", "files": {"train": "s3://b/train.jsonl"}}],
        "storage": {"api_key": "hunter2", "endpoint": "https://user:pw@minio:9000/x",
                    "credentials": {"user": "u", "pass": "p"}},
        "hf_token": "hf_abc",
        "long": "x" * 7000,
    }  # fmt: skip
    flat = flatten_params(config)
    assert flat["model.name"] == "tiny"
    assert flat["model.tiny.hidden_size"] == "32"
    assert flat["model.tiny.tie"] == "true" and flat["model.tiny.extra"] == "null"
    assert flat["mixing.weights.okvqa"] == "2.0"
    assert flat["mixing.keys"] == '["okvqa", "aokvqa"]'  # a list named `keys` is not a secret
    assert flat["datasets"] == "[]"
    assert flat["custom.0.files.train"] == "s3://b/train.jsonl"
    assert flat["storage.endpoint"] == "https://***@minio:9000/x"
    assert len(flat["long"]) == 6000 and flat["long"].endswith("[truncated]")
    dumped = json.dumps(flat)
    assert "hunter2" not in dumped and "hf_abc" not in dumped and "pw@" not in dumped
    assert not [k for k in flat if "api_key" in k or "credentials" in k or "hf_token" in k]
    assert all(isinstance(v, str) for v in flat.values())
    assert redact(config)["storage"]["api_key"] == "***" and redact(config)["hf_token"] == "***"


# --- runs --------------------------------------------------------------------------------------


def test_start_run_reopens_unfinished_run_with_same_name(cfg):
    uri = resolve_tracking_uri(cfg)
    first = start_run(cfg, "sft-tiny", {"stage": "train"})
    run = client(uri).get_run(first)
    assert run.info.status == "RUNNING" and run.info.run_name == "sft-tiny" and run.data.tags["stage"] == "train"
    # the experiment's artifacts live next to the sqlite database, not in the caller's cwd
    db_dir = os.path.dirname(uri[len("sqlite:///") :])
    assert run.info.artifact_uri.startswith(os.path.join(db_dir, "mlruns", cfg.experiment, first))

    RunLogger(first, uri).finish("FAILED")
    again = start_run(cfg, "sft-tiny", {"attempt": "2"})
    assert again == first
    run = client(uri).get_run(again)
    assert run.info.status == "RUNNING" and run.data.tags["attempt"] == "2"
    assert start_run(cfg, "other-name") != first  # other names get their own run

    RunLogger(again, uri).finish("FINISHED")
    assert start_run(cfg, "sft-tiny") != first  # a finished run is never reopened


def test_run_logger_params_metrics_dict(cfg):
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, "values")
    log = RunLogger(run_id, uri)
    log.log_params({"schedule": {"lr": 1e-5, "warmup_steps": 1000}, "auth": {"hf_token": "secret!"}})
    for step in range(3):
        log.log_metrics({"train/loss": 2.0 - step, "train/lr": 1e-5}, step=step)
    log.log_dict({"schedule": {"lr": 1e-5}}, "config/train.yaml")

    # a re-launch with a changed value: params stay, the new value is kept as a tag
    log.log_params({"schedule": {"lr": 2e-5, "warmup_steps": 1000}, "max_new_tokens": 16})
    log.finish()

    c = client(uri)
    run = c.get_run(run_id)
    assert run.data.params == {"schedule.lr": "1e-05", "schedule.warmup_steps": "1000", "max_new_tokens": "16"}
    assert run.data.tags["changed_param.schedule.lr"] == "2e-05"
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "train/loss")] == [(0, 2.0), (1, 1.0), (2, 0.0)]
    assert run.info.status == "FINISHED"
    local = c.download_artifacts(run_id, "config/train.yaml")
    with open(local) as f:
        assert "lr: 1.0e-05" in f.read()


def test_input_manifest_is_a_run_input(cfg):
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, "lineage")
    with RunLogger(run_id, uri) as log:
        digest = log.log_input_manifest(MANIFEST, "s3://bucket/prepared", context="training")
        # memory:// (tests, notebooks) is not an MLflow source type: recorded as a plain URI
        log.log_input_manifest(MANIFEST, "memory://prepared-x", context="validation", name="prepared-mem")
        # the digest follows the data's composition, not the time it was prepared
        assert log.log_input_manifest({**MANIFEST, "created": "2027-05-05T00:00:00Z"}, "s3://bucket/prepared") == digest
        grown = json.loads(json.dumps(MANIFEST))
        grown["datasets"]["okvqa"]["splits"]["train"]["records_written"] = 5
        assert log.log_input_manifest(grown, "s3://bucket/prepared", name="prepared-grown") != digest
    inputs = client(uri).get_run(run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    train = by_name["prepared"]
    assert train.dataset.digest == digest
    assert {t.key: t.value for t in train.tags}["mlflow.data.context"] == "training"
    assert json.loads(train.dataset.source)["uri"] == "s3://bucket/prepared"
    assert json.loads(train.dataset.profile)["num_rows"] == 3
    assert json.loads(by_name["prepared-mem"].dataset.source) == {"uri": "memory://prepared-x"}
    # the manifest is kept whole, minus secrets
    with open(client(uri).download_artifacts(run_id, "inputs/manifest.json")) as f:
        kept = json.load(f)
    assert kept["datasets"]["okvqa"]["splits"]["train"]["mixing_probability"] == 0.4
    assert kept["config"]["storage"]["api_key"] == "***"
    table = manifest_table(MANIFEST)
    assert list(table["dataset"]) == ["coco_caption", "coco_caption", "okvqa"]
    assert list(table["split"]) == ["train", "val", "train"]


def test_predictions_table_with_images(cfg):
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, "table")
    rows = [
        {"image": png(), "instruction": "What color is it?", "target": "red", "prediction": "red", "dataset": "vqav2"},
        {"image": png((0, 0, 255)), "instruction": "Describe.", "target": "blue", "prediction": "a", "dataset": "vqav2"},
    ]
    with RunLogger(run_id, uri) as log:
        path = log.log_predictions_table(rows, step=100)
        with pytest.raises(ValueError, match="row 1: image cannot be decoded"):
            log.log_predictions_table([rows[0], {**rows[1], "image": b"not an image"}], step=200)
        with pytest.raises(ValueError, match="row 0: missing prediction"):
            log.log_predictions_table([{"image": png(), "instruction": "x", "target": "y"}], step=300)
    assert path == "predictions/step_0000100.json"
    c = client(uri)
    with open(c.download_artifacts(run_id, path)) as f:
        table = json.load(f)
    assert table["columns"] == ["image", "instruction", "target", "prediction", "dataset"]
    assert [r[3] for r in table["data"]] == ["red", "a"]
    image_cell = table["data"][0][0]
    assert image_cell["type"] == "image"
    with open(c.download_artifacts(run_id, image_cell["filepath"]), "rb") as f:
        assert Image.open(f).size == (12, 10)
    # MLflow's table index (what the UI lists as tables) knows the file
    assert path in c.get_run(run_id).data.tags["mlflow.loggedArtifacts"]


def test_system_metrics_for_a_run_created_elsewhere(cfg):
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, "system")  # as the driver would
    log = RunLogger(run_id, uri, system_metrics=True, system_metrics_interval=0.2)  # as rank 0 would
    time.sleep(1.2)
    log.finish()
    metrics = client(uri).get_run(run_id).data.metrics
    system = {k for k in metrics if k.startswith("system/")}
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    steps = [m.step for m in client(uri).get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert steps == list(range(len(steps))) and len(steps) >= 2

    # a re-launch continues the system metrics' steps instead of overwriting them
    RunLogger(run_id, uri).finish("FAILED")
    assert start_run(cfg, "system") == run_id
    log = RunLogger(run_id, uri, system_metrics=True, system_metrics_interval=0.2)
    time.sleep(0.6)
    log.finish()
    later = [m.step for m in client(uri).get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert len(later) > len(steps) and sorted(later) == list(range(len(later)))


def test_an_unreachable_tracking_server_is_named_without_its_credentials():
    from pipelines.common import free_port

    port = free_port(25000, 30000)  # nothing listens there (and, outside the ephemeral range, nothing takes it)
    with pytest.raises(ConfigError) as err:
        check_reachable(f"http://alice:s3cret@127.0.0.1:{port}/mlflow?token=abc", timeout_s=5)
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/mlflow is not reachable" in message and "refused" in message
    assert "s3cret" not in message and "alice" not in message and "abc" not in message
    with pytest.raises(ConfigError, match="port is not a number"):
        check_reachable("http://alice:s3cret@mlflow.internal:50x0")


def test_any_http_answer_counts_as_reachable_and_local_stores_are_not_probed(tmp_path):
    import http.server
    import threading

    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a proxy in front of the server that wants credentials
            asked.append(self.path)
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_address[1]}/prefix/", timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/prefix/health"]
    for local in (f"sqlite:///{tmp_path}/no/such/dir/mlflow.db", f"file://{tmp_path}/mlruns", str(tmp_path)):
        check_reachable(local)  # nothing to probe: created on first use
