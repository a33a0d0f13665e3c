"""`iblip prepare` / `python -m pipelines.prepare`: raw datasets -> instruction Parquet, as a Ray Data job.

Flow: one read task per (dataset, split) runs the adapter; records are
re-blocked so the image/video step runs in parallel; each record is normalised
and expanded into template rows (or becomes a reject); everything is written
once, partitioned by dataset and split, into a private staging folder under
OUT. Only when the whole job succeeded are the staged splits moved into place
(replacing earlier outputs), the rejects files written and the manifest
updated - so a failed run never leaves a half-written dataset that looks complete.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
import time
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import ConfigError, to_dict
from components.datasets import SourceError, registry
from components.manifest import read_manifest, summary_table, write_manifest
from components.preparation import (
    OUTPUT_SCHEMA,
    PrepareConfig,
    attach_media,
    expand_rows,
    make_adapter,
    read_records,
    reject_row,
)
from pipelines.common import add_config_args, config_from_args, init_ray, run_main

STAGING = "_staging"
REJECTS_PART = "__rejects__"
FATAL_PART = "__fatal__"
# staging rows = output columns + the two partition columns
STAGING_SCHEMA = OUTPUT_SCHEMA.append(pa.field("_dataset", pa.string())).append(pa.field("_split", pa.string()))

_BANKS: dict[str, Any] = {}


def _bank(cfg: PrepareConfig):
    """The template bank, loaded once per worker process."""
    from components.templates import TemplateBank

    key = cfg.templates.file
    if key not in _BANKS:
        _BANKS[key] = TemplateBank(cfg.templates.file or None)
    return _BANKS[key]


def _read_task(task: dict[str, Any], cfg: PrepareConfig) -> list[dict[str, Any]]:
    """Records of one split; an unreadable annotation file becomes one `fatal` record.

    Ray does not carry our exception types back to the driver, so the error travels as
    data and `_finalize` raises it as a SourceError before anything is moved into place.
    """
    try:
        records = list(read_records(task["dataset"], task["split"], cfg))
    except SourceError as exc:
        return [{"record_id": "", "dataset": task["dataset"], "split": task["split"], "key": "", "source": "",
                 "reject_reason": str(exc), "fatal": True}]
    for record in records:
        record["fatal"] = False
    return records


def _encode_reject(record: dict[str, Any]) -> dict[str, Any]:
    """A reject travels through staging in the output schema: key in sample_id, reason in target.

    A fatal error (unreadable annotation file) goes to its own partition.
    """
    rej = reject_row(record)
    return {
        "sample_id": rej["key"],
        "record_id": record["record_id"],
        "dataset": rej["dataset"],
        "split": rej["split"],
        "source": rej["source"],
        "target": rej["reason"],
        "answers": [],
        "choices": [],
        "frames": [],
        "label_index": -1,
        "_dataset": rej["dataset"],
        "_split": FATAL_PART if record.get("fatal") else REJECTS_PART,
    }


def _decode_reject(row: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": row["dataset"], "split": row["split"], "key": row["sample_id"], "source": row["source"], "reason": row["target"]}


def _process_batch(batch: pa.Table, cfg: PrepareConfig) -> pa.Table:
    """Media + template expansion for a batch of records; returns staging rows."""
    bank = _bank(cfg)
    out: list[dict[str, Any]] = []
    for record in batch.to_pylist():
        if not record.get("fatal"):
            record = attach_media(record, cfg)
        if record["reject_reason"]:
            out.append(_encode_reject(record))
            continue
        for row in expand_rows(record, cfg, bank):
            row["_dataset"], row["_split"] = record["dataset"], record["split"]
            out.append(row)
    return pa.Table.from_pylist(out, schema=STAGING_SCHEMA)


def _check_sources(cfg: PrepareConfig, datasets: list[str]) -> None:
    """Fail before any work if a requested source folder is missing (message names the path)."""
    for name in datasets:
        adapter = make_adapter(cfg, name)
        if name in registry():
            adapter.check_root()


def _count(fs, folder: str) -> dict[str, Any]:
    files = sorted(p for p in fs.find(folder) if p.endswith(".parquet")) if fs.exists(folder) else []
    record_ids: set[str] = set()
    rows = 0
    size = 0
    for f in files:
        with fs.open(f, "rb") as fh:
            table = pq.read_table(fh, columns=["record_id"])
        record_ids.update(table.column(0).to_pylist())
        rows += table.num_rows
        size += fs.size(f)
    return {"records": len(record_ids), "rows": rows, "bytes": size, "files": len(files)}


def _write_empty_split(fs, folder: str) -> None:
    fs.makedirs(folder, exist_ok=True)
    with fs.open(posixpath.join(folder, "part-empty.parquet"), "wb") as fh:
        pq.write_table(OUTPUT_SCHEMA.empty_table(), fh)


def _finalize(cfg: PrepareConfig, fs, root: str, staging: str, tasks: list[tuple[str, str]]) -> dict[str, Any]:
    """Move staged splits into place, write rejects files, and return the manifest entries."""
    fatal: list[str] = []
    for f in fs.glob(posixpath.join(staging, "_dataset=*", f"_split={FATAL_PART}", "*.parquet")):
        with fs.open(f, "rb") as fh:
            fatal.extend(pq.read_table(fh, columns=["target"]).column(0).to_pylist())
    if fatal:
        raise SourceError("; ".join(dict.fromkeys(sorted(fatal))))
    entries: dict[str, Any] = {}
    rejects_by_dataset: dict[str, list[dict[str, Any]]] = {}
    for dataset in dict.fromkeys(d for d, _ in tasks):
        folder = posixpath.join(staging, f"_dataset={dataset}", f"_split={REJECTS_PART}")
        rows: list[dict[str, Any]] = []
        if fs.exists(folder):
            for f in sorted(p for p in fs.find(folder) if p.endswith(".parquet")):
                with fs.open(f, "rb") as fh:
                    rows.extend(_decode_reject(r) for r in pq.read_table(fh).to_pylist())
        rows.sort(key=lambda r: (r["split"], r["key"]))
        rejects_by_dataset[dataset] = rows

    for dataset, split in tasks:
        spec = cfg.dataset_spec(dataset)
        src = posixpath.join(staging, f"_dataset={dataset}", f"_split={split}")
        dst = posixpath.join(root, dataset, split)
        if fs.exists(dst):
            fs.rm(dst, recursive=True)
        if fs.exists(src):
            fs.makedirs(posixpath.dirname(dst), exist_ok=True)
            fs.mv(src, dst, recursive=True)
        else:
            _write_empty_split(fs, dst)
        counts = _count(fs, dst)
        rejected = sum(1 for r in rejects_by_dataset[dataset] if r["split"] == split)
        entry = entries.setdefault(
            dataset,
            {"role": spec.role, "category": spec.category, "task": spec.task, "template_set": spec.template_set, "splits": {}},
        )
        entry["splits"][split] = {
            "records_read": counts["records"] + rejected,
            "records_written": counts["records"],
            "records_rejected": rejected,
            "rows_written": counts["rows"],
            "bytes": counts["bytes"],
            "files": counts["files"],
        }

    fs.makedirs(posixpath.join(root, "rejects"), exist_ok=True)
    for dataset, rows in rejects_by_dataset.items():
        with fs.open(posixpath.join(root, "rejects", f"{dataset}.jsonl"), "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    return entries


def run_prepare(cfg: PrepareConfig, log=print) -> dict[str, Any]:
    """Run the prepare job on the current Ray cluster and return the manifest.

    Raises:
        ConfigError, SourceError: bad config, missing source or annotation file (named).
    """
    import ray

    if not cfg.out:
        raise ConfigError("out is required (where to write the prepared data)")
    datasets = cfg.selected()
    _check_sources(cfg, datasets)
    _bank(cfg)  # load and validate templates on the driver before any work
    tasks = [(d, s) for d in datasets for s in cfg.splits_of(d)]
    fs, root = fsspec.core.url_to_fs(cfg.out)
    fs.makedirs(root, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    staging = posixpath.join(root, STAGING, run_id)
    staging_uri = f"{cfg.out.rstrip('/')}/{STAGING}/{run_id}"
    started = time.perf_counter()
    log(f"[prepare] {len(datasets)} datasets, {len(tasks)} splits -> {cfg.out} (staging {staging_uri})")
    try:
        ds = ray.data.from_items([{"dataset": d, "split": s} for d, s in tasks], override_num_blocks=len(tasks))
        ds = ds.flat_map(_read_task, fn_kwargs={"cfg": cfg})
        # re-block so media work for one large dataset spreads over many tasks
        ds = ds.repartition(target_num_rows_per_block=cfg.media_batch_size)
        ds = ds.map_batches(
            _process_batch, fn_kwargs={"cfg": cfg}, batch_size=cfg.media_batch_size, batch_format="pyarrow"
        )
        pa_fs = pa.fs.PyFileSystem(pa.fs.FSSpecHandler(fs))
        ds.write_parquet(staging, partition_cols=["_dataset", "_split"], filesystem=pa_fs)
        job_s = time.perf_counter() - started
        entries = _finalize(cfg, fs, root, staging, tasks)
        log(f"[prepare] Ray Data job {job_s:.1f}s, finalize {time.perf_counter() - started - job_s:.1f}s")
    finally:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        if fs.exists(posixpath.join(root, STAGING)) and not fs.ls(posixpath.join(root, STAGING)):
            fs.rm(posixpath.join(root, STAGING), recursive=True)
    try:
        previous = read_manifest(cfg.out)
    except FileNotFoundError:
        previous = None
    manifest = write_manifest(cfg.out, entries, to_dict(cfg), previous)
    elapsed = time.perf_counter() - started
    rows = sum(s["rows_written"] for e in entries.values() for s in e["splits"].values())
    log(summary_table(manifest, only=list(entries)))
    log(f"[prepare] wrote {rows} rows in {elapsed:.1f}s ({rows / max(elapsed, 1e-9):.1f} rows/s); manifest: {cfg.out.rstrip('/')}/manifest.json")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iblip prepare", description="Convert raw datasets into instruction-formatted Parquet with Ray Data."
    )
    parser.add_argument("--raw", help="raw root (folder or fsspec URI); sources are read from RAW/<source>")
    parser.add_argument("--out", help="output root (folder or fsspec URI)")
    parser.add_argument("--datasets", help="comma-separated dataset names (default: all)")
    parser.add_argument("--address", help="Ray address of an existing cluster (default: start a local Ray)")
    add_config_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        flags = {
            "raw": args.raw,
            "out": args.out,
            "datasets": [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None,
            "ray.address": args.address,
        }
        cfg = config_from_args(PrepareConfig, args, flags)
        _check_sources(cfg, cfg.selected())  # fail fast, before starting Ray
        init_ray(cfg.ray.address, cfg.ray.num_cpus)
        run_prepare(cfg)
        return 0

    return run_main("prepare", body)


if __name__ == "__main__":
    sys.exit(main())
