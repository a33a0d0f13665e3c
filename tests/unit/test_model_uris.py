"""`check_model` on model URIs that are not MLflow's: what evaluation and serving refuse before they start."""

import pytest

from components.pyfunc_model import check_model


@pytest.fixture
def exported(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_an_exported_directory_hub_ids_and_remote_uris_pass(exported):
    for uri in (str(exported), f"file://{exported}", "Salesforce/instructblip-flan-t5-xl", "bert-base-uncased",
                "s3://bucket/runs/r/model"):
        assert check_model(uri, "") == {"model_uri": uri}


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
