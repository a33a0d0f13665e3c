"""`iblip train` / `python -m pipelines.train`: instruction tuning on Ray Train with DeepSpeed ZeRO.

Driver (this process): loads the config, assembles the initial model once per run (stored under
the run's directory, so a relaunch reuses it), creates the MLflow run, builds the mixed training
stream and the validation rows as Ray Datasets (image preprocessing happens there), and runs a
`TorchTrainer`. Afterwards it registers the exported model in the MLflow Model Registry.

Workers (`train_worker`): DeepSpeed engine over the frozen model with the paper's trainable set,
gradient accumulation to the global batch, validation (loss + exact match of generated short
answers), checkpoints through `ray.train.Checkpoint`, progress lines and MLflow metrics (rank 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from components.config import to_dict
from components.training import TrainConfig
from pipelines.common import (add_config_args, check_resources, config_from_args, init_ray, on_cluster, run_main,
                              write_text)

INITIAL_MODEL = "initial_model"
INITIAL_COMPLETE = ".complete"  # written into the initial model's directory once its export has finished
FINAL_MODEL = "model"
SUMMARY = "train_summary.json"
REJECTS = "rejects"  # <run dir>/rejects/*.jsonl: training and validation rows set aside (undecodable images)
STREAM_MARGIN = 0.01


# ---------------------------------------------------------------- driver


def run_paths(cfg: TrainConfig) -> dict[str, str]:
    """storage (absolute when local), run directory, initial-model and export locations."""
    storage = cfg.storage if "://" in cfg.storage else os.path.abspath(cfg.storage)
    run_dir = f"{storage.rstrip('/')}/{cfg.run_name}"
    return {
        "storage": storage,
        "run_dir": run_dir,
        "initial": f"{run_dir}/{INITIAL_MODEL}",
        "export": cfg.export or f"{run_dir}/{FINAL_MODEL}",
    }


def _exists(uri: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def check_model_source(model, address: str = "", log=print, prefix: str = "") -> None:
    """The checkpoints a `ModelSourceConfig` with source instructblip / blip2 starts from can be loaded
    (a local model directory, or a Hugging Face id the hub or the local cache has:
    `components.model.check_model_path`). `address`: the job's Ray address; `prefix`: where the
    settings live in the caller's config ("train." in the workflow's)."""
    from components.model import check_model_path

    cluster = on_cluster(address)
    if model.source in ("instructblip", "blip2"):
        check_model_path(model.path, f"{prefix}model.path", cluster, log)
    if model.source == "blip2":
        check_model_path(model.bert, f"{prefix}model.bert", cluster, log)


def ensure_initial_model(cfg: TrainConfig, paths: dict[str, str], log=print) -> str:
    """The model the workers start from, as a directory; assembled once per run.

    source=instructblip loads straight from its path. tiny and blip2 are assembled here (tiny: from
    the tiny-model cache, pre-trained on first use, see `components.tiny_cache`) and saved under the run.
    """
    from components.model import assemble, export_model

    if cfg.model.source == "instructblip":
        return cfg.model.path
    import fsspec

    done = f"{paths['initial']}/{INITIAL_COMPLETE}"
    if _exists(done):
        log(f"[train] reusing the run's initial model {paths['initial']}")
        return paths["initial"]
    fs, path = fsspec.core.url_to_fs(paths["initial"])
    if fs.exists(path):  # an export that was stopped part way (Ctrl-C, a killed driver): its files cannot be trusted
        log(f"[train] the run's initial model {paths['initial']} has no {INITIAL_COMPLETE} mark (its export was "
            "interrupted, or a version before the mark wrote it); assembling it again")
        fs.rm(path, recursive=True)
    t0 = time.perf_counter()
    model, processor = assemble(cfg.model, seed=cfg.seed, log=log,
                                max_target_tokens=cfg.train_data.max_target_tokens)
    export_model(model, processor, paths["initial"])
    write_text(done, "")  # last: a relaunch reuses only a whole export
    log(f"[train] initial model ({cfg.model.source}) assembled in {time.perf_counter() - t0:.1f}s -> {paths['initial']}")
    return paths["initial"]


def _initial_model_while_ray_starts(cfg: TrainConfig, paths: dict[str, str], log=print) -> str:
    """`ensure_initial_model` and `init_ray`, overlapped when a local Ray is started.

    Starting a local Ray takes ~10 s on the 2-core machine, much of it waiting for its processes;
    the tiny model's assembly (minutes on its first run, under a second from the cache) runs
    meanwhile in a thread (torch releases the GIL). An error starting Ray, workers that do not fit on
    it (`check_workers`), or Ctrl-C stop the pre-training at its next step (`tiny_lm.stoppable`) and
    end the job at once instead of after it. Connecting to a cluster is quick and its errors should
    come before minutes of pre-training: then one after the other.
    """
    import ray

    local_start = not on_cluster(cfg.ray.address) and not ray.is_initialized()
    if not local_start:
        init_ray(cfg.ray.address, cfg.ray.num_cpus)
        check_workers(cfg, log)
        return ensure_initial_model(cfg, paths, log)
    from components.tiny_lm import stoppable

    outcome: dict[str, Any] = {}
    stop = threading.Event()

    def assemble() -> None:
        try:
            with stoppable(stop):
                outcome["initial"] = ensure_initial_model(cfg, paths, log)
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc

    worker = threading.Thread(target=assemble, name="assemble", daemon=True)
    worker.start()
    try:
        init_ray(cfg.ray.address, cfg.ray.num_cpus)
        check_workers(cfg, log)
        worker.join()
    except BaseException:  # Ray's start or the resource check failed, or Ctrl-C: end the pre-training first
        stop.set()  # it stops before its next step (a daemon thread still in torch at exit aborts the process)
        worker.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["initial"]


def check_workers(cfg: TrainConfig, log=print) -> None:
    """The training workers fit on the Ray cluster (`pipelines.common.check_resources`)."""
    sc = cfg.scaling
    fix = ("Use scaling.use_gpu=false (CPU workers), or fewer scaling.num_workers than there are GPUs" if sc.use_gpu else
           "Use fewer scaling.num_workers, a smaller scaling.cpus_per_worker, or more logical CPUs (ray.num_cpus)")
    check_resources([{"CPU": sc.cpus_per_worker, "GPU": 1.0 if sc.use_gpu else 0.0}] * sc.num_workers,
                    f"scaling asks for {sc.num_workers} training workers", fix, cfg.ray.address, log, fed_by_data=True)


def _pixels(batch, spec, augment, seed: int, keep_image: bool, rejects: str = ""):
    """Ray Data map_batches: encoded images -> normalised pixel arrays (+ seeded augmentation).

    A row whose image cannot be decoded (prepared data damaged after `iblip prepare` checked it) is set
    aside: left out of the batch, named in a warning, and recorded with its reason in a JSON-lines file
    under `rejects` (one per batch that had any), which the driver counts at the end. It used to end the
    job: every worker failed, was restarted `max_failures` times and failed again.
    """
    import random
    import uuid

    import numpy as np

    from components.imaging import MediaError, to_pixels

    ids = batch["sample_id"]
    positions = batch["mix_position"] if "mix_position" in batch else range(len(ids))
    pixels, kept, bad = [], [], []
    for i, (sid, pos, data) in enumerate(zip(ids, positions, batch["image"])):
        rng = random.Random(f"{seed}:{int(pos)}")
        try:
            pixels.append(to_pixels(data, spec, augment, rng))
            kept.append(i)
        except MediaError as exc:
            bad.append({"sample_id": str(sid), "reason": str(exc)})
    if bad:
        print(f"[train] warning: set aside {len(bad)} prepared sample(s) whose image cannot be decoded, e.g. "
              f"{bad[0]['sample_id']}: {bad[0]['reason']}", flush=True)
        if rejects:
            write_text(f"{rejects}/{uuid.uuid4().hex}.jsonl", "".join(json.dumps(b) + "\n" for b in bad))
    out = {k: (v if not bad else v[kept]) for k, v in batch.items() if k != "image" or keep_image}
    if "answers" in out:
        # numpy hands list columns over as arrays of arrays, which Arrow cannot take back (Ray Data then
        # pickles the column and warns); arrays of plain lists convert
        answers = np.empty(len(out["answers"]), dtype=object)
        for i, row in enumerate(out["answers"]):
            answers[i] = list(row)
        out["answers"] = answers
    out["pixel_values"] = np.stack(pixels) if pixels else np.zeros((0, 3, spec.size, spec.size), np.float32)
    return out


def count_rejects(rejects: str) -> tuple[int, int]:
    """(distinct prepared samples, stream rows) that `_pixels` set aside under `rejects` (a sample is
    met again wherever the stream repeats it, and again when a run resumes)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(rejects)
    if not fs.exists(path):
        return 0, 0
    ids = []
    for name in fs.glob(f"{path.rstrip('/')}/*.jsonl"):
        with fs.open(name, "r") as f:
            ids += [json.loads(line)["sample_id"] for line in f if line.strip()]
    return len(set(ids)), len(ids)


