"""Helpers of the integration tests that start real processes: free ports, cleanup, job submission."""

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipelines import common

REPO = Path(__file__).resolve().parents[2]


def make_small_world(root: Path) -> Path:
    """A prepared sample world the size of the integration tests' tiny workflow, `<root>/prepared`, on the
    Ray this process is connected to (the `small_world` fixture's, and the GPU kit's: tests/device)."""
    from components.config import load_config
    from components.preparation import PrepareConfig
    from components.sample_world.world import generate
    from pipelines.prepare import run_prepare

    generate(str(root / "raw"), per_dataset=16, seed=3, faults=False, log=lambda _: None)
    cfg = load_config(PrepareConfig, str(REPO / "configs/prepare.yaml"),
                      [f"raw={root / 'raw'}", f"out={root / 'prepared'}"])
    run_prepare(cfg, log=lambda _: None)
    return root


def free_port() -> int:
    """A port for a process the test starts: outside the kernel's ephemeral range (which the Ray
    processes starting meanwhile draw from), and from a span of its own, so that it never meets a port
    the product's own `free_port` picks (HAProxy's side ports)."""
    return common.free_port(25000, 30000)


def agent_ports() -> list[str]:
    """Free ports for a node's agents: the defaults (52365, ...) are taken by the test session's own Ray."""
    return ["--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port())]


def processes_under(tmp: str) -> list:
    """The processes (psutil) whose command line names `tmp` (a cluster's or server's own temp dir)."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if tmp in " ".join(proc.info["cmdline"] or []):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return mine


def processes_left_under(tmp: str, timeout_s: float) -> list:
    """`processes_under(tmp)` once they are gone, or after `timeout_s` (Ray's agents notice a stopped
    raylet within seconds)."""
    deadline = time.monotonic() + timeout_s
    while (left := processes_under(tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def stop_processes_under(tmp: str) -> None:
    """Stop the processes whose command line names `tmp` (a cluster's or server's own temp dir).

    Never `ray stop`: it would also kill every other Ray on the machine, the test session's own included.
    """
    import psutil

    mine = processes_under(tmp)
    for proc in mine:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=3)
    for proc in alive:
        proc.kill()


class Output:
    """A process's merged stdout and stderr, read as it comes (a thread feeds a queue)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self._queue.put(line) for line in proc.stdout] + [self._queue.put(None)],
                         daemon=True).start()

    def wait_for(self, *markers: str, timeout_s: float) -> None:
        """Until every marker has appeared in some line (fails on the process's end or the timeout)."""
        deadline = time.monotonic() + timeout_s
        while not all(any(m in line for line in self.lines) for m in markers):
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {markers} after {timeout_s} s:\n{self.text[-4000:]}") from None
            assert line is not None, f"the process ended before {markers}:\n{self.text[-4000:]}"
            self.lines.append(line)

    def rest(self, timeout_s: float = 30) -> str:
        """Everything, once the process has closed its output."""
        while (line := self._queue.get(timeout=timeout_s)) is not None:
            self.lines.append(line)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)


def foreground_job() -> None:
    """`preexec_fn` of a process that a test stops with Ctrl-C (SIGINT to its process group): SIGINT
    back to its default, as in a terminal (a test run started in the background ignores SIGINT, and
    its children inherit that). With `start_new_session=True`: its own process group."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_a_registered_checkpoint(run_dir: Path, proc: subprocess.Popen, log: Path, timeout_s: float) -> int:
    """The step of the first checkpoint Ray Train has registered (in its snapshot, which a relaunch
    restores from: a checkpoint folder alone may still be incomplete or unreported)."""
    deadline = time.time() + timeout_s
    while True:
        assert proc.poll() is None, f"the launch ended by itself:\n{log.read_text()[-4000:]}"
        assert time.time() < deadline, f"no checkpoint registered after {timeout_s} s:\n{log.read_text()[-4000:]}"
        step = registered_step(run_dir)
        if step is not None:
            return step
        time.sleep(0.05)


def registered_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint in Ray Train's snapshot of `run_dir`, None without one."""
    try:
        latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):  # not there yet, or caught mid-write
        latest = None
    return latest["metrics"]["step"] if latest else None


