"""`iblip ablate` / `python -m pipelines.ablate`: the paper's ablation table on your data.

Trains and evaluates, on the same prepared data, budget and initial model, three variants:

- `full`: the method as configured;
- `no_instruction`: the Q-Former sees no instruction (`train_data.instruction_aware=false`);
- `no_balancing`: the held-in sets are concatenated instead of sqrt-balanced (`train_data.balanced=false`).

Each variant is an ordinary `iblip train` run (`<base>-<variant>`, registered as
`<registered_model>-ablation@<variant>` so the `champion` alias is left alone) followed by an
`iblip evaluate` run of its exported model. The `full` run's initial model is copied into the other
runs, so all three tune the same frozen towers from the same starting weights. Prints a table
shaped like the paper's ablation table (held-in average and held-out datasets, with the paper's
FlanT5-XL numbers and whether each change goes the paper's way) and writes it as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import copy
import json
import posixpath
import sys
import time
from typing import Any

from components.training import TrainConfig
from pipelines.common import add_config_args, config_from_args, run_main

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_instruction": {"instruction_aware": False},
    "no_balancing": {"balanced": False},
}
# the paper's ablation table (METHOD.md, FlanT5-XL): held-in average, then the held-out columns it reports
PAPER_ABLATION: dict[str, dict[str, float]] = {
    "full": {"held_in": 94.1, "gqa": 48.4, "scienceqa": 70.4, "iconqa": 50.0, "vizwiz": 32.7, "ivqa": 53.1},
    "no_instruction": {"held_in": 89.8, "gqa": 45.9, "scienceqa": 63.4, "iconqa": 45.8, "vizwiz": 25.1, "ivqa": 47.5},
    "no_balancing": {"held_in": 92.6},
}
DEFAULT_DATASETS = ["gqa", "scienceqa", "iconqa", "vizwiz", "ivqa"]
LABELS = {"full": "InstructBLIP (ours, as configured)", "no_instruction": "w/o instruction-aware visual features",
          "no_balancing": "w/o data balancing"}


def direction(ours: float | None, ours_full: float | None, paper: float | None, paper_full: float | None) -> str:
    """Whether an ablated variant moved the way the paper's did: 'same', 'opposite', 'flat' or '' (unknown)."""
    if None in (ours, ours_full, paper, paper_full):
        return ""
    delta = ours - ours_full
    if abs(delta) < 1e-9:
        return "flat"
    return "same" if (delta < 0) == (paper - paper_full < 0) else "opposite"


def ablation_table(results: dict[str, dict[str, float]], columns: list[str]) -> str:
    """Markdown: one row per variant, 'ours (paper)' per column, and the direction of each change vs the paper."""
    head = ["variant", "held-in avg"] + columns
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    full, paper_full = results.get("full", {}), PAPER_ABLATION["full"]
    for variant, row in results.items():
        cells = [LABELS.get(variant, variant)]
        for col in ["held_in"] + columns:
            ours, paper = row.get(col), PAPER_ABLATION.get(variant, {}).get(col)
            text = "n/a" if ours is None else f"{ours:.1f}"
            text += f" ({paper:.1f})" if paper is not None else ""
            if variant != "full":
                way = direction(ours, full.get(col), paper, paper_full.get(col))
                text += f" {way}" if way else ""
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def variant_config(train_cfg: TrainConfig, variant: str, base: str) -> TrainConfig:
    """The training config of one variant: run `<base>-<variant>`, its switch flipped, its own registry alias."""
    cfg = copy.deepcopy(train_cfg)
    cfg.run_name = f"{base}-{variant}"
    for key, value in VARIANTS[variant].items():
        setattr(cfg.train_data, key, value)
    cfg.mlflow.registered_model = f"{train_cfg.mlflow.registered_model}-ablation"
    cfg.mlflow.alias = variant.replace("_", "-")
    return cfg


def _copy_initial(src: str, dst: str) -> None:
    """Copy the full run's initial model into a variant's run, unless a whole copy is there: the
    completion marker (`pipelines.train.INITIAL_COMPLETE`) goes last, so a copy that was stopped part
    way is made again rather than trained from."""
    import fsspec

    from pipelines.train import INITIAL_COMPLETE

    fs, src_path = fsspec.core.url_to_fs(src)
    _, dst_path = fsspec.core.url_to_fs(dst)
    src_path, dst_path = src_path.rstrip("/"), dst_path.rstrip("/")
    if fs.exists(f"{dst_path}/{INITIAL_COMPLETE}"):
        return
    if fs.exists(dst_path):
        fs.rm(dst_path, recursive=True)
    for path in fs.find(src_path):
        rel = path[len(src_path) + 1:]
        if rel != INITIAL_COMPLETE:
            target = f"{dst_path}/{rel}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.copy(path, target)
    fs.touch(f"{dst_path}/{INITIAL_COMPLETE}")


