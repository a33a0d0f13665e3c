"""The workflow's cache keys and state file (components/workflow.py) and its command-line helpers."""

import json
import os

import pytest

from components.config import ConfigError, load_config
from components.workflow import (
    STATE_FILE,
    WorkflowConfig,
    WorkflowState,
    content_hash,
    listing_fingerprint,
    step_config,
)


def test_content_hash_ignores_dict_order_but_not_values():
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert content_hash([1, 2]) != content_hash([2, 1])


def test_step_config_leaves_out_what_the_workflow_fills_in():
    a = load_config(WorkflowConfig, None, ["train.run_name=x", "train.storage=/a", "train.data=/p", "train.ray.num_cpus=8",
                                           "train.mlflow.tracking_uri=sqlite:///a.db", "evaluate.out=/o", "prepare.raw=/r"])
    b = load_config(WorkflowConfig, None, [])
    for step in ("prepare", "train", "evaluate"):
        assert step_config(a, step) == step_config(b, step), step
    # what decides a step's result is in its key
    c = load_config(WorkflowConfig, None, ["train.schedule.total_steps=70"])
    assert step_config(c, "train") != step_config(b, "train")
    assert step_config(c, "evaluate") == step_config(b, "evaluate")
    d = load_config(WorkflowConfig, None, ["mlflow.alias=staging"])
    assert step_config(d, "register") != step_config(b, "register")
    assert step_config(load_config(WorkflowConfig, None, ["sample_world.seed=5"]), "sample_world")["seed"] == 5


def test_listing_fingerprint_follows_the_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.json").write_text("[1]")
    first = listing_fingerprint(str(tmp_path))
    assert listing_fingerprint(str(tmp_path)) == first
    (tmp_path / "src" / "a.json").write_text("[1, 2]")  # new size
    second = listing_fingerprint(str(tmp_path))
    assert second != first
    os.utime(tmp_path / "src" / "a.json", (1, 1))  # same size, other modification time
    assert listing_fingerprint(str(tmp_path)) != second
    (tmp_path / "src" / "b.jpg").write_bytes(b"x")  # a new file
    assert listing_fingerprint(str(tmp_path)) not in (first, second)
    with pytest.raises(FileNotFoundError, match="raw data not found"):
        listing_fingerprint(str(tmp_path / "missing"))


def test_state_round_trip_resume_and_rerun(tmp_path):
    state = WorkflowState.load(str(tmp_path))
    assert state.step("train") == {} and not state.is_done("train", "k1")
    record = state.begin("train", "k1")
    record["run_name"] = "wf-train"
    state.fail("train", "RuntimeError: boom")
    # a new process sees the failure; the same key resumes the attempt (its run name is kept)
    state = WorkflowState.load(str(tmp_path))
    assert state.step("train")["status"] == "failed" and "boom" in state.step("train")["error"]
    record = state.begin("train", "k1")
    assert record["run_name"] == "wf-train" and record["attempts"] == 2 and record["error"] == ""
    done = state.succeed("train", {"export": "/m"})
    assert state.is_done("train", "k1") and not state.is_done("train", "k2")
    first_output = done["output_id"]
    # after success a new attempt (same key, forced; or another key) starts fresh with a new output id
    record = state.begin("train", "k1")
    assert "run_name" not in record and record["attempts"] == 1
    assert state.succeed("train", {"export": "/m"})["output_id"] != first_output
    # a changed key never resumes a failed attempt of the old key
    state.begin("evaluate", "e1")["run_name"] = "old"
    state.fail("evaluate", "x")
    assert "run_name" not in state.begin("evaluate", "e2")
    on_disk = json.loads((tmp_path / STATE_FILE).read_text())
    assert on_disk["steps"]["evaluate"]["key"] == "e2" and on_disk["steps"]["train"]["status"] == "succeeded"


def test_unreadable_state_is_a_clear_error(tmp_path):
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable.*delete it"):
        WorkflowState.load(str(tmp_path))
    (tmp_path / STATE_FILE).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a workflow state"):
        WorkflowState.load(str(tmp_path))


@pytest.mark.parametrize("override, message", [
    ("name=a b", "name"), ("name=", "name"), ("work_dir=", "work_dir"), ("sample_world.per_dataset=9", "per_dataset must be >= 10"),
])
def test_bad_workflow_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(WorkflowConfig, None, [override]).validate()


def test_paths_are_absolute_under_the_work_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(WorkflowConfig, None, ["work_dir=wd"])
    assert cfg.path("prepared") == str(tmp_path / "wd" / "prepared")
    assert cfg.raw_root() == str(tmp_path / "wd" / "sample_world")
    assert load_config(WorkflowConfig, None, ["raw=s3://b/raw"]).raw_root() == "s3://b/raw"
    assert load_config(WorkflowConfig, None, ["work_dir=s3://b/wf"]).path("runs") == "s3://b/wf/runs"


def test_force_takes_one_step_list_and_leaves_the_overrides_alone():
    from pipelines.workflow import build_parser

    args = build_parser().parse_args(["--force", "train", "train.seed=1", "--force=evaluate,register", "--serve"])
    assert args.force == ["train", "evaluate", "register"] and args.overrides == ["train.seed=1"] and args.serve


def test_resume_command_drops_the_force_list():
    from pipelines.workflow import _without_force, browse_command

    assert _without_force(["--config", "c.yaml", "--force", "train", "train.seed=1", "--force=evaluate,register"]) == \
        ["--config", "c.yaml", "train.seed=1"]
    assert _without_force(["--force", "prepare", "--serve"]) == ["--serve"]
    assert browse_command("sqlite:////tmp/m.db").startswith("mlflow ui --backend-store-uri sqlite:////tmp/m.db")
    assert browse_command("http://127.0.0.1:5000") == "open http://127.0.0.1:5000"


@pytest.mark.parametrize("override, message", [
    ("train.global_batch_size=6", "train: global_batch_size"),
    ("evaluate.inference.actors=0", "evaluate: inference.actors"),
    ("prepare.datasets=[nope]", "prepare: unknown dataset 'nope'"),
    ("serve.port=-1", "serve: "),
])
def test_stage_sections_are_checked_with_their_paths_filled_in(override, message):
    # a stage section lacks its paths (the workflow fills them in), yet its other keys fail on loading
    with pytest.raises(ConfigError, match=message):
        load_config(WorkflowConfig, None, [override])
    load_config(WorkflowConfig, None, []).validate()  # the defaults are valid
