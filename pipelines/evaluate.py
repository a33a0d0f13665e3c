"""`iblip evaluate` / `python -m pipelines.evaluate`: zero-shot evaluation on the held-out datasets.

Driver: reads the prepared manifest, picks the held-out datasets, reads their Parquet with Ray Data
and streams the rows through a pool of model actors (`map_batches` with a callable class: each actor
loads the model once; CPU here, one GPU each on a cluster). The actors generate answers or rank
candidates (`components.evaluation`); the driver gathers the predictions as they come, computes each
dataset's metric, writes results.json / results.md / predictions.jsonl and logs everything to an
MLflow run (metrics, the table, a sample of predictions with their images).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from typing import Any

from components.evaluation import EvalConfig
from pipelines.common import (add_config_args, check_resources, config_from_args, init_ray, on_cluster, run_main,
                              write_text)

# columns the actors read, and the ones the driver needs back besides the predictions
READ_COLUMNS = ["sample_id", "dataset", "category", "task", "instruction", "image", "frames", "answers", "choices",
                "label_index"]
RESULTS_JSON, RESULTS_MD, PREDICTIONS = "results.json", "results.md", "predictions.jsonl"


def eval_split(entry: dict[str, Any]) -> str:
    """The split a held-out dataset is evaluated on: test, else val (what its release scores)."""
    for split in ("test", "val"):
        if split in entry["splits"]:
            return split
    return sorted(entry["splits"])[0]


def select_datasets(cfg: EvalConfig, manifest: dict[str, Any]) -> dict[str, str]:
    """dataset -> split to evaluate. Raises ValueError naming unknown or held-in datasets."""
    held_out = {n: e for n, e in sorted(manifest["datasets"].items()) if e["role"] == "held_out" and e["splits"]}
    if not cfg.datasets:
        if not held_out:
            raise ValueError(f"no held-out dataset in {cfg.data}: nothing to evaluate")
        return {n: eval_split(e) for n, e in held_out.items()}
    wrong = [n for n in cfg.datasets if n not in held_out]
    if wrong:
        raise ValueError(f"not held-out datasets of {cfg.data}: {', '.join(wrong)} (held-out: {', '.join(held_out)})")
    return {n: eval_split(held_out[n]) for n in cfg.datasets}


class EvalActor:
    """A Ray Data actor: one loaded model answering batches of prepared rows."""

    def __init__(self, model: str, tracking_uri: str, cfg: dict[str, Any], preview: dict[str, float]) -> None:
        import os

        import torch

        from components.config import from_dict
        from components.evaluation import Evaluator
        from components.inference import load_answerer
        from components.pyfunc_model import local_model

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.cfg = from_dict(EvalConfig, cfg)
        use_gpu = self.cfg.inference.gpus_per_actor > 0 and torch.cuda.is_available()
        if not use_gpu and self.cfg.inference.torch_threads:
            torch.set_num_threads(self.cfg.inference.torch_threads)
        with local_model(model, tracking_uri) as model_dir:
            # bf16 on a GPU: the paper evaluates in half precision
            answerer = load_answerer(model_dir, device="cuda" if use_gpu else "cpu", bf16_on_gpu=True)
        self.evaluator = Evaluator(answerer.model, answerer.collator, self.cfg.inference.score_batch_size)
        self.preview = preview

    def _keep_preview(self, sample_id: str, dataset: str) -> bool:
        return zlib.crc32(sample_id.encode()) % 10_000 < 10_000 * self.preview.get(dataset, 0.0)

    def __call__(self, batch) -> dict[str, list]:
        from components.evaluation import predict_rows

        rows = batch.to_pylist()
        preds = predict_rows(self.evaluator, rows, self.cfg)
        out: dict[str, list] = {k: [] for k in ("sample_id", "dataset", "instruction", "prediction", "scores",
                                                "prob_yes", "error", "answers", "choices", "label_index", "preview")}
        for row, p in zip(rows, preds):
            out["sample_id"].append(p.sample_id)
            out["dataset"].append(p.dataset)
            out["instruction"].append(row["instruction"])
            out["prediction"].append(p.prediction)
            out["scores"].append([float(s) for s in p.scores])
            out["prob_yes"].append(float(p.prob_yes))
            out["error"].append(p.error)
            out["answers"].append([str(a) for a in row.get("answers") or []])
            out["choices"].append([str(c) for c in row.get("choices") or []])
            out["label_index"].append(int(row.get("label_index", -1) if row.get("label_index") is not None else -1))
            media = row.get("image") or (row.get("frames") or [b""])[0]
            out["preview"].append(bytes(media) if media and self._keep_preview(p.sample_id, p.dataset) else b"")
        return out


def _first_rows(files: dict[str, list[str]], fs, max_samples: int) -> tuple[list[str] | None, dict[str, int]]:
    """(sample ids to keep, or None for all; rows per dataset): the first max_samples of each dataset in file order."""
    import pyarrow.parquet as pq

    keep: list[str] = []
    totals: dict[str, int] = {}
    for name, paths in files.items():
        ids: list[str] = []
        for path in paths:
            if max_samples and len(ids) >= max_samples:
                break
            ids += pq.read_table(path, columns=["sample_id"], filesystem=fs).column(0).to_pylist()
        ids = ids[:max_samples] if max_samples else ids
        keep += ids
        totals[name] = len(ids) if max_samples else sum(pq.ParquetFile(p, filesystem=fs).metadata.num_rows for p in paths)
    return (keep if max_samples else None), totals


def _gold(record: dict[str, Any]) -> str:
    """The gold answer shown next to a prediction: the labelled choice, else the first answers."""
    choices, index = record["choices"], record["label_index"]
    return choices[index] if 0 <= index < len(choices) else "; ".join(record["answers"][:3])


def check_actors(cfg: EvalConfig, log=print) -> None:
    """The model actors fit on the Ray cluster (`pipelines.common.check_resources`)."""
    inf = cfg.inference
    fix = ("Use inference.gpus_per_actor=0 (CPU inference), or fewer inference.actors or GPUs each" if inf.gpus_per_actor else
           "Use fewer inference.actors, a smaller inference.cpus_per_actor, or more logical CPUs (ray.num_cpus)")
    check_resources([{"CPU": inf.cpus_per_actor, "GPU": inf.gpus_per_actor}] * inf.actors,
                    f"inference asks for {inf.actors} model actors", fix, cfg.ray.address, log, fed_by_data=True)


def evaluate(cfg: EvalConfig, log=print) -> dict[str, Any]:
    """Run the evaluation; returns {"scores": {dataset: {...}}, "out": dir, "mlflow_run_id": id}."""
    import math
    import posixpath

    import fsspec
    import ray.data

    from components import tracking
    from components.config import to_dict
    from components.evaluation import PAPER_FLANT5XL, dataset_score, metric_for, results_table
    from components.manifest import read_manifest, split_files
    from components.mixing import _fs
    from components.reading import read_rows

    if not cfg.run_name:
        cfg.run_name = time.strftime("eval-%Y%m%d-%H%M%S")
    cfg.validate()
    manifest = read_manifest(cfg.data)
    chosen = select_datasets(cfg, manifest)
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow)
    tracking.check_reachable(tracking_uri)
    from components.pyfunc_model import check_model

    model_tags = check_model(cfg.model, tracking_uri, on_cluster(cfg.ray.address), log)
    out_dir = cfg.out or posixpath.join("work_dirs", "eval", cfg.run_name)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    check_actors(cfg, log)
    inf = cfg.inference
    ray.data.DataContext.get_current().enable_progress_bars = False

    fs, _ = _fs(cfg.data)
    files = {name: split_files(cfg.data, name, split) for name, split in chosen.items()}
    keep, totals = _first_rows(files, fs, cfg.max_samples)
    # one read over every file (not one per dataset): a single operator keeps Ray Data's CPU budget simple
    data = read_rows([f for fs_ in files.values() for f in fs_], fs, READ_COLUMNS, keep,
                     local_limit_mb=cfg.local_read_limit_mb, block_rows=cfg.inference.batch_size * 4)
    # small blocks: every actor gets work, and answers stream back (progress) instead of one big file at a time
    data = data.repartition(target_num_rows_per_block=cfg.inference.batch_size * 4)
    preview = {n: min(1.0, 3.0 * cfg.predictions_logged / max(1, t)) for n, t in totals.items()}
    answered = data.map_batches(
        EvalActor,
        fn_constructor_kwargs={"model": cfg.model, "tracking_uri": tracking_uri, "cfg": to_dict(cfg), "preview": preview},
        batch_size=inf.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=inf.actors),
        num_cpus=inf.cpus_per_actor, num_gpus=inf.gpus_per_actor,
    )

    run_id = tracking.start_run(cfg.mlflow, cfg.run_name, tags={"stage": "evaluate", **model_tags})
    logger = tracking.RunLogger(run_id, tracking_uri)
    logger.log_params(tracking.flatten_params(to_dict(cfg)))
    logger.log_input_manifest(manifest, cfg.data, context="evaluation")
    log(f"[eval] {cfg.model} on {len(chosen)} held-out datasets ({sum(totals.values())} rows), "
        f"{inf.actors} model actors; MLflow run {run_id} at {tracking_uri}")

    try:
        records: dict[str, list[dict[str, Any]]] = {n: [] for n in chosen}
        done, start, last = 0, time.time(), 0.0
        for batch in answered.iter_batches(batch_format="pyarrow", batch_size=None):
            for rec in batch.to_pylist():
                records[rec["dataset"]].append(rec)
            done += batch.num_rows
            if time.time() - last > 10 or done == sum(totals.values()):
                last = time.time()
                rate = done / max(1e-9, last - start)
                eta = (sum(totals.values()) - done) / max(rate, 1e-9)
                log(f"[eval] {done}/{sum(totals.values())} rows, {rate:.1f} rows/s, ETA {eta:.0f}s")

        scores: dict[str, dict[str, Any]] = {}
        for name, recs in records.items():
            meta = manifest["datasets"][name]
            metric = metric_for(name, meta.get("task", "generate"), meta.get("category", ""))
            failed = sum(1 for r in recs if r["error"])
            try:
                value = dataset_score(metric, recs)
                note = ""
            except ValueError as exc:
                value, note = float("nan"), str(exc)
                log(f"[eval] {name}: {metric} not computed: {exc}")
            scores[name] = {"metric": metric, "value": value, "paper": PAPER_FLANT5XL.get(name), "scored": len(recs) - failed,
                            "failed": failed, "split": chosen[name], "note": note}
            if failed:
                first = next(r for r in recs if r["error"])
                log(f"[eval] {name}: {failed} rows could not be answered (first: {first['sample_id']}: {first['error']})")

        table = results_table(scores)
        log("[eval] results (ours vs the paper's InstructBLIP FlanT5-XL):\n" + table)
        out_fs, out_path = fsspec.core.url_to_fs(out_dir)
        out_fs.makedirs(out_path, exist_ok=True)
        # NaN (a metric that could not be computed) is not JSON: null instead
        plain = {n: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()} for n, s in scores.items()}
        as_json = json.dumps({"model": cfg.model, "data": cfg.data, "scores": plain}, indent=2)
        write_text(posixpath.join(out_dir, RESULTS_JSON), as_json)
        write_text(posixpath.join(out_dir, RESULTS_MD), table)
        predictions = "".join(
            json.dumps({"sample_id": r["sample_id"], "dataset": r["dataset"], "prediction": r["prediction"],
                        "prob_yes": None if math.isnan(r["prob_yes"]) else r["prob_yes"], "gold": _gold(r),
                        "error": r["error"]}) + "\n"
            for recs in records.values() for r in recs
        )
        write_text(posixpath.join(out_dir, PREDICTIONS), predictions)

        logger.log_metrics({f"{n}/{s['metric']}": s["value"] for n, s in scores.items() if not math.isnan(s["value"])}, step=0)
        logger.log_dict({"model": cfg.model, "data": cfg.data, "scores": plain}, RESULTS_JSON)
        logger.client.log_text(run_id, table, RESULTS_MD)
        logger.client.log_text(run_id, predictions, PREDICTIONS)
        sample = []
        for name, recs in records.items():
            for r in [r for r in recs if r["preview"] and not r["error"]][: cfg.predictions_logged]:
                sample.append({"image": r["preview"], "instruction": r["instruction"], "target": _gold(r),
                               "prediction": r["prediction"], "dataset": name})
        logger.log_predictions_table(sample, artifact_file="predictions/sample.json")
    except BaseException as exc:
        logger.end(exc)
        raise
    logger.finish("FINISHED")
    log(f"[eval] wrote {out_dir}/{RESULTS_JSON}, {RESULTS_MD}, {PREDICTIONS}; MLflow run {run_id}")
    return {"scores": scores, "out": out_dir, "mlflow_run_id": run_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iblip evaluate",
        description="Zero-shot evaluation of a trained model on the held-out datasets, with the paper's metrics.",
    )
    parser.add_argument("--data", help="the `iblip prepare` output (local path or URI)")
    parser.add_argument("--model", help="models:/name@alias (default models:/instructblip@champion), runs:/..., a directory or an HF id")
    parser.add_argument("--datasets", nargs="+", help="held-out datasets to evaluate (default: all)")
    parser.add_argument("--max-samples", type=int, help="at most this many rows per dataset")
    parser.add_argument("--run-name", help="MLflow run name")
    parser.add_argument("--address", help="Ray address ('' = start a local Ray)")
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        base = {"data": args.data, "model": args.model, "datasets": args.datasets, "max_samples": args.max_samples,
                "run_name": args.run_name, "ray.address": args.address}
        cfg = config_from_args(EvalConfig, args, base)
        result = evaluate(cfg)
        print(json.dumps({"out": result["out"], "mlflow_run_id": result["mlflow_run_id"],
                          "scores": {n: s["value"] for n, s in result["scores"].items()}}))
        return 0

    return run_main("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
