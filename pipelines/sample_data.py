"""`iblip sample-data` / `python -m pipelines.sample_data`: write the generated sample world.

Small raw datasets in each source's ORIGINAL release format, drawn procedurally so
that every caption, question and answer is true of its image. Real users never
need this: it lets everything run and be tested without the real data.
"""

from __future__ import annotations

import argparse
import sys

from components.sample_world.world import generate, writers
from pipelines.common import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iblip sample-data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder or fsspec URI to write the raw sources into")
    parser.add_argument("--per-dataset", type=int, default=200, help="records in each source's main split (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="the world is a pure function of the seed (default 0)")
    parser.add_argument("--sources", help=f"comma-separated subset of sources (default: all)")
    parser.add_argument("--image-scale", type=float, default=1.0, help="scale still images (e.g. 4 for photo-sized, default 1)")
    parser.add_argument("--no-faults", action="store_true", help="do not plant the few broken records per source")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
        written = generate(args.out, args.per_dataset, args.seed, faults=not args.no_faults, sources=sources, image_scale=args.image_scale)
        print(f"[sample-data] {sum(written.values())} files for {len(written)} sources under {args.out}")
        return 0

    return run_main("sample-data", body)


if __name__ == "__main__":
    sys.exit(main())
