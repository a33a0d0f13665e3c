"""Reading prepared Parquet files into Ray Datasets, quickly when they are small.

A Ray Data read starts one task per file: on a small cluster, with the dozens of
small files of a prepared sample world, that costs 10-20 s before the first row.
Files that together fit comfortably in the driver's memory are read there with
pyarrow (well under a second) and handed to Ray Data as in-memory blocks; larger
inputs keep the distributed read. Both give the same rows.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LOCAL_LIMIT_MB = 256.0


def total_bytes(files: list[str], fs: Any) -> int:
    """Sum of the files' sizes on a pyarrow filesystem."""
    return sum(info.size or 0 for info in fs.get_file_info(list(files)))


def read_table(files: list[str], fs: Any, columns: list[str] | None = None, sample_ids: list[str] | None = None):
    """The files' rows as one pyarrow Table (schemas unified), optionally only the listed sample ids.

    Raises:
        ValueError: no files.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not files:
        raise ValueError("no Parquet files to read")
    table = pa.concat_tables([pq.read_table(f, columns=columns, filesystem=fs) for f in files], promote_options="default")
    if sample_ids is not None:
        table = table.filter(pc.is_in(table.column("sample_id"), value_set=pa.array(sorted(sample_ids), pa.string())))
    return table


def as_dataset(table, block_rows: int = 256):
    """An in-memory Ray Dataset of several blocks, so the operators after it run in parallel."""
    import ray.data

    step = max(1, block_rows)
    blocks = [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]
    return ray.data.from_arrow(blocks)


def read_rows(
    files: list[str],
    fs: Any,
    columns: list[str] | None = None,
    sample_ids: list[str] | None = None,
    local_limit_mb: float = DEFAULT_LOCAL_LIMIT_MB,
    block_rows: int = 256,
):
    """The files' rows (optionally only the listed sample ids) as a Ray Dataset.

    Args:
        files: Parquet files on `fs`.
        fs: a pyarrow filesystem (see `components.mixing._fs`).
        columns: columns to keep (default: all).
        sample_ids: keep only these rows (default: all).
        local_limit_mb: read in the driver when the files total at most this many MB; 0 = always distributed.
        block_rows: rows per in-memory block when read in the driver.
    """
    if local_limit_mb > 0 and total_bytes(files, fs) <= local_limit_mb * 1e6:
        return as_dataset(read_table(files, fs, columns, sample_ids), block_rows)
    import ray.data

    data = ray.data.read_parquet(list(files), filesystem=fs)
    if columns is not None:
        data = data.select_columns(columns)
    if sample_ids is not None:
        data = data.map_batches(keep_sample_ids, fn_kwargs={"sample_ids": sorted(sample_ids)}, batch_format="pyarrow")
    return data


def keep_sample_ids(batch, sample_ids: list[str]):
    """Ray Data map_batches (pyarrow): the rows whose `sample_id` is listed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return batch.filter(pc.is_in(batch.column("sample_id"), value_set=pa.array(sample_ids, pa.string())))
