"""What every pipeline entry point shares: config loading from the command line, Ray start-up, errors."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from components.config import ConfigError, describe, load_config

T = TypeVar("T")

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config FILE, --show-config, and free `key.path=value` overrides."""
    parser.add_argument("--config", metavar="FILE", help="YAML config file (any fsspec URI)")
    parser.add_argument(
        "--show-config", action="store_true", help="print every config key with its default and meaning, then exit"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. mixing.weights.okvqa=2.0")


def config_from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    """Load the stage config from --config, the stage's explicit flags (`base`) and the overrides.

    Precedence: defaults < config file < explicit flags < dotted overrides.
    """
    if args.show_config:
        print("\n".join(describe(cls)))
        raise SystemExit(0)
    # explicit flags go in as overrides so that they win over the file
    flag_overrides = [f"{k}={_yaml_scalar(v)}" for k, v in (base or {}).items() if v is not None]
    return load_config(cls, args.config, flag_overrides + list(args.overrides))


def _yaml_scalar(value: Any) -> str:
    import json

    # JSON is valid YAML and quotes strings safely (URIs with ':' etc.)
    return json.dumps(value)


def local_cpus() -> int:
    """Default logical CPUs of a local Ray: twice the cores.

    Ray Data splits its CPU budget between the operators of a pipeline and long-lived
    workers hold theirs; with only as many logical CPUs as cores, cores sit idle (or a
    pipeline starves) on a small machine. Oversubscribing 2x keeps every core busy.
    """
    return 2 * (os.cpu_count() or 1)


# ports free_port hands out, so that one process never gets the same port twice
_HANDED_OUT: set[int] = set()


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux: /proc; elsewhere the widest usual one, 32768-65535)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 65535


