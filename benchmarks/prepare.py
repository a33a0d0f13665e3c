"""Ray Data prepare vs a plain single-process loop over the same adapters and functions.

Generates a sample world (once, cached under --work), converts it both ways,
checks that both outputs hold the same records (sample ids, targets, instructions,
image bytes), and prints rows/s for each and their ratio. Ray's cluster start-up is
timed separately and excluded from the Ray rate (it is paid once per job).

    python benchmarks/prepare.py [--per-dataset 400] [--num-cpus 0] [--work work_dirs/bench_prepare]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.config import load_config  # noqa: E402
from components.preparation import OUTPUT_SCHEMA, PrepareConfig, attach_media, expand_rows, read_records  # noqa: E402
from components.sample_world.world import generate  # noqa: E402
from components.templates import TemplateBank  # noqa: E402


def single_process(cfg: PrepareConfig, out: Path) -> int:
    """The same conversion as `iblip prepare`, as one Python loop; returns rows written."""
    bank = TemplateBank(cfg.templates.file or None)
    rows_written = 0
    for dataset in cfg.selected():
        for split in cfg.splits_of(dataset):
            rows = []
            for record in read_records(dataset, split, cfg):
                record = attach_media(record, cfg)
                if not record["reject_reason"]:
                    rows.extend(expand_rows(record, cfg, bank))
            folder = out / dataset / split
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), folder / "part-0.parquet")
            rows_written += len(rows)
    return rows_written


def load_rows(out: Path) -> dict[str, tuple]:
    keep = ["sample_id", "target", "instruction", "image", "frames"]
    table = pa.concat_tables(pq.read_table(f, columns=keep) for f in sorted(out.rglob("*.parquet")) if "rejects" not in f.parts)
    return {r["sample_id"]: (r["target"], r["instruction"], r["image"], tuple(r["frames"])) for r in table.to_pylist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-dataset", type=int, default=400)
    parser.add_argument("--image-scale", type=float, default=4.0, help="sample-world image scale (4 = ~600 px, photo-sized)")
    parser.add_argument("--num-cpus", type=int, default=0, help="logical CPUs for the local Ray (0 = iblip's default, 2x cores)")
    parser.add_argument("--work", default="work_dirs/bench_prepare")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="prepare config overrides for both runs")
    args = parser.parse_args()

    work = Path(args.work)
    raw = work / f"raw_{args.per_dataset}_x{args.image_scale:g}"
    if not raw.exists():
        print(f"generating sample world ({args.per_dataset} per dataset) in {raw} ...", flush=True)
        generate(str(raw), args.per_dataset, seed=0, log=lambda _: None, image_scale=args.image_scale)
    out_loop, out_ray = work / "out_loop", work / "out_ray"
    for d in (out_loop, out_ray):
        shutil.rmtree(d, ignore_errors=True)
    overrides = [f"raw={raw}", *args.overrides]

    cfg = load_config(PrepareConfig, None, overrides + [f"out={out_loop}"])
    start = time.perf_counter()
    loop_rows = single_process(cfg, out_loop)
    loop_s = time.perf_counter() - start

    import ray

    from pipelines.prepare import run_prepare

    start = time.perf_counter()
    from pipelines.common import local_cpus

    ray.init(num_cpus=args.num_cpus or local_cpus(), include_dashboard=False, log_to_driver=False)
    startup_s = time.perf_counter() - start
    cfg = load_config(PrepareConfig, None, overrides + [f"out={out_ray}"])
    start = time.perf_counter()
    manifest = run_prepare(cfg, log=lambda _: None)
    ray_s = time.perf_counter() - start
    ray.shutdown()
    ray_rows = sum(s["rows_written"] for e in manifest["datasets"].values() for s in e["splits"].values())

    a, b = load_rows(out_loop), load_rows(out_ray)
    same = a == b
    print(f"cores: {os.cpu_count()}  per_dataset: {args.per_dataset}  image_scale: {args.image_scale:g}  rows: loop {loop_rows}, ray {ray_rows}")
    print(f"outputs hold the same records: {same}" + ("" if same else f" (only loop: {len(a.keys() - b.keys())}, only ray: {len(b.keys() - a.keys())})"))
    print(f"single process : {loop_s:7.2f} s  {loop_rows / loop_s:8.1f} rows/s")
    print(f"Ray Data       : {ray_s:7.2f} s  {ray_rows / ray_s:8.1f} rows/s  (+{startup_s:.1f} s cluster start-up, not counted)")
    print(f"ratio Ray/single: {(ray_rows / ray_s) / (loop_rows / loop_s):.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
