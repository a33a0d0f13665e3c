"""The workflow's orchestration (pipelines/workflow.py) with quick stand-in steps and a real MLflow store.

The stand-ins write small files and MLflow child runs the way the real steps do, so the cache,
--force, failure and resume rules are checked here in seconds; tests/integration/test_workflow.py
runs the real steps on a real cluster.
"""

from pathlib import Path

import pytest

from components.config import ConfigError, load_config
from components.training import TrainConfig
from components.workflow import WorkflowConfig, WorkflowState
from pipelines.common import Terminated
from pipelines.workflow import StepFailed, Workflow


class QuickWorkflow(Workflow):
    """The real orchestration; each step writes one file (and registers a model version) instead of the real work."""

    fail_in: set = set()
    stop_in: set = set()  # steps stopped by SIGTERM

    def __init__(self, *args, calls: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = calls

    def _ensure_ray(self) -> None:
        pass

    def _write(self, record, step: str, name: str) -> dict:
        self.calls.append(step)
        with self._child(record, step):
            if step in self.fail_in:
                raise RuntimeError(f"{step} broke")
            if step in self.stop_in:
                raise Terminated("signal 15")
            path = Path(self.cfg.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step)
        return str(path)

    def _run_sample_world(self, record):
        return {"raw": self._write(record, "sample_world", "sample_world/ok")}

    def _run_prepare(self, record):
        return {"manifest": self._write(record, "prepare", "prepared/manifest.json")}

    def _run_train(self, record):
        return {"export_config": self._write(record, "train", "runs/model/config.json"), "run_id": record["run_id"],
                "accuracy_before": 0.25, "accuracy_after": 0.75}

    def _run_evaluate(self, record):
        return {"results": self._write(record, "evaluate", "eval/results.json"), "run_id": record["run_id"], "scores": {}}

    def _run_register(self, record):
        from mlflow import MlflowClient

        source = self._write(record, "register", "registered")
        client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        name = self.cfg.mlflow.registered_model
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        version = client.create_model_version(name, source, run_id=self.state.step("train")["run_id"]).version
        return {"registered_model": name, "version": int(version), "model_uri": f"models:/{name}@champion",
                "run_id": record["run_id"]}


@pytest.fixture
def world(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def run(*overrides, force=(), fail=(), stop=()):
        cfg = load_config(WorkflowConfig, None, [f"work_dir={tmp_path / 'wd'}", f"mlflow.tracking_uri={uri}", *overrides])
        calls, lines = [], []
        QuickWorkflow.fail_in, QuickWorkflow.stop_in = set(fail), set(stop)
        flow = QuickWorkflow(cfg, list(force), resume_command="`iblip run --config c.yaml`", log=lines.append, calls=calls)
        try:
            flow.run()
        finally:
            QuickWorkflow.fail_in, QuickWorkflow.stop_in = set(), set()
        return calls, lines, flow

    return {"run": run, "uri": uri, "work": tmp_path / "wd"}


ALL = ["sample_world", "prepare", "train", "evaluate", "register"]


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def test_first_run_runs_every_step_as_child_runs_of_one_parent(world):
    calls, lines, flow = world["run"]()
    assert calls == ALL
    client = _client(world["uri"])
    parent = client.get_run(flow.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "workflow"
    assert parent.data.params["train.schedule.total_steps"] == str(TrainConfig().schedule.total_steps)  # the workflow's whole config
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{flow.parent_id}'")
    assert sorted(r.data.tags["stage"] for r in children) == sorted(ALL)
    for step in ALL:  # and the parent points at each child
        assert parent.data.tags[f"step.{step}"] == "ran"
        assert client.get_run(parent.data.tags[f"step.{step}.run_id"]).data.tags["mlflow.parentRunId"] == flow.parent_id
    assert parent.data.metrics["accuracy_after"] == 0.75
    assert any("held-in exact match: before 0.250, after 0.750" in line for line in lines)
    assert any("browse the runs: mlflow ui --backend-store-uri sqlite:///" in line for line in lines)


def test_unchanged_steps_are_skipped_and_changes_rerun_what_follows(world):
    world["run"]()
    calls, lines, flow = world["run"]()
    assert calls == []
    assert sum("unchanged since" in line and "skipped" in line for line in lines) == 5
    assert _client(world["uri"]).get_run(flow.parent_id).data.tags["step.train"] == "cached"
    # a training setting changes: training and everything after it run again, the data steps do not
    calls, _, _ = world["run"]("train.schedule.total_steps=200")
    assert calls == ["train", "evaluate", "register"]
    # an evaluation setting changes: evaluation and registration only
    calls, _, _ = world["run"]("train.schedule.total_steps=200", "evaluate.max_samples=7")
    assert calls == ["evaluate", "register"]
    # operational settings are not part of a key
    calls, _, _ = world["run"]("train.schedule.total_steps=200", "evaluate.max_samples=7", "train.max_failures=5",
                               "train.log_every=3")
    assert calls == []


def test_force_reruns_the_step_and_what_follows(world):
    world["run"]()
    calls, _, _ = world["run"](force=["prepare"])
    assert calls == ["prepare", "train", "evaluate", "register"]
    calls, _, _ = world["run"](force=["register"])
    assert calls == ["register"]
    with pytest.raises(ConfigError, match="--force nope: no such step"):
        world["run"](force=["nope"])


def test_missing_outputs_rerun_the_step(world):
    world["run"]()
    (world["work"] / "runs" / "model" / "config.json").unlink()
    calls, _, _ = world["run"]()
    assert calls == ["train", "evaluate", "register"]


def test_failure_names_the_step_and_the_same_command_resumes_there(world):
    with pytest.raises(StepFailed) as failed:
        world["run"](fail=["evaluate"])
    message = str(failed.value)
    assert "step 'evaluate' failed: RuntimeError: evaluate broke" in message
    assert "rerun `iblip run --config c.yaml`" in message and "resumes at 'evaluate'" in message
    state = WorkflowState.load(str(world["work"]))
    assert state.data["status"] == "failed" and state.step("evaluate")["status"] == "failed"
    client = _client(world["uri"])
    failed_parent = state.data["parent_run_id"]
    assert client.get_run(failed_parent).info.status == "FAILED"
    assert client.get_run(failed_parent).data.tags["failed_step"] == "evaluate"
    failed_eval_run = state.step("evaluate")["run_id"]
    assert client.get_run(failed_eval_run).info.status == "FAILED"

    calls, _, flow = world["run"]()
    assert calls == ["evaluate", "register"]  # resumed at the failed step
    assert flow.parent_id == failed_parent  # the same workflow run, reopened and now finished
    assert client.get_run(failed_parent).info.status == "FINISHED"
    state = WorkflowState.load(str(world["work"]))
    assert state.step("evaluate")["attempts"] == 2 and state.step("evaluate")["run_id"] == failed_eval_run
    # the next run after a success is a new workflow run
    _, _, later = world["run"]()
    assert later.parent_id != failed_parent


def test_a_stop_says_so_and_the_same_command_resumes_there(world):
    """SIGTERM (or Ctrl-C) in a step: not "failed: KeyboardInterrupt: " and "fix the cause", but what
    happened and the command that goes on; the MLflow runs are KILLED, not FAILED."""
    with pytest.raises(StepFailed) as stopped:
        world["run"](stop=["train"])
    message = str(stopped.value)
    assert message.startswith("step 'train' terminated (SIGTERM)\nRerun `iblip run --config c.yaml`: "), message
    assert "(training goes on from its last checkpoint)" in message
    state = WorkflowState.load(str(world["work"]))
    assert state.step("train")["status"] == "failed" and state.step("train")["error"] == "terminated (SIGTERM)"
    client = _client(world["uri"])
    assert client.get_run(state.data["parent_run_id"]).info.status == "KILLED"
    assert client.get_run(state.step("train")["run_id"]).info.status == "KILLED"
    calls, _, _ = world["run"]()
    assert calls == ["train", "evaluate", "register"]
