"""Balanced mixing of the held-in training sets (METHOD.md, "Balanced mixing").

p_d = sqrt(S_d) * m_d / sum_i sqrt(S_i) * m_i, with S_d the number of training
records of dataset d and m_d a manual multiplier (OKVQA up, A-OKVQA down).
Without balancing (the paper's ablation) the datasets are simply concatenated,
so each is seen in proportion to its size.

The mixed stream is a pure function of (the prepared data, seed): `stream_plan`
decides, without Ray, which row of which dataset fills each stream position;
`mixed_stream` materialises that plan as a Ray Dataset: in the driver with
pyarrow when the stream is small (seconds instead of a cluster-wide sort),
otherwise with a distributed read, placement and sort. Both give the same rows
in the same order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from components.reading import DEFAULT_LOCAL_LIMIT_MB, as_dataset, read_table, total_bytes


def balanced_weights(
    sizes: dict[str, int], multipliers: dict[str, float] | None = None, balanced: bool = True
) -> dict[str, float]:
    """Sampling probability of each dataset.

    Args:
        sizes: training records per dataset (S_d).
        multipliers: manual factors m_d (missing = 1.0); ignored when not balanced.
        balanced: False gives plain concatenation (p_d proportional to S_d).
    Returns:
        dataset -> probability, summing to 1 (datasets of size 0 get 0).
    Raises:
        ValueError: no dataset has any records, or a multiplier is negative.
    """
    multipliers = multipliers or {}
    if any(m < 0 for m in multipliers.values()):
        raise ValueError("mixing multipliers must be >= 0")
    if balanced:
        raw = {d: math.sqrt(s) * multipliers.get(d, 1.0) for d, s in sizes.items()}
    else:
        raw = {d: float(s) for d, s in sizes.items()}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"cannot mix: no training records in {sorted(sizes)}")
    return {d: w / total for d, w in raw.items()}


def stream_plan(
    sizes: dict[str, int],
    num_samples: int,
    seed: int,
    multipliers: dict[str, float] | None = None,
    balanced: bool = True,
    row_counts: dict[str, int] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Which (dataset, row) fills each of `num_samples` stream positions.

    Balanced: each position draws a dataset with probability p_d; within a
    dataset rows are visited in a seeded permutation, a fresh one each epoch,
    so small datasets repeat and large ones are subsampled. Unbalanced: the
    concatenation of all rows, in a seeded permutation per epoch.

    `sizes` (records) set the probabilities; `row_counts` (default: sizes) is
    how many rows each dataset has to visit, which differs when every record
    was expanded into several template rows.

    Returns:
        (dataset names in a fixed order, dataset index per position, row index per position);
        row indices refer to each dataset's rows in `sample_id` order.
    """
    names = sorted(d for d, s in sizes.items() if s > 0)
    if not names:
        raise ValueError("cannot mix: every dataset is empty")
    row_counts = row_counts or sizes
    counts = np.array([row_counts[d] for d in names], dtype=np.int64)
    rng = np.random.default_rng(seed)
    if balanced:
        probs = balanced_weights({d: sizes[d] for d in names}, multipliers, True)
        p = np.array([probs[d] for d in names])
        which = rng.choice(len(names), size=num_samples, p=p)
        rows = np.empty(num_samples, dtype=np.int64)
        for i, size in enumerate(counts):
            positions = np.flatnonzero(which == i)
            epochs = -(-len(positions) // size) if len(positions) else 0
            dataset_rng = np.random.default_rng([seed, i])
            order = np.concatenate([dataset_rng.permutation(size) for _ in range(epochs)]) if epochs else np.empty(0, np.int64)
            rows[positions] = order[: len(positions)]
        return names, which, rows
    total = int(counts.sum())
    epochs = -(-num_samples // total)
    flat = np.concatenate([rng.permutation(total) for _ in range(epochs)])[:num_samples]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    which = np.searchsorted(starts, flat, side="right") - 1
    return names, which, flat - starts[which]


def training_sizes(manifest: dict[str, Any], split: str = "train") -> dict[str, int]:
    """S_d for the held-in training sets listed in a prepare manifest."""
    return {
        name: entry["splits"][split]["records_written"]
        for name, entry in manifest["datasets"].items()
        if entry["role"] == "held_in" and split in entry["splits"]
    }


def mixed_stream(
    prepared: str,
    num_samples: int,
    seed: int = 0,
    balanced: bool = True,
    multipliers: dict[str, float] | None = None,
    datasets: list[str] | None = None,
    split: str = "train",
    local_limit_mb: float = DEFAULT_LOCAL_LIMIT_MB,
):
    """The mixed, shuffled training stream as a Ray Dataset.

    Args:
        prepared: the `iblip prepare` output root (holds manifest.json).
        num_samples: length of the stream (e.g. steps x global batch).
        seed: the stream is identical for the same data and seed.
        balanced: False = plain concatenation (ablation).
        multipliers: manual factors per dataset (default: the manifest's config).
        datasets: restrict to these held-in datasets (default: all in the manifest).
        split: which split to mix.
        local_limit_mb: build the stream in the driver when the files read and the
            stream itself are each at most this many MB; 0 = always distributed.
    Returns:
        ray.data.Dataset with the prepared columns plus `mix_position`, ordered by it.
    """
    import pyarrow.parquet as pq
    import ray

    from components.manifest import read_manifest, split_files

    manifest = read_manifest(prepared)
    if multipliers is None:
        multipliers = manifest["config"]["mixing"]["weights"]
    sizes = training_sizes(manifest, split)
    if datasets is not None:
        missing = [d for d in datasets if d not in sizes]
        if missing:
            raise ValueError(f"not held-in training sets of {prepared}: {missing}")
        sizes = {d: sizes[d] for d in datasets}
    fs, _ = _fs(prepared)
    # canonical row order = sorted sample_id; a record's template rows are separate rows
    files = {d: split_files(prepared, d, split) for d in sizes}
    limit = local_limit_mb * 1e6
    if limit > 0 and total_bytes([f for fl in files.values() for f in fl], fs) <= limit:
        stream = _local_stream(files, fs, sizes, num_samples, seed, multipliers, balanced, limit)
        if stream is not None:
            return stream
    ids = {
        d: sorted(
            sid for f in files[d] for sid in pq.read_table(f, columns=["sample_id"], filesystem=fs).column(0).to_pylist()
        )
        for d in sizes
    }
    names, which, rows = stream_plan(
        sizes, num_samples, seed, multipliers, balanced, row_counts={d: len(v) for d, v in ids.items()}
    )
    # one plan for all datasets (sample ids are globally unique), one read, one placement, one sort
    plan: dict[str, list[int]] = {}
    for pos, (i, row) in enumerate(zip(which.tolist(), rows.tolist())):
        plan.setdefault(ids[names[i]][row], []).append(pos)
    used = [f for name in names for f in files[name]]
    stream = ray.data.read_parquet(used, filesystem=fs).map_batches(
        _place, fn_args=(ray.put(plan),), batch_format="pyarrow"
    )
    return stream.sort("mix_position")


def _local_stream(files, fs, sizes, num_samples, seed, multipliers, balanced, limit):
    """The same stream built in the driver with pyarrow; None when it would exceed `limit` bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = {}
    for d, fl in files.items():
        if sizes[d] <= 0 or not fl:
            continue
        table = read_table(fl, fs)
        tables[d] = table.take(pc.sort_indices(table, [("sample_id", "ascending")]))
    names, which, rows = stream_plan(
        {d: sizes[d] for d in tables}, num_samples, seed, multipliers, balanced,
        row_counts={d: t.num_rows for d, t in tables.items()},
    )
    picks = [which == i for i in range(len(names))]
    estimate = sum(tables[n].nbytes / max(tables[n].num_rows, 1) * int(m.sum()) for n, m in zip(names, picks))
    if estimate > limit:
        return None
    positions = np.arange(len(which), dtype=np.int64)
    parts = [
        tables[n].take(pa.array(rows[m], type=pa.int64())).append_column("mix_position", pa.array(positions[m]))
        for n, m in zip(names, picks)
        if m.any()
    ]
    table = pa.concat_tables(parts, promote_options="default")
    table = table.take(pc.sort_indices(table, [("mix_position", "ascending")]))
    return as_dataset(table)


_PLANS: dict[str, dict[str, list[int]]] = {}
# the most a block that `_place` yields holds: a stream much longer than its data repeats each row
# thousands of times, and one block per input block then outgrew Arrow's 2 GB binary offsets
# (measured: 3.2 million samples of a 710-row sample world, "ArrowIndexError: Negative buffer slice
# length" while the task stored its output)
PLACE_BLOCK_BYTES = 64 * 2**20


def _place(batch, plan_ref, block_bytes: int = PLACE_BLOCK_BYTES):
    """Repeat each row once per stream position the plan gives its sample_id (may be zero); yields the
    result in blocks of at most about `block_bytes`."""
    import pyarrow as pa
    import ray

    key = plan_ref.hex()
    if key not in _PLANS:  # fetch each plan once per worker process
        _PLANS[key] = ray.get(plan_ref)
    plan = _PLANS[key]
    take, positions = [], []
    for i, sid in enumerate(batch.column("sample_id").to_pylist()):
        for pos in plan.get(sid, ()):
            take.append(i)
            positions.append(pos)
    rows_per_block = max(1, int(block_bytes // max(1.0, batch.nbytes / max(batch.num_rows, 1))))
    for start in range(0, len(take), rows_per_block):
        out = batch.take(pa.array(take[start:start + rows_per_block], type=pa.int64()))
        yield out.append_column("mix_position", pa.array(positions[start:start + rows_per_block], type=pa.int64()))


def _fs(uri: str):
    """A pyarrow-compatible filesystem for an fsspec URI."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = fsspec.core.url_to_fs(uri)
    return PyFileSystem(FSSpecHandler(fs)), path
