"""The loop each Ray Train worker runs (see pipelines/train.py for the driver).

DeepSpeed owns the optimizer (AdamW, ZeRO stage 1/2/3) and gradient accumulation; the
schedule, collation and metrics come from `components`. Rank 0 prints progress and writes to
MLflow; every rank takes part in validation (its shard of the rows, sums all-reduced) and in
checkpoints (ZeRO partitions optimizer state across ranks, so each rank saves its part and Ray
Train merges the per-rank directories into one checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any

from components.training import TrainConfig

STATE_FILE = "trainer_state.json"
CHECKPOINT_TAG = "zero"
STREAM_RAN_OUT = "the training stream ran out"  # the driver recognises this failure by it (`pipelines.train`)


def _disable_cpu_shm_allreduce() -> None:
    """Skip DeepSpeed's JIT-built shared-memory all-reduce on CPU.

    On the CPU accelerator DeepSpeed compiles a C++ extension on first use (about 2 minutes on 2
    cores); it only speeds up inference all-reduces, and gloo already does the reductions ZeRO needs.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class WorkerLoop:
    """State and steps of one training worker."""

    def __init__(self, cfg: TrainConfig, initial: str, paths: dict[str, str], run_id: str) -> None:
        self.cfg = cfg
        self.initial = initial
        self.paths = paths
        self.run_id = run_id

    # ------------------------------------------------------------ setup

    def _setup(self) -> None:
        import ray.train
        import ray.train.torch
        import torch

        cfg = self.cfg
        if not cfg.scaling.use_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            _disable_cpu_shm_allreduce()
        import deepspeed

        from components.inference import Answerer, collator_for
        from components.model import checkpoint_llm_activations, load_pretrained, set_trainable
        from components.training import deepspeed_config, make_scheduler, parameter_groups

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.manual_seed(cfg.seed)
        # Loaded in the dtype training computes in, whatever the initial model was saved in (a bf16
        # export, a half-precision hub checkpoint): fp32 training stays fp32; in bf16 DeepSpeed turns the
        # whole module into bf16 and builds the fp32 master weights from those bf16 values, so loading
        # straight into bf16 gives the same weights and losses (measured: identical after 3 steps, ZeRO-2
        # and ZeRO-3) and moves half the bytes to the GPU before that conversion (a 7B LLM: 14 GB, not 28)
        model, processor = load_pretrained(self.initial, torch_dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
        self.trainable, self.total = set_trainable(model)
        if cfg.gradient_checkpointing:
            checkpoint_llm_activations(model)
        self.collator = collator_for(
            model, processor,
            max_instruction_tokens=cfg.train_data.max_instruction_tokens,
            max_target_tokens=cfg.train_data.max_target_tokens,
            instruction_aware=cfg.train_data.instruction_aware,
        )
        self.processor = processor
        self.ds_config = deepspeed_config(cfg)
        model.to(self.device)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=parameter_groups(model, cfg.optimizer.weight_decay),
            config=self.ds_config,
            lr_scheduler=lambda opt: make_scheduler(opt, cfg.schedule),
            dist_init_required=False,
        )
        self.dtype = torch.bfloat16 if cfg.bf16 else torch.float32
        self.answerer = Answerer(self.engine.module, self.collator)
        self.logger = None
        if self.rank == 0:
            from components import tracking

            self.logger = tracking.RunLogger.from_config(cfg.mlflow, self.run_id, tracking.resolve_tracking_uri(cfg.mlflow))
            # what actually ran, next to the config that asked for it (deepspeed.precision=auto, use_gpu)
            runtime = self.runtime()
            self.logger.log_params({"trainable_parameters": self.trainable, "total_parameters": self.total,
                                    "world_size": self.world, "accumulation_steps": cfg.accumulation_steps,
                                    **{f"runtime.{k}": v for k, v in runtime.items()}})
            self._print(
                f"[train] {self.world} workers on {runtime['device']} ({runtime['dist_backend']}), "
                f"ZeRO-{cfg.deepspeed.zero_stage}, {runtime['precision']}, "
                f"global batch {cfg.global_batch_size} = {cfg.micro_batch_size} x "
                f"{self.world} workers x {cfg.accumulation_steps} accumulation; trainable parameters "
                f"{self.trainable:,} of {self.total:,} ({100 * self.trainable / self.total:.1f}%)"
            )

    def runtime(self) -> dict[str, str]:
        """The device type, process-group backend and training precision this worker runs with."""
        import torch.distributed as dist

        return {"device": self.device.type, "dist_backend": str(dist.get_backend()),
                "precision": "bf16" if self.engine.bfloat16_enabled() else "fp32"}

    def _print(self, line: str) -> None:
        if self.rank == 0:
            print(line, flush=True)

    # ------------------------------------------------------------ checkpoints

    def _restore(self) -> dict[str, Any]:
        """Load the latest checkpoint Ray Train hands us (after a failure or a relaunch)."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return {"step": 0, "accuracy_before": None}
        with checkpoint.as_directory() as d:
            # only the trainable parameters are in it; the frozen ones come from the initial model
            self.engine.load_checkpoint(d, tag=CHECKPOINT_TAG, load_module_strict=False)
            with open(os.path.join(d, STATE_FILE)) as f:
                state = json.load(f)
        state["resumed_from"] = [*state.get("resumed_from", []), state["step"]]
        self._print(f"[train] resumed from checkpoint at step {state['step']}")
        return state

    def _save(self, state: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Every rank saves its ZeRO partition; Ray Train merges them into one checkpoint."""
        import ray.train
        from ray.train import Checkpoint

        with tempfile.TemporaryDirectory(prefix="iblip-ckpt-") as d:
            self.engine.save_checkpoint(d, tag=CHECKPOINT_TAG, exclude_frozen_parameters=True)
            if self.rank == 0:
                with open(os.path.join(d, STATE_FILE), "w") as f:
                    json.dump(state, f)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))

    # ------------------------------------------------------------ validation

    def validate(self, step: int) -> dict[str, float]:
        """Loss on this rank's validation rows and exact match on their short answers, summed over ranks."""
        import ray.train
        import torch
        import torch.distributed as dist

        from components.inference import exact_match
        from components.training import loss_terms

        cfg = self.cfg.validation
        module = self.engine.module
        module.eval()
        # token-weighted loss sum, target tokens, rows, correct, short rows: the loss is the mean over
        # every target token of the validation set, whichever way Ray Data splits the rows into batches
        totals = torch.zeros(5, dtype=torch.float64, device=self.device)
        self.predictions: list[dict[str, Any]] = []
        synced = self.cfg.deepspeed.zero_stage == 3
        shard = ray.train.get_dataset_shard("val")
        with torch.no_grad():
            for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy"):
                inputs = self._to_device(self.collator(batch))
                loss = module(**inputs).loss
                n = len(batch["sample_id"])
                weighted, tokens = loss_terms(loss, inputs["labels"])
                totals[0] += float(weighted)
                totals[1] += tokens
                totals[2] += n
                short = [i for i in range(n) if bool(batch["short_answer"][i])]
                if not short and not synced:
                    continue
                rows = {k: [batch[k][i] for i in short] for k in ("pixel_values", "instruction")} if short else None
                if rows is None:  # ZeRO-3: every rank must join every generate call
                    rows = {k: [batch[k][0]] for k in ("pixel_values", "instruction")}
                with self._gathered(recurse=False):  # every rank gets here alike under ZeRO-3 (a collective)
                    answers = self.answerer.answer_batch(
                        rows, max_new_tokens=cfg.max_new_tokens, **({"synced_gpus": True} if synced else {})
                    )
                for i, answer in zip(short, answers):
                    references = list(batch["answers"][i]) + [str(batch["target"][i])]
                    hit = exact_match(answer, references)
                    totals[3] += hit
                    totals[4] += 1
                    if len(self.predictions) < self.cfg.validation.num_predictions_logged:
                        self.predictions.append({
                            "dataset": str(batch["dataset"][i]), "image": bytes(batch["image"][i]),
                            "instruction": str(batch["instruction"][i]), "target": str(batch["target"][i]),
                            "prediction": answer, "correct": bool(hit),
                        })
        if self.world > 1:
            dist.all_reduce(totals)
        module.train()
        loss_sum, tokens, rows, correct, short_rows = totals.tolist()
        return {"val_loss": loss_sum / max(tokens, 1), "val_exact_match": correct / max(short_rows, 1),
                "val_rows": rows, "val_short_answer_rows": short_rows}

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        from components.inference import to_device

        return to_device(batch, self.device, self.dtype)

    # ------------------------------------------------------------ the loop

    def _maybe_fail(self, step: int) -> None:
        """Fault injection for tests: the last rank dies once per run at `fail_at_step`."""
        if not self.cfg.fail_at_step or step != self.cfg.fail_at_step or self.rank != self.world - 1:
            return
        marker = os.path.join(self.paths["run_dir"], ".fault_injected")
        if "://" in marker or os.path.exists(marker):
            return
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        open(marker, "w").close()
        # Ray Train's controller collects reported checkpoints when it polls the workers (every
        # 2 s): wait for that, so the test knows which checkpoint the restart must use
        time.sleep(5)
        print(f"[train] fault injection: worker rank {self.rank} exits at step {step}", flush=True)
        os._exit(1)

    def run(self) -> None:
        import ray.train

        from components.training import Progress

        self._setup()
        cfg = self.cfg
        state = self._restore()
        start = int(state["step"])
        total = cfg.schedule.total_steps
        accumulation = cfg.accumulation_steps
        if state.get("accuracy_before") is None:
            before = self.validate(0)
            state["accuracy_before"] = before["val_exact_match"]
            self._print(f"[train] before training: val loss {before['val_loss']:.4f}, exact match "
                        f"{before['val_exact_match']:.3f} on {int(before['val_short_answer_rows'])} short answers")
            self._log({f"{k}": v for k, v in before.items()}, 0)
        progress = Progress(total, cfg.global_batch_size, start_step=start)
        shard = ray.train.get_dataset_shard("train")
        batches = shard.iter_batches(
            batch_size=cfg.micro_batch_size, batch_format="numpy", prefetch_batches=cfg.train_data.prefetch_batches,
            drop_last=True,
        )
        # a resumed run skips the micro-batches it already trained on (the stream is deterministic)
        skip = start * accumulation
        step, micro, window_loss, window_n = start, 0, 0.0, 0
        self.engine.train()
        for batch in batches if start < total else ():
            if skip:
                skip -= 1
                continue
            if step >= total:
                break
            loss = self.engine(**self._to_device(self.collator(batch))).loss
            self.engine.backward(loss)
            self.engine.step()
            window_loss += float(loss.detach())
            window_n += 1
            micro += 1
            if micro % accumulation:  # DeepSpeed steps the optimizer on the accumulation boundary
                continue
            step += 1
            self._maybe_fail(step)
            printing = step % cfg.log_every == 0 or step == total
            if printing or step % cfg.mlflow.log_every == 0:
                self._log_progress(step, total, window_loss / window_n, progress, printing)
                window_loss, window_n = 0.0, 0
            if step % cfg.validation.every_steps == 0 and step != total:
                metrics = self.validate(step)
                self._print(f"[train] step {step}: val loss {metrics['val_loss']:.4f}, exact match "
                            f"{metrics['val_exact_match']:.3f}")
                self._log(metrics, step)
            if cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0 and step != total:
                self._save({**state, "step": step}, {"step": step})
        if step < total:
            raise RuntimeError(f"{STREAM_RAN_OUT} at step {step} of {total}")
        self._finish(state, step)

    def _log_progress(self, step: int, total: int, loss: float, progress, printing: bool) -> None:
        import torch
        import torch.distributed as dist

        value = torch.tensor([loss], dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(value)
        rates = progress.update(step)
        grad_norm = self.engine.get_global_grad_norm()
        metrics = {
            "loss": float(value) / self.world,
            "lr": self.engine.get_lr()[0],
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            **rates,
        }
        if printing:
            self._print(progress.line(step, total, metrics))
        self._log({k: v for k, v in metrics.items() if k != "eta_s"}, step)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def _finish(self, state: dict[str, Any], step: int) -> None:
        """Final validation, export (rank 0), and a last checkpoint whose metrics the driver reads."""
        from components.inference import TRAINING_OPTIONS
        from components.model import export_model

        after = self.validate(step)
        self._log(after, step)
        summary = {
            "step": step,
            "accuracy_before": float(state["accuracy_before"]),
            "accuracy_after": after["val_exact_match"],
            "val_loss": after["val_loss"],
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "resumed_from": state.get("resumed_from", []),
        }
        self._print(f"[train] after training: val loss {after['val_loss']:.4f}, exact match {after['val_exact_match']:.3f}")
        options = {
            "max_instruction_tokens": self.cfg.train_data.max_instruction_tokens,
            "max_target_tokens": self.cfg.train_data.max_target_tokens,
            "instruction_aware": self.cfg.train_data.instruction_aware,
        }
        with self._gathered(recurse=True):
            if self.rank == 0:
                export_model(self.engine.module, self.processor, self.paths["export"],
                             extra_files={TRAINING_OPTIONS: json.dumps(options, indent=2)})
        if self.logger is not None:
            self.logger.log_predictions_table(self.predictions)
            self.logger.log_metrics({"accuracy_before": summary["accuracy_before"],
                                     "accuracy_after": summary["accuracy_after"]}, step=step)
            self.logger.stop_system_metrics()  # the driver ends the run after registering the model
        self._save({**state, "step": step}, summary)

    @contextlib.contextmanager
    def _gathered(self, recurse: bool):
        """ZeRO-3 partitions parameters across ranks: gather them, read-only (a no-op below stage 3).

        recurse=True: every parameter (the export). recurse=False: the top-level model's own ones,
        InstructBLIP's query tokens, around a `generate` call: ZeRO-3 gathers a module's parameters in
        a hook around its forward (and releases them after it), and `generate` never calls the
        top-level forward, so they would stay partitioned (empty) there.
        """
        if self.cfg.deepspeed.zero_stage != 3:
            yield
            return
        import deepspeed

        parameters = list(self.engine.module.parameters(recurse=recurse))
        with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
            yield