def check_data(cfg: TrainConfig, manifest: dict[str, Any]) -> None:
    """The chosen training sets are held-in training sets of the prepared data, and some have a
    validation split (the job validates on them).

    Raises:
        ConfigError: naming the sets that are not there, and those that are.
    """
    from components.config import ConfigError
    from components.mixing import training_sizes

    held_in = training_sizes(manifest)
    unknown = [d for d in cfg.train_data.datasets if d not in held_in]
    if not held_in or unknown:
        what = f"train_data.datasets {unknown} are not" if unknown else "there are no"
        raise ConfigError(f"{what} held-in training sets of {cfg.data}; it has {sorted(held_in) or 'none'}")
    if not validation_sets(cfg, manifest):
        chosen = cfg.train_data.datasets or list(held_in)
        raise ConfigError(f"none of the training sets {sorted(chosen)} has a validation split in {cfg.data}: "
                          "the job validates on them")


def validation_sets(cfg: TrainConfig, manifest: dict[str, Any]) -> list[str]:
    """The held-in datasets with a validation split that the job validates on (those of
    `train_data.datasets` when it names some)."""
    wanted = set(cfg.train_data.datasets) if cfg.train_data.datasets else None
    return [name for name, entry in sorted(manifest["datasets"].items())
            if entry["role"] == "held_in" and "val" in entry["splits"] and (wanted is None or name in wanted)]


