"""Training-step overhead of Ray Train + DeepSpeed against a plain single-process PyTorch loop.

Both sides train the same tiny InstructBLIP (the paper's trainable set) on the same
pre-collated batch for the same number of optimizer steps, with AdamW and the same learning
rate; only the harness differs:

  plain:   one process, torch.optim.AdamW, loss.backward(), optimizer.step()
  ray+ds:  a Ray Train TorchTrainer with ONE worker (same compute), DeepSpeed ZeRO-2 engine
           from components.training.deepspeed_config (engine.backward / engine.step)

Each side times only its step loop (after warm-up steps), so start-up costs (Ray, process
group, DeepSpeed init) are reported separately and not mixed into the rate. Goal (issue 4):
the Ray Train + DeepSpeed rate is at least 85% of the plain one (overhead <= 15%).

    python benchmarks/train_step.py [--steps 60] [--batch 16] [--hidden 64]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def build(model_dir: str, hidden: int) -> None:
    """A tiny model (random weights: the rate does not depend on them) saved for both sides."""
    import torch

    from components.model import TinyModelConfig, build_tiny, export_model
    from components.tiny_lm import vocabulary_texts

    torch.manual_seed(0)
    model, processor = build_tiny(list(vocabulary_texts(300)), TinyModelConfig(hidden_size=hidden))
    export_model(model, processor, model_dir)


def make_batch(model_dir: str, batch: int):
    """One training batch of sample-world rows, collated as the training job collates it."""
    import numpy as np

    from components.imaging import PixelSpec, to_pixels
    from components.inference import collator_for
    from components.model import load_pretrained
    from components.sample_world import scene as scenes
    from components.tiny_lm import reading_examples

    model, processor = load_pretrained(model_dir)
    spec = PixelSpec.from_processor(processor)
    rng = random.Random(0)
    rows = reading_examples(batch, seed=1)
    pixels = [to_pixels(scenes.encode(scenes.draw(scenes.random_scene(rng, 1, 4))), spec) for _ in rows]
    columns = {"pixel_values": np.stack(pixels), "instruction": [i for _, i, _ in rows], "target": [t for _, _, t in rows]}
    return collator_for(model, processor)(columns)


def timed_steps(step, steps: int, warmup: int) -> float:
    """Seconds for `steps` calls of step() after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def plain(model_dir: str, batch_size: int, steps: int, warmup: int, threads: int) -> float:
    """samples/s of the plain loop."""
    import torch

    from components.model import load_pretrained, set_trainable

    torch.set_num_threads(threads)
    model, _ = load_pretrained(model_dir)
    set_trainable(model)
    model.train()
    batch = make_batch(model_dir, batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)

    def step():
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    return steps * batch_size / timed_steps(step, steps, warmup)


def ray_worker(config: dict) -> None:
    import ray.train
    import torch

    from components.config import from_dict
    from components.model import load_pretrained, set_trainable
    from components.training import TrainConfig, deepspeed_config, parameter_groups
    from pipelines.train_loop import _disable_cpu_shm_allreduce

    torch.set_num_threads(config["threads"])
    _disable_cpu_shm_allreduce()
    import deepspeed

    cfg = from_dict(TrainConfig, config["cfg"])
    t0 = time.perf_counter()
    model, _ = load_pretrained(config["model_dir"])
    set_trainable(model)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=parameter_groups(model, cfg.optimizer.weight_decay),
        config=deepspeed_config(cfg), dist_init_required=False,
    )
    setup_s = time.perf_counter() - t0
    batch = make_batch(config["model_dir"], cfg.micro_batch_size)
    engine.train()

    def step():
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()

    seconds = timed_steps(step, config["steps"], config["warmup"])
    metrics = {"samples_per_s": config["steps"] * cfg.micro_batch_size / seconds, "setup_s": setup_s}
    # Ray Train keeps the metrics of reports that carry a checkpoint; an empty one will do
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def ray_deepspeed(model_dir: str, batch_size: int, steps: int, warmup: int, threads: int, stage: int) -> dict:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from components.config import to_dict
    from components.training import TrainConfig

    cfg = TrainConfig(data="-", global_batch_size=batch_size, micro_batch_size=batch_size)
    cfg.scaling.num_workers = 1
    cfg.deepspeed.zero_stage = stage
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        trainer = TorchTrainer(
            ray_worker,
            train_loop_config={"cfg": to_dict(cfg), "model_dir": model_dir, "steps": steps, "warmup": warmup,
                               "threads": threads},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(
                storage_path=str(Path(model_dir).parent / "ray_results"),
                worker_runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}},
            ),
        )
        return dict(trainer.fit().metrics)
    finally:
        ray.shutdown()


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="samples per step")
    parser.add_argument("--hidden", type=int, default=64, help="width of the tiny model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    parser.add_argument("--zero-stage", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        build(model_dir, args.hidden)
        base = plain(model_dir, args.batch, args.steps, args.warmup, args.threads)
        ray_ds = ray_deepspeed(model_dir, args.batch, args.steps, args.warmup, args.threads, args.zero_stage)
    ratio = ray_ds["samples_per_s"] / base
    print(f"tiny InstructBLIP (hidden {args.hidden}), batch {args.batch}, {args.steps} timed steps, "
          f"{args.threads} torch thread(s) per side")
    print(f"plain PyTorch loop:            {base:8.1f} samples/s")
    print(f"Ray Train + DeepSpeed ZeRO-{args.zero_stage}:  {ray_ds['samples_per_s']:8.1f} samples/s "
          f"(worker setup {ray_ds['setup_s']:.1f} s, not timed)")
    print(f"ratio ray+ds / plain: {ratio:.3f}  -> overhead {100 * (1 - ratio):.1f}% (goal <= 15%)")


if __name__ == "__main__":
    main()
