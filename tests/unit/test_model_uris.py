"""`check_model` on model URIs that are not MLflow's: what evaluation and serving refuse before they start;
Hugging Face ids looked up in the local cache and on a hub (a real local HTTP server answering as the hub does)."""

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from components.pyfunc_model import check_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exported(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "processor_config.json"):
        (folder / name).write_text("{}")
    return folder


def test_an_exported_directory_a_cached_hub_id_and_remote_uris_pass(exported, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # the layout `from_pretrained` leaves in the Hugging Face cache; no hub is asked (offline here)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--Salesforce--instructblip-flan-t5-xl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "config.json").write_text("{}")
    for uri in (str(exported), f"file://{exported}", "Salesforce/instructblip-flan-t5-xl", "s3://bucket/runs/r/model"):
        assert check_model(uri, "") == {"model_uri": uri}
    # the same id, not cached, with the hub switched off
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="'bert-base-uncased' is not in the local Hugging Face cache and "
                                         "HF_HUB_OFFLINE is set"):
        check_model("bert-base-uncased", "")


@pytest.mark.parametrize("missing, message", [
    ("model.safetensors", "has config.json but no weights (model.safetensors or model.safetensors.index.json or "
                          "pytorch_model.bin or pytorch_model.bin.index.json): an incomplete copy or export"),
    ("processor_config.json", "has config.json but no processor (processor_config.json or "
                              "preprocessor_config.json): an incomplete copy or export"),
])
def test_a_directory_missing_weights_or_processor_is_named(exported, missing, message):
    (exported / missing).unlink()
    with pytest.raises(ValueError) as err:
        check_model(str(exported), "")
    assert str(err.value) == f"model {str(exported)!r} {message} of a model"
    # sharded weights and an older processor file do
    (exported / "model.safetensors.index.json").write_text("{}")
    (exported / "preprocessor_config.json").write_text("{}")
    assert check_model(str(exported), "") == {"model_uri": str(exported)}


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing" / "model", "is neither an existing directory nor a Hugging Face model id"),
    (lambda root: "work_dirs/runs/no-such-run/model", "is neither an existing directory nor a Hugging Face model id"),
    (lambda root: f"file://{root}/missing", "is neither an existing directory nor a Hugging Face model id"),
    (lambda root: root, "is a directory without config.json: not an exported model"),
    (lambda root: root / "model" / "config.json", "is a file: give the exported model's directory"),
])
def test_paths_that_hold_no_model_are_named(exported, make, message):
    uri = str(make(exported.parent))
    with pytest.raises(ValueError) as err:
        check_model(uri, "")
    assert str(err.value).startswith(f"model {uri!r} {message}")


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers HEAD /<repo>/resolve/main/config.json with the status and X-Error-Code the hub gives."""

    def do_HEAD(self):  # noqa: N802 - http.server's name
        repo = self.path.split("/resolve/")[0].strip("/")
        status, code = {"acme/tiny": (200, None), "acme/gated": (401, "GatedRepo"),
                        "acme/dataset-like": (404, "EntryNotFound"), "acme/flaky": (503, None)}.get(
            repo, (401, "RepoNotFound"))
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        if status == 200:
            self.send_header("X-Repo-Commit", "b" * 40)
            self.send_header("ETag", '"0123"')
        self.send_header("Content-Length", "2" if status == 200 else "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _outcomes(endpoint: str, home: Path, cases: list[list], env: dict | None = None) -> list[str]:
    """check_model_path on each (id, what, on_cluster) in a fresh interpreter whose HF_ENDPOINT is
    `endpoint` (huggingface_hub reads it once, at import): "ok", "warned: ..." or the error."""
    script = (
        "import json, sys\n"
        "from components.model import check_model_path\n"
        "out = []\n"
        "for uri, what, cluster in json.loads(sys.argv[1]):\n"
        "    warnings = []\n"
        "    try:\n"
        "        check_model_path(uri, what, cluster, warnings.append)\n"
        "        out.append('warned: ' + warnings[0] if warnings else 'ok')\n"
        "    except ValueError as exc:\n"
        "        out.append(str(exc))\n"
        "print(json.dumps(out))\n")
    environment = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_hub_ids_are_looked_up_once_and_the_hubs_answer_is_named(hub, tmp_path):
    out = _outcomes(hub, tmp_path, [
        ["acme/tiny", "model", False],
        ["acme/typo", "model.path", False],
        ["acme/gated", "model", False],
        ["acme/dataset-like", "model.bert", False],
        ["acme/flaky", "model", False],
        ["acme/typo", "model", True],  # the hub's "no such model" holds on a cluster too
        ["acme/flaky", "model", True],  # a hub this process cannot ask: the cluster's nodes may
    ])
    assert out[0] == "ok"
    assert out[1].startswith(f"model.path 'acme/typo': the Hugging Face hub ({hub}) has no such model (a typo? "
                             "a private model needs a token")
    assert out[2].startswith(f"model 'acme/gated' is gated on the Hugging Face hub ({hub}): accept its terms")
    assert out[3] == f"model.bert 'acme/dataset-like' on the Hugging Face hub ({hub}) has no config.json: not a " \
                     "transformers model"
    assert out[4].startswith(f"model 'acme/flaky' cannot be looked up on the Hugging Face hub ({hub}) (")
    assert "503" in out[4] and out[4].endswith("Check the network (or HF_ENDPOINT), download it while online, or "
                                               "give an exported directory")
    assert out[5].startswith("model 'acme/typo': the Hugging Face hub")
    assert out[6].startswith("warned: warning: model 'acme/flaky' cannot be looked up") and \
        out[6].endswith("the cluster's nodes load it themselves and may succeed")


def test_an_unreachable_hub_is_one_refused_request_not_minutes_of_retries(tmp_path):
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    out = _outcomes(endpoint, tmp_path, [["acme/tiny", "model", False]])
    assert out[0].startswith(f"model 'acme/tiny' cannot be looked up on the Hugging Face hub ({endpoint}) "
                             "(ConnectError")
    assert "is not in the local Hugging Face cache" in out[0]


@pytest.mark.parametrize("stage, args, what", [
    ("serve", ["--model", "acme/typo", "--port", "8019"], "model"),
    ("train", ["--data", "PREPARED", "model.source=blip2", "model.path=acme/tiny", "model.bert=acme/typo"], "model.bert"),
    ("run", ["--work-dir", "WORK", "train.model.source=instructblip", "train.model.path=acme/typo"], "train.model.path"),
])
def test_the_commands_stop_on_an_unknown_hub_id_before_ray_starts(hub, tmp_path, stage, args, what):
    """`iblip serve` of a mistyped id took 1 min 37 s of retries and ended in a traceback; `iblip train`
    3 min 40 s; the workflow checks before its first step."""
    (tmp_path / "manifest.json").write_text(json.dumps({"datasets": {  # what `iblip train` reads before
        "vqav2": {"role": "held_in", "splits": {"train": {"records_written": 10}, "val": {"records_written": 10}}}}}))
    args = [{"PREPARED": str(tmp_path), "WORK": str(tmp_path / "work")}.get(a, a) for a in args]
    env = {**os.environ, "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", stage, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"iblip {stage}: error: {what} 'acme/typo': the Hugging Face hub ({hub}) has no such model" in done.stderr
    assert "Traceback" not in done.stderr and "Ray instance" not in done.stderr + done.stdout
    assert not (tmp_path / "work").exists()  # the workflow wrote nothing
