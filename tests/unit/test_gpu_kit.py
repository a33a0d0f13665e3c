"""The GPU check kit (tests/device): which wheels it installs, and the device script's refusal
without a kit. The kit itself is proven by its rehearsal (README, "GPU checks on a machine without network")."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "device"))

import build_kit  # noqa: E402


def test_the_kit_installs_exactly_the_pinned_versions():
    cache = [Path(n) for n in (
        "ray-2.59.0-cp312-cp312-manylinux2014_x86_64.whl",  # an older build's version
        "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl",
        "SQLAlchemy-2.1.9-cp312-cp312-manylinux_2_17_x86_64.whl",
        "opentelemetry_exporter_prometheus-0.66b2-py3-none-any.whl",
        "unrelated-1.0-py3-none-any.whl",
    )]
    versions = {"ray": "2.60.0", "SQLAlchemy": "2.1.9", "opentelemetry-exporter-prometheus": "0.66b2"}
    assert [p.name for p in build_kit.chosen(cache, versions)] == [
        "opentelemetry_exporter_prometheus-0.66b2-py3-none-any.whl",
        "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl",
        "SQLAlchemy-2.1.9-cp312-cp312-manylinux_2_17_x86_64.whl",
    ]


def test_a_missing_wheel_is_named():
    with pytest.raises(SystemExit, match=r"no wheel for mlflow==3.17.2"):
        build_kit.chosen([Path("ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl")],
                         {"ray": "2.60.0", "mlflow": "3.17.2"})


def test_every_kit_package_is_in_this_environment():
    # the kit pins what the tests ran with: a name the environment lacks is a clear error, not a guess
    for name in build_kit.KIT:
        assert build_kit.pinned(name).startswith(f"{name}==")
    with pytest.raises(SystemExit, match="no-such-package is not installed"):
        build_kit.pinned("no-such-package")


def run_checks(**env: str) -> subprocess.CompletedProcess:
    """tests/device/run_checks.sh in real bash, with only these variables and a plain PATH."""
    return subprocess.run(["bash", str(ROOT / "tests/device/run_checks.sh")], cwd=ROOT, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **env})


def test_the_device_script_refuses_without_a_kit(tmp_path):
    done = run_checks(KIT=str(tmp_path / "none"), LOGS=str(tmp_path / "logs"))
    assert done.returncode == 2
    assert "site.tar.xz is missing: build the kit with 'make gpu-kit'" in done.stderr


def test_the_throughput_benchmark_halves_a_batch_that_runs_out_of_memory():
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_throughput_gpu as bench

    tried, freed, ran = [], [], []

    def make_step(n):
        tried.append(n)

        def step():
            if n > 16:  # a GPU with room for 16 samples
                raise torch.OutOfMemoryError(f"no room for {n}")
            ran.append(n)

        return step, 1.0e9 * n

    rate, used, flops = bench.timed(make_step, 64, warmup=2, steps=3, sync=lambda: None, free=lambda: freed.append(1))
    assert (used, tried, len(freed)) == (16, [64, 32, 16], 2)
    assert ran == [16] * 5 and flops == 16e9 and rate > 0

    def never_fits(n):
        def step():
            raise torch.OutOfMemoryError("none")
        return step, 0.0

    with pytest.raises(torch.OutOfMemoryError):
        bench.timed(never_fits, 4, warmup=1, steps=1, sync=lambda: None, free=lambda: None)


def test_the_device_script_refuses_a_machine_without_cuda(tmp_path):
    import tarfile

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    kit = tmp_path / "kit"
    kit.mkdir()
    for name in ("site.tar.xz", "world.tar.xz"):  # empty archives: this environment has the packages
        with tarfile.open(kit / name, "w:xz"):
            pass
    done = run_checks(KIT=str(kit), LOGS=str(tmp_path / "logs"), PY=sys.executable, SITE=str(tmp_path / "site"),
                      WORLD=str(tmp_path / "world"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PyTorch sees no CUDA device here" in done.stderr
    assert "torch " in (tmp_path / "logs" / "environment.txt").read_text()  # the versions were written first
