"""`iblip run` / `python -m pipelines.workflow`: raw data to a registered (and served) model in one command.

Steps: sample_world (only without --raw) -> prepare -> train -> evaluate -> register -> serve
(with --serve). Every step is the stage's own code (`run_prepare`, `train`, `evaluate`, ...) on
one Ray (local, or the cluster a Ray job runs on), and each is an MLflow child run of the
workflow's parent run. A step whose config and inputs are unchanged since it last succeeded is
skipped (see components/workflow.py for the cache key); `--force STEP` reruns it and what
follows. A failing step stops the workflow with the step named; the same command resumes there
(training from its last checkpoint, in the same MLflow runs).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from typing import Any, Callable

from components.config import ConfigError, to_dict
from components.datasets import SourceError
from components.workflow import STEPS, WorkflowConfig, WorkflowState, content_hash, listing_fingerprint, step_config
from pipelines.common import (add_config_args, config_from_args, exit_code, init_ray, interrupt_text,
                              leave_ray_working_dir, run_main)

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError)


class StepFailed(RuntimeError):
    """A workflow step failed; the message names the step and how to resume."""

    def __init__(self, step: str, cause: BaseException, hint: str) -> None:
        self.step, self.cause = step, cause
        super().__init__(f"step '{step}' {what_happened(cause)}\n{hint}")


def what_happened(cause: BaseException) -> str:
    """'failed: ValueError: ...', or 'interrupted' / 'terminated (SIGTERM)' for a stop."""
    if isinstance(cause, KeyboardInterrupt):
        return interrupt_text(cause)
    return f"failed: {type(cause).__name__}: {cause}"


class Workflow:
    """Runs the steps in order against one state file and one MLflow parent run."""

    def __init__(self, cfg: WorkflowConfig, force: list[str] | None = None, serve: bool = False,
                 detach: bool = False, resume_command: str = "", log: Callable[[str], None] = print) -> None:
        from components import tracking

        cfg.validate()
        cfg.resolve_paths()
        unknown = [s for s in force or [] if s not in STEPS or s == "serve"]
        if unknown:
            raise ConfigError(f"--force {' '.join(unknown)}: no such step; steps: {', '.join(STEPS[:-1])}")
        self.cfg, self.force, self.serve, self.detach, self.log = cfg, set(force or []), serve, detach, log
        self.resume_command = resume_command or "the same command"
        self.work = cfg.path()
        self.state = WorkflowState.load(self.work)
        self.mlflow = tracking.MLflowConfig(
            tracking_uri=cfg.mlflow.tracking_uri, experiment=cfg.mlflow.experiment,
            artifact_location=cfg.mlflow.artifact_location, registered_model=cfg.mlflow.registered_model,
            alias=cfg.mlflow.alias,
        )
        self.mlflow.validate()
        self.tracking_uri = tracking.resolve_tracking_uri(self.mlflow)
        self.mlflow.tracking_uri = self.tracking_uri
        self.parent_id = ""
        self.report: dict[str, str] = {}  # step -> "ran" / "cached"

    # ------------------------------------------------------------------ the run

    def steps(self) -> list[str]:
        chosen = [s for s in STEPS if s != "serve" and (s != "sample_world" or not self.cfg.raw)]
        return chosen + (["serve"] if self.serve else [])

    def run(self) -> dict[str, Any]:
        from components import tracking

        started = time.perf_counter()
        tracking.check_reachable(self.tracking_uri)  # seconds, not MLflow's minutes of retries
        from pipelines.train import check_model_source

        check_model_source(self.cfg.train.model, self.cfg.ray.address, self.log, "train.")  # before prepare, too
        if self.serve:  # the serving ingress is chosen when the first step starts Ray
            from pipelines.serve import check_port, prepare_ingress

            check_port(self.cfg.serve, self.cfg.ray.address, "serve.port=...")  # before training, not after it
            prepare_ingress(self.cfg.serve, self.cfg.ray.address)
            self._check_replicas()
        self._open_parent()
        parent = tracking.RunLogger(self.parent_id, self.tracking_uri)
        self.log(f"[run] workflow {self.state.data['run_name']}: {' -> '.join(self.steps())}; work dir {self.work}; "
                 f"MLflow run {self.parent_id} at {self.tracking_uri}")
        for step in (s for s in self.steps() if s != "serve"):
            try:
                self._step(step, parent)
            except StepFailed as exc:
                parent.set_tags({"failed_step": step})
                parent.end(exc.cause)
                self._finish_state("failed")
                raise
        parent.finish("FINISHED")
        self._finish_state("succeeded")
        self._summary(started)
        if self.serve:  # the workflow run is complete before serving (which may block until Ctrl-C)
            self._serve()
        return self.state.data

    def _open_parent(self) -> None:
        """The workflow's MLflow run: a new one, or the unfinished one of the run being resumed."""
        from components import tracking

        data = self.state.data
        if data.get("status") not in ("running", "failed") or not data.get("run_name"):
            data["run_name"] = f"{self.cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.parent_id = tracking.start_run(self.mlflow, data["run_name"], tags={"stage": "workflow"})
        data.update(status="running", parent_run_id=self.parent_id)
        self.state.save()
        logger = tracking.RunLogger(self.parent_id, self.tracking_uri)
        logger.log_params(to_dict(self.cfg))
        logger.set_tags({"work_dir": self.work})

    def _finish_state(self, status: str) -> None:
        self.state.data["status"] = status
        self.state.save()

    def _key(self, step: str) -> str:
        upstream = {
            "sample_world": [],
            "prepare": [] if self.cfg.raw else ["sample_world"],
            "train": ["prepare"],
            "evaluate": ["prepare", "train"],
            "register": ["train", "evaluate"],
        }[step]
        inputs: dict[str, Any] = {u: self.state.step(u).get("output_id", "") for u in upstream}
        if step == "prepare" and self.cfg.raw:
            inputs["raw"] = listing_fingerprint(self.cfg.raw)
        return content_hash({"step": step, "config": step_config(self.cfg, step), "inputs": inputs})

    def _step(self, step: str, parent) -> None:
        try:
            key = self._key(step)
        except USER_ERRORS as exc:
            self.state.fail(step, str(exc))
            raise StepFailed(step, exc, self._hint(step)) from exc
        record = self.state.step(step)
        if step not in self.force and self.state.is_done(step, key) and self._outputs_exist(step, record["outputs"]):
            self.report[step] = "cached"
            self.log(f"[run] {step}: unchanged since {time.strftime('%Y-%m-%d %H:%M', time.localtime(record['finished']))}"
                     f" (MLflow run {record.get('run_id', '-')}), skipped; --force {step} reruns it")
            parent.set_tags({f"step.{step}": "cached", f"step.{step}.run_id": record.get("run_id", "")})
            return
        previous_name = record.get("run_name")
        record = self.state.begin(step, key)
        if "run_name" not in record:  # a fresh attempt (a resumed one keeps its run, checkpoints included)
            name = f"{self.state.data['run_name']}-{step}"
            record["run_name"] = name if name != previous_name else f"{name}-{time.strftime('%H%M%S')}"
            self.state.save()
        self.log(f"[run] {step}: running" + (f" (attempt {record['attempts']}, resuming)" if record["attempts"] > 1 else ""))
        t0 = time.perf_counter()
        try:
            self._ensure_ray()  # only once a step runs: a fully cached run needs no Ray
            outputs = getattr(self, f"_run_{step}")(record)
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised as StepFailed
            self.state.fail(step, what_happened(exc).removeprefix("failed: "))
            raise StepFailed(step, exc, self._hint(step, interrupted=isinstance(exc, KeyboardInterrupt))) from exc
        record = self.state.succeed(step, outputs)
        self.report[step] = "ran"
        parent.set_tags({f"step.{step}": "ran", f"step.{step}.run_id": record.get("run_id", "")})
        self.log(f"[run] {step}: done in {time.perf_counter() - t0:.1f}s")

    def _ensure_ray(self) -> None:
        init_ray(self.cfg.ray.address, self.cfg.ray.num_cpus)

    def _hint(self, step: str, interrupted: bool = False) -> str:
        extra = " (training goes on from its last checkpoint)" if step == "train" else ""
        return (f"{'Rerun' if interrupted else 'Fix the cause and rerun'} {self.resume_command}: the steps before "
                f"'{step}' are skipped and the workflow resumes at '{step}'{extra}. State: {self.state.uri}")

    def _outputs_exist(self, step: str, outputs: dict[str, Any]) -> bool:
        import fsspec

        paths = {"sample_world": "raw", "prepare": "manifest", "train": "export_config", "evaluate": "results"}
        if step in paths:
            fs, path = fsspec.core.url_to_fs(outputs.get(paths[step], ""))
            return bool(outputs.get(paths[step])) and fs.exists(path)
        from mlflow import MlflowClient

        client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        try:
            client.get_model_version(outputs["registered_model"], str(outputs["version"]))
        except Exception:  # noqa: BLE001 - any lookup failure means: register again
            return False
        return True

    # ------------------------------------------------------------------ MLflow child runs of our own

    def _child(self, record: dict[str, Any], step: str):
        """An MLflow child run for a step that does not track itself (sample world, prepare, register)."""
        import copy

        from components import tracking

        cfg = copy.deepcopy(self.mlflow)
        cfg.parent_run_id = self.parent_id
        record["run_id"] = tracking.start_run(cfg, record["run_name"], tags={"stage": step})
        self.state.save()
        logger = tracking.RunLogger(record["run_id"], self.tracking_uri)
        logger.log_params(step_config(self.cfg, step))
        return logger

    def _stage_mlflow(self, section) -> None:
        section.tracking_uri = self.tracking_uri
        section.experiment = self.cfg.mlflow.experiment
        section.artifact_location = self.cfg.mlflow.artifact_location
        section.parent_run_id = self.parent_id
        section.register = False

    # ------------------------------------------------------------------ steps

    def _run_sample_world(self, record: dict[str, Any]) -> dict[str, Any]:
        from components.sample_world.world import generate

        sw = self.cfg.sample_world
        raw = self.cfg.raw_root()
        _clear(raw)
        with self._child(record, "sample_world") as logger:
            written = generate(raw, sw.per_dataset, sw.seed, faults=sw.faults, sources=sw.sources or None,
                               log=lambda line: self.log(f"[sample-data] {line}"))
            logger.log_metrics({"files": sum(written.values()), "sources": len(written)}, step=0)
        return {"raw": raw, "files": sum(written.values())}

    def _run_prepare(self, record: dict[str, Any]) -> dict[str, Any]:
        import copy

        from pipelines.prepare import run_prepare

        cfg = copy.deepcopy(self.cfg.prepare)
        cfg.raw, cfg.out, cfg.ray = self.cfg.raw_root(), self.cfg.path("prepared"), self.cfg.ray
        _clear(cfg.out)  # the step's output is exactly this config's (prepare alone would merge into the old manifest)
        with self._child(record, "prepare") as logger:
            manifest = run_prepare(cfg, log=self.log)
            splits = [s for e in manifest["datasets"].values() for s in e["splits"].values()]
            totals = {k: sum(s[k] for s in splits) for k in ("records_read", "records_rejected", "rows_written")}
            logger.log_metrics(totals, step=0)
            logger.log_dict(manifest, "manifest.json")
        return {"prepared": cfg.out, "manifest": f"{cfg.out}/manifest.json", **totals}

    def _run_train(self, record: dict[str, Any]) -> dict[str, Any]:
        import copy

        from pipelines.train import train

        cfg = copy.deepcopy(self.cfg.train)
        cfg.data, cfg.storage, cfg.run_name, cfg.ray = self.cfg.path("prepared"), self.cfg.path("runs"), record["run_name"], self.cfg.ray
        cfg.export = ""
        self._stage_mlflow(cfg.mlflow)
        summary = train(cfg, log=self.log)
        record["run_id"] = summary["mlflow_run_id"]
        return {"export": summary["export"], "export_config": f"{summary['export']}/config.json",
                "run_id": summary["mlflow_run_id"], "accuracy_before": summary["accuracy_before"],
                "accuracy_after": summary["accuracy_after"], "resumed_from": list(summary.get("resumed_from") or [])}

    def _run_evaluate(self, record: dict[str, Any]) -> dict[str, Any]:
        import copy
        import math

        from pipelines.evaluate import RESULTS_JSON, evaluate

        cfg = copy.deepcopy(self.cfg.evaluate)
        cfg.data, cfg.model, cfg.ray = self.cfg.path("prepared"), self.state.step("train")["outputs"]["export"], self.cfg.ray
        cfg.run_name, cfg.out = record["run_name"], self.cfg.path("eval", record["run_name"])
        self._stage_mlflow(cfg.mlflow)
        result = evaluate(cfg, log=self.log)
        record["run_id"] = result["mlflow_run_id"]
        scores = {n: (None if math.isnan(s["value"]) else s["value"]) for n, s in result["scores"].items()}
        return {"out": result["out"], "results": f"{result['out']}/{RESULTS_JSON}", "run_id": result["mlflow_run_id"],
                "scores": scores}

    def _run_register(self, record: dict[str, Any]) -> dict[str, Any]:
        from mlflow import MlflowClient

        from components.pyfunc_model import log_and_register

        trained, evaluated = self.state.step("train")["outputs"], self.state.step("evaluate")["outputs"]
        name, alias = self.cfg.mlflow.registered_model, self.cfg.mlflow.alias
        with self._child(record, "register") as logger:
            t0 = time.perf_counter()
            # the pyfunc model lives in the training run (as with `iblip train`), so the version's run is the training run
            version = log_and_register(trained["export"], trained["run_id"], self.tracking_uri, name, alias)
            client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
            tags = {"workflow_run_id": self.parent_id, "eval_run_id": evaluated["run_id"],
                    "accuracy_after": f"{trained['accuracy_after']:.4f}"}
            tags.update({f"eval.{n}": f"{v:.4f}" for n, v in evaluated["scores"].items() if v is not None})
            for key, value in tags.items():
                client.set_model_version_tag(name, str(version), key, value)
            logger.log_metrics({"model_version": version}, step=0)
            logger.set_tags({"model_uri": f"models:/{name}@{alias}", "train_run_id": trained["run_id"]})
            self.log(f"[run] registered {name} v{version} @{alias} in {time.perf_counter() - t0:.1f}s")
        return {"registered_model": name, "version": version, "alias": alias, "model_uri": f"models:/{name}@{alias}",
                "run_id": record["run_id"]}

    def _serve_config(self):
        """The serve section with the workflow's Ray and MLflow settings (the model is the registered one)."""
        import copy

        cfg = copy.deepcopy(self.cfg.serve)
        cfg.mlflow.tracking_uri, cfg.ray = self.tracking_uri, self.cfg.ray
        return cfg

    def _check_replicas(self) -> None:
        """Before training, not after it: the serving replicas fit on Ray (which serving needs anyway)."""
        from pipelines.serve import check_replicas

        self._ensure_ray()
        check_replicas(self._serve_config(), self.log, prefix="serve.")

    def _serve(self) -> None:
        from pipelines.serve import serve_until_stopped, start, usage_text

        cfg = self._serve_config()
        cfg.model = self.state.step("register")["outputs"]["model_uri"]
        url = start(cfg, log=self.log, port_option="serve.port=...")
        self.log(usage_text(url, cfg.model_name()))
        if not self.detach:
            serve_until_stopped(cfg)

    # ------------------------------------------------------------------ the end

    def _summary(self, started: float) -> None:
        from components import tracking

        steps = self.state.data["steps"]
        train, evaluated, reg = (steps.get(s, {}).get("outputs", {}) for s in ("train", "evaluate", "register"))
        metrics = {k: train[k] for k in ("accuracy_before", "accuracy_after") if k in train}
        metrics.update({f"eval.{n}": v for n, v in evaluated.get("scores", {}).items() if v is not None})
        logger = tracking.RunLogger(self.parent_id, self.tracking_uri)
        logger.log_metrics(metrics, step=0)
        logger.log_dict({"steps": steps, "report": self.report}, "workflow_state.json")
        ran = [s for s, how in self.report.items() if how == "ran"]
        self.log(f"[run] finished in {time.perf_counter() - started:.0f}s; ran: {', '.join(ran) or 'nothing'}; "
                 f"skipped (unchanged): {', '.join(s for s in self.report if s not in ran) or 'nothing'}")
        if {"accuracy_before", "accuracy_after"} <= set(metrics):
            self.log(f"[run] held-in exact match: before {metrics['accuracy_before']:.3f}, "
                     f"after {metrics['accuracy_after']:.3f}")
        if evaluated:
            self.log(f"[run] held-out results: {evaluated['results']} (a table: results.md beside it)")
        if reg:
            self.log(f"[run] model: {reg['model_uri']} (v{reg['version']})")
        self.log(f"[run] browse the runs: {browse_command(self.tracking_uri)}")


