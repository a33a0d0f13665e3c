"""Build the GPU check kit: the Python packages a lent GPU machine lacks, packed to travel with the tree.

The lent GPU machines (the `device` tool of our development workplace) run an image with Python
3.12, PyTorch 2.11 (CUDA), transformers, numpy, pyarrow, pandas, pillow, aiohttp, grpcio and the
like, but no Ray, DeepSpeed or MLflow, and they cannot reach a package index. So the packages they
lack are downloaded here as CPython 3.12 manylinux wheels, at the versions of the environment
that runs this script (the tested stack), installed into a staging folder, trimmed of what no check
needs (Ray's Java jar and source maps, MLflow's web UI, the caption package's Java scorers) and
packed into one xz archive; the GPU tests' small world is made here too (its videos need PyAV, too
big to carry) and packed beside it, both under the travel limit of one call (64 MiB with the
working tree). `tests/device/run_checks.sh` unpacks them there and runs the GPU tests and the
throughput benchmark. Downloaded wheels are kept for the next build in the tiny-model cache's
folder (`gpu-kit-wheels`), outside the tree.

    .venv/bin/python tests/device/build_kit.py [--out .gpu-kit]     # or: make gpu-kit

Only the packages in KIT travel: the image's own torch, transformers, tokenizers and numpy are
used as they are (within pyproject's ranges), so the checks also show the project on another
release of them. Needs the package index (run it here, not there).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
LIMIT = 58 * 2**20  # the archive's budget: the call's 64 MiB less the working tree and the margin

# What the GPU checks import that the machine's image does not hold (its package list: the
# device tool's KINDS.md), with what those need in turn. Found by running the checks against an
# environment of the image's versions (`run_checks.sh` with IBLIP_GPU_TESTS_ON_CPU=1).
KIT = [
    # Ray core, Data, Train, Serve
    "ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
    "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
    "httptools", "watchfiles", "websockets", "aiohttp-cors", "colorful", "smart-open", "tensorboardX",
    "grpcio-reflection", "mmh3",
    "opencensus", "opencensus-context", "google-api-core", "google-auth", "googleapis-common-protos",
    "proto-plus", "pyasn1", "pyasn1-modules", "cachetools",
    "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto", "opentelemetry-semantic-conventions",
    "opentelemetry-exporter-prometheus", "importlib-metadata",
    # DeepSpeed (built here: its release is a source archive)
    "deepspeed", "hjson",
    # MLflow with its SQL tracking store
    "mlflow", "mlflow-skinny", "mlflow-tracing", "alembic", "mako", "sqlalchemy", "sqlparse",
    "databricks-sdk", "gitpython", "gitdb", "smmap", "python-dotenv", "cryptography", "cffi", "pycparser",
    "flask", "flask-cors", "blinker", "itsdangerous", "graphene", "graphql-core", "graphql-relay",
    "gunicorn", "docker", "huey", "skops", "prettytable", "wcwidth",
    # the caption metric (CIDEr; the package's Java scorers are trimmed)
    "pycocoevalcap", "pycocotools",
]
# the machine's platform tags (manylinux, x86-64) and its Python
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64",
             "manylinux1_x86_64"]
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          *[arg for p in PLATFORMS for arg in ("--platform", p)]]
# trimmed from the staging folder: no check runs Java workers, the dashboard's UI or MLflow's UI
TRIM = ["ray/jars", "mlflow/server/js/build", "pycocoevalcap/meteor", "pycocoevalcap/spice"]
TRIM_SUFFIXES = (".js.map", ".pyc", ".jar")
BUILT_HERE = {"deepspeed"}  # no wheel on the index: built from the source release (no compiled ops)


def pinned(name: str) -> str:
    """name==version of the installed distribution (what the tests ran with)."""
    try:
        return f"{name}=={md.version(name)}"
    except md.PackageNotFoundError:
        sys.exit(f"build_kit: {name} is not installed in this environment ({sys.executable}); "
                 "run it with the project's environment (make setup)")


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"build_kit: {' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def wheel_cache() -> Path:
    """Where downloaded wheels are kept for the next build (outside the tree: they must not travel)."""
    from components.tiny_cache import cache_root

    return Path(cache_root()) / "gpu-kit-wheels"


def stage(packages: list[str], wheels: Path, staging: Path) -> None:
    """Download (or reuse from `wheels`) the packages' wheels and install them into `staging`, trimmed."""
    wheels.mkdir(parents=True, exist_ok=True)
    for name in packages:
        spec = pinned(name)
        print(f"[kit] {spec}", flush=True)
        if name in BUILT_HERE:
            if not list(wheels.glob(f"{name}-{md.version(name)}-*.whl")):
                pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), spec,
                    env=dict(os.environ, DS_BUILD_OPS="0"))
        else:
            pip("download", "-q", "--no-deps", *TARGET, "-d", str(wheels), spec)
    files = chosen(sorted(wheels.glob("*.whl")), {md.metadata(n)["Name"]: md.version(n) for n in packages})
    shutil.rmtree(staging, ignore_errors=True)
    pip("install", "-q", "--no-deps", "--no-compile", "--target", str(staging), *TARGET, *map(str, files))
    for rel in TRIM:
        shutil.rmtree(staging / rel, ignore_errors=True)
    for path in list(staging.rglob("*")):
        if path.is_file() and path.name.endswith(TRIM_SUFFIXES):
            path.unlink()