def ablate(train_cfg: TrainConfig, eval_overrides: dict[str, Any], variants: list[str], out: str = "",
           log=print) -> dict[str, Any]:
    """Train and evaluate each variant; returns {"results": {variant: {column: value}}, "table": md, "runs": {...}}.

    Args:
        train_cfg: the training config shared by all variants (its run_name is the base name).
        eval_overrides: EvalConfig keys (dotted) for the evaluations, e.g. {"datasets": [...], "max_samples": 50}.
        variants: names from VARIANTS; `full` is always run first (the others copy its initial model).
        out: where ablation.json / ablation.md go ('' = work_dirs/ablation/<base>).
    """
    import fsspec

    from components.config import load_config, to_dict
    from components.evaluation import EvalConfig
    from pipelines.evaluate import evaluate
    from pipelines.train import run_paths, train

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; choose from {sorted(VARIANTS)}")
    order = ["full"] + [v for v in variants if v != "full"]
    base = train_cfg.run_name or time.strftime("ablation-%Y%m%d-%H%M%S")
    columns = list(eval_overrides.get("datasets") or DEFAULT_DATASETS)
    results: dict[str, dict[str, float]] = {}
    runs: dict[str, dict[str, str]] = {}
    initial = ""
    for variant in order:
        cfg = variant_config(train_cfg, variant, base)
        if initial:
            _copy_initial(initial, run_paths(cfg)["initial"])
        log(f"[ablate] {variant}: training {cfg.run_name}")
        summary = train(cfg, log=log)
        initial = initial or run_paths(cfg)["initial"]
        overrides = {"data": cfg.data, "model": summary["export"], "run_name": f"{cfg.run_name}-eval",
                     "datasets": columns, "mlflow.tracking_uri": cfg.mlflow.tracking_uri, **eval_overrides}
        if out:
            overrides["out"] = posixpath.join(out, variant)
        ecfg = load_config(EvalConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
        log(f"[ablate] {variant}: evaluating on {', '.join(columns)}")
        evaluated = evaluate(ecfg, log=log)
        results[variant] = {"held_in": 100 * summary["accuracy_after"],
                            **{d: s["value"] for d, s in evaluated["scores"].items()}}
        runs[variant] = {"train_run_id": summary["mlflow_run_id"], "eval_run_id": evaluated["mlflow_run_id"],
                         "export": summary["export"]}
    table = ablation_table(results, columns)
    log("[ablate] held-in avg = exact match on held-in validation short answers after training; "
        "cells: ours (paper FlanT5-XL), then whether the change from the full method goes the paper's way\n" + table)
    out = out or posixpath.join("work_dirs", "ablation", base)
    fs, path = fsspec.core.url_to_fs(out)
    fs.makedirs(path, exist_ok=True)
    with fsspec.open(posixpath.join(out, "ablation.json"), "w") as f:
        json.dump({"results": results, "paper": PAPER_ABLATION, "runs": runs, "train_config": to_dict(train_cfg)}, f, indent=2)
    with fsspec.open(posixpath.join(out, "ablation.md"), "w") as f:
        f.write(table)
    log(f"[ablate] wrote {out}/ablation.json and ablation.md")
    return {"results": results, "table": table, "runs": runs, "out": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iblip ablate",
        description="Train and evaluate the full method, w/o instruction-aware visual features and w/o data "
        "balancing on the same data and budget; print the paper-shaped ablation table. "
        "KEY=VALUE overrides and --config apply to training.",
    )
    parser.add_argument("--data", help="the `iblip prepare` output (local path or URI)")
    parser.add_argument("--run-name", help="base name of the runs (<base>-<variant>)")
    parser.add_argument("--storage", help="where runs live (default work_dirs/runs)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"subset of {list(VARIANTS)}")
    parser.add_argument("--datasets", nargs="+", help=f"held-out datasets to evaluate (default {DEFAULT_DATASETS})")
    parser.add_argument("--max-samples", type=int, default=0, help="at most this many rows per evaluated dataset")
    parser.add_argument("--out", default="", help="where ablation.json/.md go (default work_dirs/ablation/<base>)")
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(TrainConfig, args, {"data": args.data, "run_name": args.run_name, "storage": args.storage})
        evals: dict[str, Any] = {"max_samples": args.max_samples}
        if args.datasets:
            evals["datasets"] = args.datasets
        result = ablate(cfg, evals, args.variants, args.out)
        print(json.dumps({"out": result["out"], "results": result["results"]}))
        return 0

    return run_main("ablate", body)


if __name__ == "__main__":
    sys.exit(main())