def free_port(low: int = 20000, high: int = 25000, host: str = "0.0.0.0") -> int:
    """A TCP port in [low, high) that nothing on `host` holds now, for a process started later to listen on
    (the default host, all interfaces, finds a port held on any address of this machine).

    Between this call and that listen, Ray and everything else on the machine keep opening sockets;
    a port from the kernel's ephemeral range (what `bind(port 0)` gives) can be taken by any of them,
    one outside it only by a program that asks for it by number. So: a random port of [low, high)
    outside that range, never one this process handed out before (the default span lies between Ray's
    worker ports, 10002-19999, and Serve's direct-ingress ports, 30000-31000). If none of them is
    free, the kernel's choice.
    """
    import random
    import socket

    eph_low, eph_high = ephemeral_ports()
    candidates = [p for p in range(low, high) if not eph_low <= p <= eph_high and p not in _HANDED_OUT]
    for port in random.sample(candidates, k=min(64, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    _HANDED_OUT.add(port)
    return port


def on_cluster(address: str = "") -> bool:
    """Does a job with this Ray address (or RAY_ADDRESS, as a submitted job has) run on a cluster
    rather than on a local Ray it starts itself?"""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def init_ray(address: str = "", num_cpus: int = 0) -> None:
    """Connect to a Ray cluster, or start a local one with an explicit logical CPU count.

    A local Ray is given `num_cpus` logical CPUs (default: `local_cpus()`, twice the
    cores) so that stages which hold CPUs (training workers) cannot starve the Ray
    Data tasks feeding them.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": True}
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        kwargs["address"] = address
        if address.startswith("ray://"):
            # Ray Client: ship our packages to the cluster's workers
            import components
            import pipelines

            kwargs["runtime_env"] = {
                "py_modules": [str(Path(components.__file__).parent), str(Path(pipelines.__file__).parent)]
            }
    else:
        kwargs["num_cpus"] = num_cpus or local_cpus()
        # the dashboard (on 127.0.0.1) also serves the State API: Ray Train's placement-group cleaner
        # polls it every second and warns on every miss without it; no measurable start-up cost here
        kwargs["include_dashboard"] = True
        kwargs["dashboard_host"] = "127.0.0.1"
    try:
        ray.init(**kwargs)
    except SystemExit as exc:  # SIGTERM while Ray starts: ray.init's interim handler exits with the signal's number
        if _sigterm_owner and exc.code == signal.SIGTERM:
            raise Terminated("SIGTERM while Ray started") from exc
        raise
    if _sigterm_owner:  # ray.init put its own SIGTERM handler (a stack dump and an abort) over ours
        stop_on_sigterm()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, `ray job stop`, Kubernetes stopping a pod), raised in the main thread.

    A KeyboardInterrupt, so that everything that cleans up after Ctrl-C (a pre-training thread asked to
    stop, an MLflow run marked KILLED, a half-deployed Serve app deleted) does so after SIGTERM too.
    """


# set while `run_main` owns the process's SIGTERM handling (a command, not a library call)
_sigterm_owner = False
# set by SIGTERM: Ray's blocking calls (ray.get in `TorchTrainer.fit`) turn any KeyboardInterrupt
# into a plain one, so the type alone cannot tell
_terminated = False


def stop_on_sigterm() -> None:
    """SIGTERM raises `Terminated` in the main thread. Only the main thread may set signal handlers:
    called from another one it does nothing."""
    def stop(signum, frame):
        global _terminated
        _terminated = True
        raise Terminated(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def unplaceable(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> int:
    """How many of `bundles` (one worker's, replica's or actor's resources each) cannot be placed on
    `nodes` (each node's total resources), packing the largest first (GPUs, then CPUs): 0 when all fit."""
    free = [dict(node) for node in nodes]
    left = 0
    for bundle in sorted(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0)), reverse=True):
        need = {k: v for k, v in bundle.items() if v > 0}
        home = next((n for n in free if all(n.get(k, 0.0) >= v - 1e-9 for k, v in need.items())), None)
        if home is None:
            left += 1
            continue
        for k, v in need.items():
            home[k] -= v
    return left


def _describe_nodes(nodes: list[dict[str, float]]) -> str:
    def one(node: dict[str, float]) -> str:
        return ", ".join(f"{k} {node.get(k, 0.0):g}" for k in ("CPU", "GPU"))

    return "; ".join(f"node {i + 1}: {one(n)}" for i, n in enumerate(nodes)) or "no nodes"


# what a Ray Data pipeline needs beside the workers or actors it feeds: its tasks ask for a CPU each
DATA_TASK = {"CPU": 1.0}


def _describe_bundle(bundle: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k} {v:g}" for k, v in bundle.items() if v > 0) + "}"


def check_resources(bundles: list[dict[str, float]], what: str, fix: str, address: str = "", log=print,
                    fed_by_data: bool = False, warn_only: bool = False) -> None:
    """After `init_ray`: can Ray place every bundle (`what` names them, `fix` says which settings
    ask for them)? Ray itself would wait for ever for a GPU or CPUs the cluster does not have,
    printing only "cannot be scheduled right now" warnings. `fed_by_data`: a Ray Data pipeline feeds
    them, whose tasks need a CPU left free (workers holding every CPU starve it: the job hangs).

    On a Ray this process started (no `address`, no RAY_ADDRESS) nothing will ever add resources:
    ConfigError. On a cluster the autoscaler may add nodes: a warning, and the job goes on. `warn_only`:
    a warning in any case (the caller cannot tell which Ray it runs on).
    """
    import ray

    nodes = [{k: float(v) for k, v in node["Resources"].items()} for node in ray.nodes() if node.get("Alive")]
    left = unplaceable(bundles + ([DATA_TASK] if fed_by_data else []), nodes)
    if not left:
        return
    data = f" and {_describe_bundle(DATA_TASK)} free for the Ray Data tasks that feed them" if fed_by_data else ""
    problem = (f"{what}: {len(bundles)} x {_describe_bundle(bundles[0])}{data}, and {left} of these cannot be "
               f"placed on this Ray ({_describe_nodes(nodes)})")
    if warn_only or on_cluster(address):
        log(f"warning: {problem}; the job waits until the cluster has room (its autoscaler may add nodes). {fix}")
        return
    raise ConfigError(f"{problem}; a local Ray never gets more, so the job would wait for ever. {fix}")


def write_text(uri: str, text: str) -> None:
    """Write a text file to a local path or an fsspec URI (a job's results, its summary)."""
    import fsspec

    with fsspec.open(uri, "w") as f:
        f.write(text)


def leave_ray_working_dir() -> None:
    """In a Ray job's driver, move out of the job's working_dir copy (call after resolving relative paths).

    Ray 2.60 deletes and unpacks that directory again whenever it sets up the job's runtime env for
    new workers on the node (training workers, Ray Data tasks with their own env vars), which leaves
    the driver in a deleted directory: every later `os.getcwd()` (fsspec's rm, for one) fails with
    FileNotFoundError. The code stays importable (sys.path holds the path, which is unpacked again).
    """
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = os.environ.get("PWD", "")
    if "runtime_resources/working_dir_files" in cwd:
        import tempfile

        os.chdir(tempfile.gettempdir())


def run_main(stage: str, body: Callable[[], int | None]) -> int:
    """Run a stage; user-facing errors print one clear line (no traceback) and exit 2.

    Ctrl-C ends it with exit 130, SIGTERM with 143 (128 + the signal), each after the same cleanup:
    SIGTERM is turned into `Terminated`, a KeyboardInterrupt, for the stage's duration (Python's
    default would end the process at once, and the handler ray.init installs aborts it with a stack
    dump, leaving a half-built model cache or a half-deployed app behind).
    """
    from components.datasets import SourceError

    global _sigterm_owner, _terminated
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main:
        _sigterm_owner, _terminated = True, False
        stop_on_sigterm()
    try:
        return body() or 0
    except KeyboardInterrupt as exc:
        print(f"iblip {stage}: {interrupt_text(exc)}", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:  # noqa: BLE001 - reported below
        # the outermost user-facing error of the chain (ours wrap library errors; Ray wraps ours)
        ray_error = _ray_error_type()
        for cause in _chain(exc):
            if ray_error and isinstance(cause, ray_error):
                continue  # Ray's wrapper (it may subclass the wrapped type); its cause says it plainly
            if isinstance(cause, (ConfigError, SourceError, FileNotFoundError, ValueError)):
                print(f"iblip {stage}: error: {cause}", file=sys.stderr)
                return 2
        raise
    finally:
        if main:
            _sigterm_owner, _terminated = False, False
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def terminated(exc: KeyboardInterrupt) -> bool:
    """Did SIGTERM (rather than Ctrl-C) cause this interrupt?"""
    return isinstance(exc, Terminated) or _terminated


def interrupt_text(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if terminated(exc) else "interrupted"


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal's number."""
    return 128 + (signal.SIGTERM if terminated(exc) else signal.SIGINT)


def _ray_error_type():
    ray_exceptions = sys.modules.get("ray.exceptions")
    return getattr(ray_exceptions, "RayError", None)


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and its causes, outermost first (a Ray task error's `cause` is followed like __cause__)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        cause = getattr(exc, "cause", None) or exc.__cause__
        exc = cause if isinstance(cause, BaseException) else None
    return chain
