"""The job spec of `iblip submit`: submit_job's arguments one to one, ${VAR}s from the environment."""

from pathlib import Path

import pytest

from components.config import ConfigError
from pipelines.submit import JOB_FIELDS, load_job_spec

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


def test_shipped_ray_job_maps_onto_submit_job(monkeypatch):
    import inspect

    from ray.job_submission import JobSubmissionClient

    assert set(JOB_FIELDS) <= set(inspect.signature(JobSubmissionClient.submit_job).parameters)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.delenv("IBLIP_WORK", raising=False)
    spec = load_job_spec(str(REPO / "ray_job.yaml"))
    env = spec["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000" and env["IBLIP_WORK"] == "/tmp/iblip"
    assert spec["runtime_env"]["working_dir"] == "."
    # every stage the entrypoint runs exists
    for module in [w for w in spec["entrypoint"].split() if w.startswith("pipelines.")]:
        assert (REPO / (module.replace(".", "/") + ".py")).exists(), module


def test_unset_variable_unknown_key_and_missing_entrypoint(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_HERE is not set"):
        load_job_spec(_spec(tmp_path, "entrypoint: echo\nruntime_env:\n  env_vars:\n    A: '${NOT_SET_HERE}'\n"))
    assert load_job_spec(_spec(tmp_path, "entrypoint: echo\nruntime_env:\n  env_vars:\n    A: 'x-${NOT_SET_HERE:-d}'\n")
                         )["runtime_env"]["env_vars"] == {"A": "x-d"}
    with pytest.raises(ConfigError, match=r"unknown keys \['entry_point'\]"):
        load_job_spec(_spec(tmp_path, "entry_point: echo\n"))
    with pytest.raises(ConfigError, match="entrypoint .* is required"):
        load_job_spec(_spec(tmp_path, "metadata: {a: b}\n"))
    with pytest.raises(ConfigError, match="entrypoint_num_gpus must be a number"):
        load_job_spec(_spec(tmp_path, "entrypoint: echo\nentrypoint_num_gpus: one\n"))
    spec = load_job_spec(_spec(tmp_path, "entrypoint: echo\nmetadata: {attempt: 2}\n"))
    assert spec == {"entrypoint": "echo", "metadata": {"attempt": "2"}}