def _clear(uri: str) -> None:
    """Empty a folder the workflow owns (under work_dir) before a step rewrites it."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def browse_command(tracking_uri: str) -> str:
    """How to look at the runs: `mlflow ui` for a local store, the server's address otherwise."""
    if tracking_uri.startswith(("sqlite:", "file:")):
        return f"mlflow ui --backend-store-uri {tracking_uri}   (then open http://127.0.0.1:5000)"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def run_workflow(cfg: WorkflowConfig, force: list[str] | None = None, serve: bool = False, detach: bool = False,
                 resume_command: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workflow; returns its state (per step: key, status, outputs, MLflow run id).

    Raises:
        StepFailed: a step failed (the state records it; the same call resumes there).
        ConfigError: the workflow config or --force is invalid.
    """
    return Workflow(cfg, force, serve, detach, resume_command, log).run()


def _step_list(value: str) -> list[str]:
    """`--force train,evaluate` -> ["train", "evaluate"] (the steps are checked by Workflow)."""
    return [step.strip() for step in value.split(",") if step.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iblip run",
        description="The whole workflow: (sample world) -> prepare -> train -> evaluate -> register -> (serve), "
        "each step an MLflow child run; unchanged steps are skipped.",
    )
    parser.add_argument("--raw", help="raw datasets root (fsspec URI); without it the sample world is generated")
    parser.add_argument("--work-dir", help="where the steps write (default work_dirs/workflow)")
    parser.add_argument("--name", help="workflow name (prefix of the MLflow run names)")
    parser.add_argument("--force", action="extend", type=_step_list, default=[], metavar="STEP[,STEP]",
                        help="rerun this step even if unchanged (and what follows); repeat it or give a comma list: "
                        f"{', '.join(STEPS[:-1])}")
    parser.add_argument("--serve", action="store_true", help="serve the registered model at the end (until Ctrl-C)")
    parser.add_argument("--detach", action="store_true", help="with --serve: return once deployed (on a cluster)")
    parser.add_argument("--address", help="Ray address ('' = start a local Ray)")
    add_config_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        base = {"raw": args.raw, "work_dir": args.work_dir, "name": args.name, "ray.address": args.address}
        cfg = config_from_args(WorkflowConfig, args, base)
        cfg.resolve_paths()
        leave_ray_working_dir()
        words = list(argv if argv is not None else sys.argv[1:])
        resume = "`" + shlex.join(["iblip", "run", *_without_force(words)]) + "`"
        try:
            state = run_workflow(cfg, args.force, args.serve, args.detach, resume_command=resume)
        except StepFailed as exc:
            if not isinstance(exc.cause, (ConfigError, SourceError, KeyboardInterrupt)):
                traceback.print_exception(exc.cause, file=sys.stderr)
            print(f"iblip run: {exc}", file=sys.stderr)
            return exit_code(exc.cause) if isinstance(exc.cause, KeyboardInterrupt) else 1
        print(json.dumps({"status": state["status"], "mlflow_run_id": state["parent_run_id"],
                          "model_uri": state["steps"].get("register", {}).get("outputs", {}).get("model_uri")}))
        return 0

    return run_main("run", body)


def _without_force(words: list[str]) -> list[str]:
    """The arguments to resume with: the same, less every `--force STEP` (it would rerun finished steps)."""
    out: list[str] = []
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
        elif word == "--force":
            skip_next = True
        elif not word.startswith("--force="):
            out.append(word)
    return out


if __name__ == "__main__":
    sys.exit(main())