def stream_length(cfg: TrainConfig) -> int:
    """Samples in the training stream: total_steps x global batch, and a margin (1%, at least one global
    batch) that stands in for rows set aside on the way (`_pixels`); the loop stops at total_steps."""
    import math

    needed = cfg.schedule.total_steps * cfg.global_batch_size
    return needed + max(cfg.global_batch_size, math.ceil(needed * STREAM_MARGIN))


def training_stream(cfg: TrainConfig, spec, manifest: dict[str, Any], rejects: str = ""):
    """The balanced mixed stream (`stream_length` samples), preprocessed for the ViT; undecodable images are
    set aside into `rejects` (see `_pixels`)."""
    from components.mixing import mixed_stream

    num_samples = stream_length(cfg)
    stream = mixed_stream(
        cfg.data, num_samples, seed=cfg.train_data.seed, balanced=cfg.train_data.balanced,
        datasets=cfg.train_data.datasets or None, local_limit_mb=cfg.train_data.local_read_limit_mb,
    )
    stream = stream.select_columns(["sample_id", "mix_position", "image", "instruction", "target"])
    return stream.map_batches(
        _pixels, fn_kwargs={"spec": spec, "augment": cfg.train_data.augment, "seed": cfg.seed, "keep_image": False,
                            "rejects": rejects},
        batch_size=64,
    )


