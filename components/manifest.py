"""The prepare manifest: what was read, written and rejected, and the mixing it implies.

`<out>/manifest.json` holds, per dataset: role, category, task, and per split
records_read / records_written / records_rejected / rows_written / bytes; for
held-in training splits also the sqrt weight, the manual multiplier and the
final mixing probability; plus the config that produced it.
"""

from __future__ import annotations

import json
import math
import posixpath
import time
from typing import Any

import fsspec

from components.mixing import balanced_weights

MANIFEST = "manifest.json"
VERSION = 1


def _fs(uri: str):
    return fsspec.core.url_to_fs(uri)


def read_manifest(out: str) -> dict[str, Any]:
    """Load `<out>/manifest.json`; FileNotFoundError naming the path when absent."""
    fs, root = _fs(out)
    path = posixpath.join(root, MANIFEST)
    if not fs.exists(path):
        raise FileNotFoundError(f"no prepare manifest at {out.rstrip('/')}/{MANIFEST}: run `iblip prepare` first")
    with fs.open(path, "r") as fh:
        return json.load(fh)


def split_files(out: str, dataset: str, split: str) -> list[str]:
    """The Parquet files of one prepared dataset split (paths for the URI's filesystem)."""
    fs, root = _fs(out)
    folder = posixpath.join(root, dataset, split)
    files = sorted(p for p in fs.find(folder) if p.endswith(".parquet")) if fs.exists(folder) else []
    if not files:
        raise FileNotFoundError(f"no Parquet files for {dataset}/{split} under {out}")
    return files


def mixing_table(datasets: dict[str, dict[str, Any]], weights: dict[str, float], balanced: bool) -> None:
    """Fill sqrt weight, multiplier and probability into each held-in train split entry, in place."""
    sizes = {
        name: entry["splits"]["train"]["records_written"]
        for name, entry in datasets.items()
        if entry["role"] == "held_in" and "train" in entry["splits"]
    }
    if not sizes or sum(sizes.values()) == 0:
        return
    probs = balanced_weights(sizes, weights, balanced)
    for name, size in sizes.items():
        split = datasets[name]["splits"]["train"]
        split["sqrt_weight"] = math.sqrt(size)
        split["multiplier"] = weights.get(name, 1.0) if balanced else 1.0
        split["mixing_probability"] = probs[name]


def write_manifest(out: str, datasets: dict[str, dict[str, Any]], config: dict[str, Any], previous: dict | None) -> dict:
    """Merge this run's dataset entries over a previous manifest's, recompute mixing, write atomically.

    Datasets prepared by an earlier run into the same output and not redone now are kept.
    """
    merged = dict(previous["datasets"]) if previous else {}
    merged.update(datasets)
    mixing = config["mixing"]
    mixing_table(merged, mixing["weights"], mixing["balanced"])
    manifest = {
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config,
        "datasets": dict(sorted(merged.items())),
    }
    fs, root = _fs(out)
    tmp = posixpath.join(root, f".{MANIFEST}.tmp")
    with fs.open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=2)
    fs.mv(tmp, posixpath.join(root, MANIFEST))
    return manifest


def summary_table(manifest: dict[str, Any], only: list[str] | None = None) -> str:
    """A fixed-width table of the manifest, one row per dataset split."""
    header = f"{'dataset':<20} {'split':<6} {'role':<9} {'read':>7} {'written':>8} {'rejected':>9} {'rows':>7} {'p_mix':>7}"
    lines = [header, "-" * len(header)]
    for name, entry in manifest["datasets"].items():
        if only is not None and name not in only:
            continue
        for split, s in entry["splits"].items():
            p = s.get("mixing_probability")
            lines.append(
                f"{name:<20} {split:<6} {entry['role']:<9} {s['records_read']:>7} {s['records_written']:>8} "
                f"{s['records_rejected']:>9} {s['rows_written']:>7} {'' if p is None else f'{p:.4f}':>7}"
            )
    return "\n".join(lines)
