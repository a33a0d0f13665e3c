"""Training-step overhead of Ray Train + DeepSpeed against a plain single-process PyTorch loop.

Both sides train the same tiny InstructBLIP (the paper's trainable set) on the same
pre-collated batch for the same number of optimizer steps, with AdamW and the same learning
rate; only the harness differs:

  plain:   one process, torch.optim.AdamW, loss.backward(), optimizer.step()
  ray+ds:  a Ray Train TorchTrainer with ONE worker (same compute), DeepSpeed ZeRO-2 engine
           from components.training.deepspeed_config (engine.backward / engine.step)

Each side times only its step loop (after warm-up steps), so start-up costs (Ray, process
group, DeepSpeed init) are reported separately and not mixed into the rate. The two sides take
turns: --rounds rounds of --steps steps each, the plain loop (a thread of the driver) and the
worker alternating (a Ray actor says whose turn it is), so a slow spell of a shared machine hits
both; each side's rounds are pooled. Goal (issue 4): the Ray Train + DeepSpeed rate is at least
85% of the plain one (overhead <= 15%).

    python benchmarks/train_step.py [--rounds 5] [--steps 40] [--batch 16] [--hidden 64]
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


class Turns:
    """Whose turn it is to train: the plain loop (in the driver) and the Ray Train worker take turns,
    round by round, so neither runs while the other is timed and a slow spell of the machine hits
    both. A Ray actor that both sides poll."""

    def __init__(self) -> None:
        self.turn = "worker"  # the worker sets up first and hands over when it is ready

    async def wait(self, who: str) -> None:
        import asyncio

        while self.turn != who:
            if self.turn == "stop":
                raise RuntimeError("the other side failed (see its error)")
            await asyncio.sleep(0.002)

    async def give(self, who: str) -> None:
        self.turn = who


def take_turns(turns, side: str, step, rounds: int, steps: int) -> list[float]:
    """Seconds of each round of `steps` calls of step(), each round run when the Turns actor
    `turns` says it is `side`'s turn."""
    import ray

    other = "plain" if side == "worker" else "worker"
    seconds = []
    for _ in range(rounds):
        ray.get(turns.wait.remote(side))
        seconds.append(timed_steps(step, steps, 0))
        ray.get(turns.give.remote(other))
    return seconds


def plain_side(model_dir: str, batch_size: int, warmup: int):
    """The plain loop's step function (model, batch and optimizer built, `warmup` steps taken)."""
    import torch

    from components.model import load_pretrained, set_trainable

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

    timed_steps(step, 0, warmup)
    return step


def ray_worker(config: dict) -> None:
    import ray
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

    timed_steps(step, 0, config["warmup"])
    turns = config["turns"]
    ray.get(turns.give.remote("plain"))  # ready: the plain loop goes first
    seconds = take_turns(turns, "worker", step, config["rounds"], config["steps"])
    metrics = {"seconds": seconds, "setup_s": setup_s}
    # Ray Train keeps the metrics of reports that carry a checkpoint; an empty one will do
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def run_both(model_dir: str, batch_size: int, rounds: int, steps: int, warmup: int, threads: int,
             stage: int) -> dict:
    """Seconds per round of each side: the plain loop in a thread of this process, the Ray Train
    worker in its own, taking turns."""
    import threading

    import ray
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from components.config import to_dict
    from components.training import TrainConfig

    cfg = TrainConfig(data="-", global_batch_size=batch_size, micro_batch_size=batch_size)
    cfg.scaling.num_workers = 1
    cfg.deepspeed.zero_stage = stage
    torch.set_num_threads(threads)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        turns = ray.remote(num_cpus=0)(Turns).remote()
        step = plain_side(model_dir, batch_size, warmup)  # set up before the worker starts: no overlap
        plain: dict = {}

        def plain_rounds():
            try:
                plain["seconds"] = take_turns(turns, "plain", step, rounds, steps)
            except BaseException as exc:  # noqa: BLE001 - reported after the trainer returns
                plain["error"] = exc
                turns.give.remote("stop")  # the worker stops waiting for its turn

        thread = threading.Thread(target=plain_rounds, daemon=True)
        thread.start()
        trainer = TorchTrainer(
            ray_worker,
            train_loop_config={"cfg": to_dict(cfg), "model_dir": model_dir, "steps": steps, "rounds": rounds,
                               "warmup": warmup, "threads": threads, "turns": turns},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(
                storage_path=str(Path(model_dir).parent / "ray_results"),
                worker_runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}},
            ),
        )
        try:
            worker = dict(trainer.fit().metrics)
        except Exception:
            if "error" in plain:  # the worker stopped because the plain loop failed: that is the cause
                raise plain["error"]
            raise
        thread.join()  # done: its last round came before the worker's
        return {"plain": plain["seconds"], "worker": worker["seconds"], "setup_s": worker["setup_s"]}
    finally:
        ray.shutdown()


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side; the sides take turns")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="samples per step")
    parser.add_argument("--hidden", type=int, default=64, help="width of the tiny model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    parser.add_argument("--zero-stage", type=int, default=2)
    args = parser.parse_args()
    if min(args.rounds, args.steps, args.batch, args.threads) < 1 or args.warmup < 0:
        parser.error("--rounds, --steps, --batch and --threads must be >= 1, --warmup >= 0")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        build(model_dir, args.hidden)
        result = run_both(model_dir, args.batch, args.rounds, args.steps, args.warmup, args.threads,
                          args.zero_stage)
    rates = {side: [args.steps * args.batch / s for s in result[side]] for side in ("plain", "worker")}
    pooled = {side: args.rounds * args.steps * args.batch / sum(result[side]) for side in ("plain", "worker")}
    ratio = pooled["worker"] / pooled["plain"]
    print(f"tiny InstructBLIP (hidden {args.hidden}), batch {args.batch}, {args.rounds} rounds x {args.steps} "
          f"timed steps per side, taking turns; {args.threads} torch thread(s) per side")
    print(f"plain PyTorch loop:            {pooled['plain']:8.1f} samples/s  (rounds: "
          f"{', '.join(f'{x:.0f}' for x in rates['plain'])})")
    print(f"Ray Train + DeepSpeed ZeRO-{args.zero_stage}:  {pooled['worker']:8.1f} samples/s  (rounds: "
          f"{', '.join(f'{x:.0f}' for x in rates['worker'])}; worker setup {result['setup_s']:.1f} s, not timed)")
    per_round = [w / p for w, p in zip(rates["worker"], rates["plain"])]
    print(f"per-round ratios: {', '.join(f'{x:.3f}' for x in per_round)}")
    print(f"ratio ray+ds / plain: {ratio:.3f}  -> overhead {100 * (1 - ratio):.1f}% (goal <= 15%: "
          f"{'met' if ratio >= 0.85 else 'NOT met'})")


if __name__ == "__main__":
    main()
