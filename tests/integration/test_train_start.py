"""`iblip train` on a machine without a cluster: the tiny model is assembled while the local Ray starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys, threading
import ray
from components.config import load_config
from components.training import TrainConfig
from pipelines.train import _initial_model_while_ray_starts, run_paths

def config(run):
    return load_config(TrainConfig, overrides=[
        "data=" + sys.argv[1], "storage=" + sys.argv[2], "run_name=" + run, "ray.num_cpus=3",
        "model.vision_steps=2", "model.reader_steps=2", "model.reader_batch_size=4",
        "model.tiny.hidden_size=32", "model.tiny.num_heads=2", "model.tiny.vocab_size=200",
    ])
# an error in the assembly thread reaches the caller
bad = config("bad")
bad.model.tiny.num_heads = 3  # past the config check: 32 is not a multiple of 3, build_tiny refuses it
try:
    _initial_model_while_ray_starts(bad, run_paths(bad), print)
    error = ""
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
ray.shutdown()
cfg = config("start")
threads = []
def log(line):
    threads.append(threading.current_thread().name)
initial = _initial_model_while_ray_starts(cfg, run_paths(cfg), log)
print(json.dumps({"initial": initial, "cpus": ray.cluster_resources().get("CPU"), "threads": threads, "error": error}))
ray.shutdown()
"""


def test_the_tiny_model_is_assembled_in_a_thread_while_a_local_ray_starts(trained_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster to connect to
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(trained_model["prepared"]), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cpus"] == 3  # a local Ray was started, with the configured logical CPUs
    assert (Path(out["initial"]) / "config.json").is_file()
    assert out["threads"] and all(name == "assemble" for name in out["threads"])
    assert out["error"].startswith("ConfigError") and "num_heads" in out["error"]
