"""The `iblip` command: one subcommand per stage, each also runnable as `python -m pipelines.<stage>`."""

from __future__ import annotations

import importlib
import sys

# subcommand -> module in pipelines/ (imported only when used)
STAGES = {
    "sample-data": "pipelines.sample_data",
    "prepare": "pipelines.prepare",
    "train": "pipelines.train",
    "evaluate": "pipelines.evaluate",
    "ablate": "pipelines.ablate",
    "serve": "pipelines.serve",
    "submit": "pipelines.submit",
    "run": "pipelines.workflow",
}

USAGE = "usage: iblip <stage> [options]   (iblip <stage> --help for a stage's options)\n\nstages:\n" + "\n".join(
    f"  {name}" for name in STAGES
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"iblip: unknown stage {stage!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return importlib.import_module(STAGES[stage]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