def validation_rows(cfg: TrainConfig, spec, manifest: dict[str, Any], rejects: str = ""):
    """Held-in validation rows (a seeded subset of at most max_samples), materialised with pixels;
    undecodable images are set aside into `rejects` (see `_pixels`)."""
    import hashlib

    import pyarrow.parquet as pq

    from components.manifest import split_files
    from components.mixing import _fs
    from components.reading import read_rows

    files = [f for name in validation_sets(cfg, manifest) for f in split_files(cfg.data, name, "val")]
    if not files:
        raise ValueError(f"no held-in validation split in {cfg.data}: cannot validate")
    fs, _ = _fs(cfg.data)
    ids = [sid for f in files for sid in pq.read_table(f, columns=["sample_id"], filesystem=fs).column(0).to_pylist()]
    # a seeded, order-independent subset: the smallest hashes win
    ranked = sorted(ids, key=lambda s: hashlib.sha256(f"{cfg.seed}:{s}".encode()).hexdigest())
    chosen = set(ranked[: cfg.validation.max_samples])
    short = set(cfg.validation.short_answer_categories)
    columns = ["sample_id", "dataset", "category", "task", "image", "instruction", "target", "answers"]
    ds = read_rows(files, fs, columns, sorted(chosen), local_limit_mb=cfg.train_data.local_read_limit_mb, block_rows=64)
    ds = ds.map_batches(_mark_short_answers, fn_kwargs={"short": sorted(short)}, batch_format="pyarrow")
    ds = ds.map_batches(_pixels, fn_kwargs={"spec": spec, "augment": None, "seed": cfg.seed, "keep_image": True,
                                            "rejects": rejects}, batch_size=64)
    return ds.materialize()


