"""Ray Data prepare vs a plain single-process loop over the same adapters and functions.

Generates a sample world (once, cached under --work), converts it both ways,
checks that both outputs hold the same records (sample ids, targets, instructions,
image bytes), and prints rows/s for each and their ratio, for several alternating pairs. Ray's cluster start-up is
timed separately and excluded from the Ray rate (it is paid once per job).

    python benchmarks/prepare.py [--per-dataset 300] [--image-scale 4] [--repeats 3] [--num-cpus 0] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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
    parser.add_argument("--per-dataset", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="alternating single/Ray pairs (median ratio reported)")
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
    overrides = [f"raw={raw}", *args.overrides]

    import ray

    from pipelines.common import local_cpus
    from pipelines.prepare import run_prepare

    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus or local_cpus(), include_dashboard=False, log_to_driver=False)
    startup_s = time.perf_counter() - start

    # Alternate the two, so that drift in the machine's speed (seen here: the same loop taking
    # 49 s in one run and 75 s in another) hits both sides of each pair alike.
    ratios = []
    for rep in range(1, args.repeats + 1):
        for d in (out_loop, out_ray):
            shutil.rmtree(d, ignore_errors=True)
        cfg = load_config(PrepareConfig, None, overrides + [f"out={out_loop}"])
        start = time.perf_counter()
        loop_rows = single_process(cfg, out_loop)
        loop_s = time.perf_counter() - start

        cfg = load_config(PrepareConfig, None, overrides + [f"out={out_ray}"])
        start = time.perf_counter()
        manifest = run_prepare(cfg, log=lambda _: None)
        ray_s = time.perf_counter() - start
        ray_rows = sum(s["rows_written"] for e in manifest["datasets"].values() for s in e["splits"].values())

        a, b = load_rows(out_loop), load_rows(out_ray)
        if a != b:
            print(f"outputs differ! only loop: {len(a.keys() - b.keys())}, only ray: {len(b.keys() - a.keys())}")
            return 1
        ratio = (ray_rows / ray_s) / (loop_rows / loop_s)
        ratios.append(ratio)
        print(
            f"[{rep}/{args.repeats}] single process {loop_rows / loop_s:7.1f} rows/s ({loop_s:.1f} s)   "
            f"Ray Data {ray_rows / ray_s:7.1f} rows/s ({ray_s:.1f} s)   ratio {ratio:.2f}x",
            flush=True,
        )
    ray.shutdown()
    print(f"cores: {os.cpu_count()}  per_dataset: {args.per_dataset}  image_scale: {args.image_scale:g}  "
          f"rows: {loop_rows}  outputs hold the same records: True  (Ray start-up {startup_s:.1f} s, not counted)")
    print(f"ratio Ray/single: median {statistics.median(ratios):.2f}x over {len(ratios)} alternating pairs "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
