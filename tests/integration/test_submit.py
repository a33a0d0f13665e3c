"""`iblip submit` against a real multi-process Ray cluster: a head and a second node started with `ray start`."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_ports() -> list[str]:
    """Free ports for a node's agents: the defaults (52365, ...) are taken by the test session's own Ray."""
    return ["--disable-usage-stats", "--dashboard-agent-listen-port", str(_free_port()),
            "--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
            "--runtime-env-agent-port", str(_free_port())]


@pytest.fixture(scope="module")
def cluster():
    """Head + worker node as separate `ray start` processes (token auth on, as Ray 2.60 starts them)."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's unix socket paths live under it
    # the job's `python` must be this interpreter (the venv is not necessarily on PATH)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token", "PATH": path}
    ray = str(Path(sys.executable).with_name("ray"))
    gcs, dashboard = _free_port(), _free_port()

    def run(*args):
        out = subprocess.run([ray, *args], env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr

    try:
        run("start", "--head", "--port", str(gcs), "--num-cpus", "2", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard), "--include-dashboard", "true", *_agent_ports())
        run("start", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "2", *_agent_ports())
        yield {"address": f"http://127.0.0.1:{dashboard}", "env": env}
    finally:
        _stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(tmp: str) -> None:
    """Stop this cluster's processes only: each names the temp dir on its command line. (`ray stop`
    would also kill every other Ray on the machine, the test session's own included.)"""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if tmp in " ".join(proc.info["cmdline"] or []):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in mine:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=3)
    for proc in alive:
        proc.kill()


def _submit(cluster, tmp_path, entrypoint: str, *flags):
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""entrypoint: {entrypoint}
runtime_env:
  working_dir: {REPO}
  excludes: [".venv", "work_dirs", "mlruns", "mlflow.db", ".git", "*.egg-info"]
  env_vars:
    FROM_SUBMITTER: "${{SUBMITTER_VALUE}}"
metadata:
  test: submit
""")
    env = {**cluster["env"], "SUBMITTER_VALUE": "forty-two"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "submit", str(spec), "--address", cluster["address"],
                           *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_submit_waits_for_success_on_a_two_node_cluster(cluster, tmp_path):
    probe = ("python -c \"import os, ray, components.serving; ray.init(); "
             "print('nodes', len([n for n in ray.nodes() if n['Alive']]), os.environ['FROM_SUBMITTER'])\"")
    out = _submit(cluster, tmp_path, probe, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nodes 2 forty-two" in out.stdout  # the job saw both nodes, the repo and the submitter's variable
    assert "SUCCEEDED" in out.stdout and "raysubmit_" in out.stdout


def test_failed_job_exits_nonzero_and_no_wait_returns_at_once(cluster, tmp_path):
    failed = _submit(cluster, tmp_path, "python -c 'raise SystemExit(3)'", "--wait")
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    queued = _submit(cluster, tmp_path, "python -c 'print(1)'")
    assert queued.returncode == 0 and "submitted raysubmit_" in queued.stdout