@contextlib.contextmanager
def _own_sigint():
    """Give SIGINT back to its previous handler after training.

    `TorchTrainer.fit` installs a SIGINT handler (Ray Train's aborts the training run; ours, see
    `_interruptible`, raises KeyboardInterrupt) and leaves it installed: with Ray Train's, Ctrl-C after
    training, while `iblip run` evaluates or serves, was swallowed; and a process that ignored SIGINT
    (started in the background) must go on ignoring it.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _interruptible(trainer_class):
    """`trainer_class` whose `fit` ends on Ctrl-C with a KeyboardInterrupt, like the rest of the job.

    Ray Train's own Ctrl-C handler (installed in `fit`, main thread only) asks its controller to abort
    and then ends `fit` with SystemExit(1), no message: `iblip train` exited 1 and marked the MLflow
    run FAILED. With a KeyboardInterrupt the job says "interrupted", exits 130 and marks the run
    KILLED; the driver's exit ends the controller and workers (a local Ray is shut down; on a cluster
    they belong to the driver's job), as after SIGTERM.
    """
    class Trainer(trainer_class):
        def _register_sigint_handler(self, controller) -> None:  # the hook Ray Train's fit calls
            signal.signal(signal.SIGINT, signal.default_int_handler)

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer


def _mark_short_answers(batch, short: list[str]):
    """Mark the validation rows scored by exact match of a generated short answer."""
    import pyarrow as pa
    import pyarrow.compute as pc

    is_short = pc.and_(pc.is_in(batch.column("category"), value_set=pa.array(short, pa.string())),
                       pc.equal(batch.column("task"), "generate"))
    return batch.append_column("short_answer", is_short)


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run the whole training job; returns the summary (accuracy before/after, paths, MLflow ids)."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from components import tracking
    from components.imaging import PixelSpec
    from components.manifest import read_manifest
    from components.training import deepspeed_config
    from transformers import InstructBlipProcessor

    if not cfg.run_name:
        cfg.run_name = time.strftime("instructblip-%Y%m%d-%H%M%S")
    cfg.validate()
    manifest = read_manifest(cfg.data)
    check_data(cfg, manifest)
    # workers run in other directories: hand them the resolved URI, not "" (= their own cwd)
    cfg.mlflow.tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow)
    # these fail in seconds, before the model's assembly (minutes when a tiny model is first pre-trained)
    tracking.check_reachable(cfg.mlflow.tracking_uri)
    check_model_source(cfg.model, cfg.ray.address, log)
    paths = run_paths(cfg)
    done = finished_summary(cfg, paths, log)
    if done is not None:
        registered = (f"registered as {done['registered_model']} v{done['model_version']} @{done['alias']}"
                      if done.get("model_version") else "not registered")
        log(f"[train] run {cfg.run_name} finished already: {done['step']} of {cfg.schedule.total_steps} steps, "
            f"MLflow run {done['mlflow_run_id']}, model {done['export']} ({registered}); nothing to train. "
            "Choose another --run-name to train again, or raise schedule.total_steps to train this run further")
        return done
    initial = _initial_model_while_ray_starts(cfg, paths, log)
    processor = InstructBlipProcessor.from_pretrained(initial)
    spec = PixelSpec.from_processor(processor)

    run_id = tracking.start_run(cfg.mlflow, cfg.run_name, tags={"stage": "train", "model.source": cfg.model.source})
    driver_log = tracking.RunLogger(run_id, cfg.mlflow.tracking_uri)
    driver_log.log_params(tracking.flatten_params(to_dict(cfg)))
    driver_log.log_dict(deepspeed_config(cfg), "deepspeed_config.json")
    driver_log.log_input_manifest(manifest, cfg.data)
    log(f"[train] run {cfg.run_name}: MLflow run {run_id} at {cfg.mlflow.tracking_uri}")

    # our progress lines report the training rate; Ray Data's bars in the workers would garble them
    ray.data.DataContext.get_current().enable_progress_bars = False
    rejects = f"{paths['run_dir']}/{REJECTS}"
    datasets = {"train": training_stream(cfg, spec, manifest, rejects), "val": validation_rows(cfg, spec, manifest, rejects)}
    worker_env = {
        "DS_ACCELERATOR": "cuda" if cfg.scaling.use_gpu else "cpu",
        "TOKENIZERS_PARALLELISM": "false",
        # rank 0 prints its own progress lines; Ray Train's print patch would log each twice
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    }
    trainer = _interruptible(TorchTrainer)(
        train_worker,
        train_loop_config={"cfg": to_dict(cfg), "initial": initial, "paths": paths, "run_id": run_id},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run_name,
            storage_path=paths["storage"],
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            worker_runtime_env={"env_vars": worker_env},
        ),
        datasets=datasets,
    )
    try:
        with _own_sigint():
            result = trainer.fit()
    except BaseException as exc:  # a rerun with this run name reopens the MLflow run
        driver_log.end(exc)
        from pipelines.train_loop import STREAM_RAN_OUT

        set_aside, _ = count_rejects(rejects)
        if set_aside and STREAM_RAN_OUT in str(exc):
            raise ValueError(f"{set_aside} prepared samples were set aside because their images cannot be decoded "
                             f"(listed in {rejects}), more than the training stream's margin; repair the prepared "
                             f"data or prepare it again ({exc.__class__.__name__}: {STREAM_RAN_OUT})") from exc
        raise
    summary = dict(result.metrics or {})
    set_aside, occurrences = count_rejects(rejects)
    summary["samples_set_aside"] = set_aside
    if set_aside:
        log(f"[train] warning: {set_aside} prepared samples were set aside because their images cannot be decoded "
            f"({occurrences} times in the training stream and validation); listed in {rejects}")
    if "accuracy_after" not in summary:
        raise RuntimeError(f"training finished without a final report (metrics: {summary})")
    version = tracking_register(cfg, paths["export"], run_id, log) if cfg.mlflow.register else None
    summary.update({"run_name": cfg.run_name, "mlflow_run_id": run_id, "export": paths["export"],
                    "registered_model": cfg.mlflow.registered_model, "model_version": version,
                    "alias": cfg.mlflow.alias if version else None})
    driver_log.log_metrics({"accuracy_before": summary["accuracy_before"], "accuracy_after": summary["accuracy_after"],
                            "samples_set_aside": set_aside}, step=cfg.schedule.total_steps)
    driver_log.log_dict(summary, SUMMARY)
    driver_log.finish("FINISHED")
    write_text(f"{paths['run_dir']}/{SUMMARY}", json.dumps(summary, indent=2))
    log(
        f"[train] exact match on held-in validation short answers: before {summary['accuracy_before']:.3f}, "
        f"after {summary['accuracy_after']:.3f} ({100 * (summary['accuracy_after'] - summary['accuracy_before']):+.1f} points)"
    )
    registered = f"registered as {cfg.mlflow.registered_model} v{version} @{cfg.mlflow.alias}" if version else "not registered"
    log(f"[train] final model: {paths['export']} ({registered})")
    return summary


def finished_summary(cfg: TrainConfig, paths: dict[str, str], log=print) -> dict[str, Any] | None:
    """The summary of this run name's job when it has finished what `cfg` asks for, else None.

    Finished means: the driver wrote `<run dir>/train_summary.json` at the end of a job that trained
    `schedule.total_steps` steps, its export is still there, its MLflow run (in this tracking store)
    is FINISHED, and the model is registered under `mlflow.registered_model` with `mlflow.alias` when
    registration is on. Relaunching such a run used to resume from its last checkpoint with nothing left to train,
    validate and export the same model again, and register it as a new version in a new MLflow run.
    More steps (a larger `total_steps`) resume it as before; any other difference (a deleted export
    or MLflow run, a model not registered) trains on from the last checkpoint too.
    """
    import fsspec

    from components import tracking

    try:
        with fsspec.open(f"{paths['run_dir']}/{SUMMARY}", "r") as f:
            summary = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # a summary cut short: the job is not known to be finished
        log(f"[train] ignoring {paths['run_dir']}/{SUMMARY}: {exc}")
        return None
    if summary.get("step") != cfg.schedule.total_steps or summary.get("export") != paths["export"]:
        return None
    if not _exists(f"{paths['export']}/config.json"):
        return None
    wanted = (cfg.mlflow.registered_model, cfg.mlflow.alias)
    if cfg.mlflow.register and not (summary.get("model_version")
                                    and (summary.get("registered_model"), summary.get("alias")) == wanted):
        return None
    run_id = summary.get("mlflow_run_id")
    return summary if run_id and tracking.run_status(cfg.mlflow.tracking_uri, run_id) == "FINISHED" else None


def tracking_register(cfg: TrainConfig, export: str, run_id: str, log=print) -> int:
    """Log the exported model as an MLflow pyfunc model and register it under the configured alias."""
    from components import tracking
    from components.pyfunc_model import log_and_register

    t0 = time.perf_counter()
    version = log_and_register(export, run_id, tracking.resolve_tracking_uri(cfg.mlflow),
                               cfg.mlflow.registered_model, cfg.mlflow.alias)
    log(f"[train] registered {cfg.mlflow.registered_model} v{version} in {time.perf_counter() - t0:.1f}s")
    return int(version)


# ---------------------------------------------------------------- workers


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: DeepSpeed training of the trainable set, validation, checkpoints."""
    from components.config import from_dict
    from pipelines.train_loop import WorkerLoop

    cfg = from_dict(TrainConfig, loop_config["cfg"])
    WorkerLoop(cfg, loop_config["initial"], loop_config["paths"], loop_config["run_id"]).run()


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iblip train",
        description="Instruction-tune InstructBLIP's Q-Former on Ray Train + DeepSpeed ZeRO, tracked in MLflow.",
    )
    parser.add_argument("--data", help="the `iblip prepare` output (local path or URI)")
    parser.add_argument("--run-name", help="run name; the same name resumes that run")
    parser.add_argument("--storage", help="where runs live (default work_dirs/runs)")
    parser.add_argument("--address", help="Ray address ('' = start a local Ray)")
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        base = {"data": args.data, "run_name": args.run_name, "storage": args.storage, "ray.address": args.address}
        cfg = config_from_args(TrainConfig, args, base)
        summary = train(cfg)
        print(json.dumps({k: summary[k] for k in ("accuracy_before", "accuracy_after", "export", "mlflow_run_id")}))
        return 0

    return run_main("train", body)


if __name__ == "__main__":
    sys.exit(main())
