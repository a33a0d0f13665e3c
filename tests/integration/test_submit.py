"""`iblip submit` against a real multi-process Ray cluster (a head and a second node started with `ray start`).

The workflow job itself (ray_job.yaml) is submitted by the `trained_model` fixture and checked in
test_workflow.py; these are the submission mechanics.
"""

import pytest

from integration_support import REPO, local_cluster, submit

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster():
    with local_cluster() as cluster:
        yield cluster


def _spec(tmp_path, entrypoint: str):
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
    return spec


def test_submit_waits_for_success_on_a_two_node_cluster(ray_cluster, tmp_path):
    probe = ("python -c \"import os, ray, components.serving; ray.init(); "
             "print('nodes', len([n for n in ray.nodes() if n['Alive']]), os.environ['FROM_SUBMITTER'])\"")
    out = submit(ray_cluster, _spec(tmp_path, probe), "--wait", env={"SUBMITTER_VALUE": "forty-two"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nodes 2 forty-two" in out.stdout  # the job saw both nodes, the repo and the submitter's variable
    assert "SUCCEEDED" in out.stdout and "raysubmit_" in out.stdout


def test_failed_job_exits_nonzero_and_no_wait_returns_at_once(ray_cluster, tmp_path):
    env = {"SUBMITTER_VALUE": "x"}
    failed = submit(ray_cluster, _spec(tmp_path, "python -c 'raise SystemExit(3)'"), "--wait", env=env)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    queued = submit(ray_cluster, _spec(tmp_path, "python -c 'print(1)'"), env=env)
    assert queued.returncode == 0 and "submitted raysubmit_" in queued.stdout
