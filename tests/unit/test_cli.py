"""The stages run as `python -m pipelines.<stage>` and through `iblip`, with clear errors."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_iblip_lists_stages():
    out = run("pipelines.cli", "--help")
    assert out.returncode == 0 and "sample-data" in out.stdout and "prepare" in out.stdout


def test_show_config_documents_every_key():
    out = run("pipelines.prepare", "--show-config")
    assert out.returncode == 0
    assert "mixing.weights" in out.stdout and "templates.templates_per_sample" in out.stdout


def test_sample_data_module_writes_a_source(tmp_path):
    out = run("pipelines.sample_data", "--out", str(tmp_path), "--per-dataset", "10", "--sources", "vsr")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "vsr" / "splits" / "zeroshot" / "test.jsonl").exists()


def test_bad_override_is_one_clear_line(tmp_path):
    out = run("pipelines.cli", "prepare", "--raw", str(tmp_path), "--out", str(tmp_path / "o"), "mixing.wieghts.okvqa=2")
    assert out.returncode == 2
    assert "unknown config key 'mixing.wieghts'" in out.stderr and "Traceback" not in out.stderr


def test_missing_source_fails_before_ray_starts(tmp_path):
    out = run("pipelines.prepare", "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--datasets", "vizwiz")
    assert out.returncode == 2
    assert f"{tmp_path / 'none' / 'vizwiz'}" in out.stderr and "Started a local Ray" not in out.stderr


def test_evaluate_and_ablate_are_stages_with_clear_errors(tmp_path):
    out = run("pipelines.cli", "evaluate", "--show-config")
    assert out.returncode == 0 and "short_answer.num_beams" in out.stdout and "inference.actors" in out.stdout
    out = run("pipelines.cli", "evaluate", "--model", "x")
    assert out.returncode == 2 and "data is required" in out.stderr and "Traceback" not in out.stderr
    out = run("pipelines.cli", "ablate", "--data", str(tmp_path), "--variants", "full", "no_such")
    assert out.returncode == 2 and "unknown ablation variants ['no_such']" in out.stderr


def test_serve_is_a_stage_with_clear_errors(tmp_path):
    out = run("pipelines.cli", "serve", "--show-config")
    assert out.returncode == 0 and "batching.max_batch_size" in out.stdout and "limits.allowed_image_hosts" in out.stdout
    assert "127.0.0.1" in out.stdout  # the default bind address
    # a registry URI that names nothing fails before Ray starts
    store = f"sqlite:///{tmp_path}/empty.db"
    out = run("pipelines.cli", "serve", "--model", "models:/nothing@champion", f"mlflow.tracking_uri={store}")
    assert out.returncode == 2 and "models:/nothing@champion" in out.stderr and "Traceback" not in out.stderr
    assert "Started a local Ray" not in out.stderr