def export_tiny_model(out: Path, options: dict) -> Path:
    """A tiny model assembled from ModelSourceConfig `options` (pre-trained as they say), exported to `out`."""
    from components.config import from_dict
    from components.model import ModelSourceConfig, assemble, export_model

    model, processor = assemble(from_dict(ModelSourceConfig, options), log=lambda *_: None)
    export_model(model, processor, str(out))
    return out


def check_bf16_export(run_dir: Path) -> None:
    """A bf16 training run's `model` export next to its `initial_model`: every parameter whole (ZeRO-3
    gathers them) and in bf16, the trained ones (query tokens) moved, the frozen ones (the LLM's) equal."""
    import torch
    from transformers import InstructBlipForConditionalGeneration

    trained, initial = (dict(InstructBlipForConditionalGeneration.from_pretrained(run_dir / d).named_parameters())
                        for d in ("model", "initial_model"))
    assert trained["query_tokens"].shape == initial["query_tokens"].shape
    assert {p.dtype for p in trained.values()} == {torch.bfloat16}
    assert not (trained["query_tokens"] == initial["query_tokens"].to(torch.bfloat16)).all()
    assert (trained["language_model.shared.weight"] == initial["language_model.shared.weight"].to(torch.bfloat16)).all()


def job_spec(tmp_path: Path, **changes) -> Path:
    """ray_job.yaml as shipped, less its pip list (the test cluster runs in this environment, which has it all)."""
    import yaml

    spec = yaml.safe_load((REPO / "ray_job.yaml").read_text())
    spec["runtime_env"].pop("pip")
    spec["runtime_env"]["working_dir"] = str(REPO)
    spec.update(changes)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(cluster: dict, spec: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`iblip submit SPEC --address ...` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "submit", str(spec), "--address", cluster["address"],
                           *flags], cwd=REPO, env={**cluster["env"], **(env or {})}, capture_output=True, text=True,
                          timeout=900)


@contextlib.contextmanager
def local_cluster(nodes: int = 2, extra_env=None, cwd: str | None = None):
    """Head + worker node as separate `ray start` processes (token auth on, as Ray 2.60 starts them).

    4 logical CPUs per node on this 2-core machine: the job's driver and the training workers hold
    theirs for the whole step, and Ray Data must still get CPUs to feed them. `nodes=1`: the head
    alone. `extra_env(tmp)`: more environment for the nodes (given the cluster's own temp dir). `cwd`:
    where the nodes start (their workers' working directory; default this process's).
    """
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's unix socket paths live under it
    # the job's `python` must be this interpreter (the venv is not necessarily on PATH)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token", "PATH": path,
           **(extra_env(tmp) if extra_env else {})}
    ray = str(Path(sys.executable).with_name("ray"))
    gcs, dashboard = free_port(), free_port()

    def run(*args, env=env):
        out = subprocess.run([ray, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr

    try:
        run("start", "--head", "--port", str(gcs), "--num-cpus", "4", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard), "--include-dashboard", "true", *agent_ports())
        if nodes > 1:
            # the second node gets a temp dir of its own, as a real second machine has (`--temp-dir`: a
            # worker node otherwise takes the head's): on a shared one both nodes' log monitors tail the
            # same worker logs (every line reaches the driver twice) and share one runtime-env cache
            os.makedirs(f"{tmp}/n2")
            run("start", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "4", "--temp-dir", f"{tmp}/n2",
                *agent_ports())
        yield {"address": f"http://127.0.0.1:{dashboard}", "gcs": f"127.0.0.1:{gcs}", "env": env, "tmp": tmp}
    finally:
        stop_processes_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