def chosen(wheels: list[Path], versions: dict[str, str]) -> list[Path]:
    """The wheels of exactly these distributions and versions, one each (the cache may hold other
    versions from earlier builds; two versions of one package would break the install).

    Raises SystemExit naming the distributions that have no wheel among `wheels`.
    """
    def key(name: str) -> str:  # wheel file names normalise a name: lower case, runs of -_. as _
        return "".join("_" if c in "-." else c for c in name.lower())

    wanted = {f"{key(n)}-{v}": n for n, v in versions.items()}
    picked = {}
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        if f"{key(name)}-{version}" in wanted:
            picked.setdefault(f"{key(name)}-{version}", wheel)
    missing = sorted(f"{wanted[k]}=={k.split('-')[1]}" for k in wanted.keys() - picked.keys())
    if missing:
        sys.exit(f"build_kit: no wheel for {', '.join(missing)}")
    return [picked[k] for k in sorted(picked)]


def small_world(folder: Path) -> None:
    """The GPU tests' small world (`integration_support.make_small_world`, the `small_world` fixture's),
    made here: the sample world's videos need PyAV, which would not fit in the archive, and the prepare
    job is no GPU path. Only `prepared/` is kept."""
    import ray

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from integration_support import make_small_world

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        make_small_world(folder)
    finally:
        ray.shutdown()
    shutil.rmtree(folder / "raw")


def pack(folder: Path, archive: Path) -> int:
    """Pack a folder's contents into an xz tar; returns its size in bytes."""
    with tarfile.open(archive, "w:xz", preset=9) as tar:
        tar.add(folder, arcname=".")
    return archive.stat().st_size


def build(out: Path, packages: list[str]) -> None:
    """The kit in `out`: site.tar.xz (the packages), world.tar.xz (the prepared small world), packages.txt."""
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="iblip-gpu-kit-"))
    try:
        stage(packages, wheel_cache(), work / "site")
        print("[kit] making the small world (sample world, prepare job)", flush=True)
        small_world(work / "world")
        print("[kit] packing (xz, a few minutes)", flush=True)
        size = pack(work / "site", out / "site.tar.xz") + pack(work / "world", out / "world.tar.xz")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "packages.txt").write_text("".join(f"{pinned(n)}\n" for n in packages))
    print(f"[kit] {out}: {size / 2**20:.1f} MiB to carry, {len(packages)} packages", flush=True)
    if size > LIMIT:
        sys.exit(f"build_kit: the kit is {size / 2**20:.1f} MiB, over the {LIMIT / 2**20:.0f} MiB one call "
                 "can carry with the tree; trim more (TRIM) or leave a package to the image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".gpu-kit"),
                        help="folder for the kit: site.tar.xz, world.tar.xz, packages.txt (git-ignored)")
    parser.add_argument("--stage-only", metavar="DIR",
                        help="only install the packages into DIR, unpacked (to try them against an environment like the "
                             "machine's: PYTHONPATH=DIR)")
    args = parser.parse_args()
    if args.stage_only:
        stage(KIT, wheel_cache(), Path(args.stage_only))
    else:
        build(Path(args.out), KIT)


if __name__ == "__main__":
    main()
