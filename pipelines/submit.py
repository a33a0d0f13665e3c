"""`iblip submit JOB.yaml --address http://HEAD:8265 [--wait]`: submit a Ray job described in YAML.

The YAML's keys are the keyword arguments of Ray's `JobSubmissionClient.submit_job`, one to one
(`entrypoint`, `runtime_env`, `metadata`, `submission_id`, `entrypoint_num_cpus`,
`entrypoint_num_gpus`, `entrypoint_memory`, `entrypoint_resources`, `entrypoint_label_selector`), so
the same job goes through `ray job submit` unchanged (README, "Run on a cluster"). `${VAR}` (or
`${VAR:-default}`) in `runtime_env.env_vars` values is replaced by the submitter's environment
variable VAR, so tracking URIs and credentials stay out of the file; values are never printed.
"""

import argparse
import asyncio
import os
import re
import sys
import time
from typing import Any

from components.config import ConfigError, read_yaml
from pipelines.common import run_main

JOB_FIELDS = ("entrypoint", "runtime_env", "metadata", "submission_id", "entrypoint_num_cpus", "entrypoint_num_gpus",
              "entrypoint_memory", "entrypoint_resources", "entrypoint_label_selector")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")  # ${VAR} or ${VAR:-default}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 60  # how long to retry while a freshly started head has no job agent yet


def _expand(value: str, where: str) -> str:
    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where} uses ${{{name}}}, but {name} is not set in this environment")

    return _VAR.sub(sub, value)


def load_job_spec(path: str) -> dict[str, Any]:
    """The submit_job keyword arguments of a job YAML, checked, with ${VAR}s in env_vars expanded.

    Raises:
        ConfigError: unknown keys, no entrypoint, wrong types, or an unset ${VAR}.
    """
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a job spec is a mapping of submit_job arguments")
    unknown = sorted(set(spec) - set(JOB_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; a job spec holds {', '.join(JOB_FIELDS)}")
    if not isinstance(spec.get("entrypoint"), str) or not spec["entrypoint"].strip():
        raise ConfigError(f"{path}: entrypoint (the shell command the job runs) is required")
    for key in ("runtime_env", "metadata", "entrypoint_resources", "entrypoint_label_selector"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise ConfigError(f"{path}: {key} must be a mapping, got {type(spec[key]).__name__}")
    for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ConfigError(f"{path}: {key} must be a number >= 0, got {value!r}")
    runtime_env = dict(spec.get("runtime_env") or {})
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict):
        raise ConfigError(f"{path}: runtime_env.env_vars must be a mapping")
    if env_vars:
        runtime_env["env_vars"] = {str(k): _expand(str(v), f"{path}: runtime_env.env_vars.{k}")
                                   for k, v in env_vars.items()}
    if spec.get("metadata"):
        spec["metadata"] = {str(k): str(v) for k, v in spec["metadata"].items()}
    out = {k: v for k, v in spec.items() if v is not None}
    if runtime_env:
        out["runtime_env"] = runtime_env
    return out


def submit(spec: dict[str, Any], address: str, wait: bool, log=print) -> int:
    """Submit; with `wait`, stream the logs and return 0 if the job SUCCEEDED, else 1 (Ctrl-C stops the
    streaming and says how to stop the job, which goes on)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise ConfigError(
            f"the cluster at {address} wants a Ray auth token: set RAY_AUTH_MODE=token and give the cluster's "
            "token as RAY_AUTH_TOKEN (or in ~/.ray/auth_token); see README, 'Run on a cluster'") from exc
    except ConnectionError as exc:
        raise ConfigError(f"no Ray job server answers at {address} (the head's dashboard address, port 8265 by "
                          f"default): {exc}") from exc
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            submission_id = client.submit_job(**spec)
            break
        except RuntimeError as exc:  # a cluster that has just started may not have its job agent up yet
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)

    async def follow() -> None:
        async for lines in client.tail_job_logs(submission_id):
            print(lines, end="", flush=True)

    try:  # from here on the job exists: a Ctrl-C, even this early, must say so
        log(f"[submit] submitted {submission_id} to {address}: {spec['entrypoint']}")
        log(f"[submit] logs: ray job logs --address {address} --follow {submission_id}")
        if not wait:
            return 0
        asyncio.run(follow())
        status = str(client.get_job_status(submission_id).value)
        while status not in TERMINAL:  # the log stream can end a moment before the status is final
            time.sleep(1)
            status = str(client.get_job_status(submission_id).value)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM stops the following, not the job
        log(f"[submit] stopped following {submission_id}; the job keeps running on the cluster. Stop it with: "
            f"ray job stop --address {address} {submission_id}")
        raise
    info = client.get_job_info(submission_id)
    log(f"[submit] {submission_id} {status}" + (f": {info.message}" if info.message else ""))
    return 0 if status == "SUCCEEDED" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iblip submit", description="Submit a Ray job described in a YAML file.")
    parser.add_argument("spec", help="the job YAML (e.g. ray_job.yaml)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                        help="the cluster's dashboard/job server (default $RAY_ADDRESS or http://127.0.0.1:8265)")
    parser.add_argument("--wait", action="store_true", help="stream the logs and exit with the job's outcome")
    args = parser.parse_args(argv)
    return run_main("submit", lambda: submit(load_job_spec(args.spec), args.address, args.wait))


if __name__ == "__main__":
    sys.exit(main())
