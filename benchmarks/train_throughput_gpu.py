"""Training throughput of a FlanT5-XL-sized InstructBLIP on one GPU (bf16, DeepSpeed ZeRO-2).

Random weights with the paper's shapes: ViT-g/14 at 224 px (EVA-CLIP g: width 1408, 39 layers,
16 heads, MLP 6144), a BERT-base Q-Former with 32 queries, FlanT5-XL (d_model 2048, 24 + 24
layers, 32 heads, d_ff 5120, gated GELU). The paper's trainable set (components.model.set_trainable),
our DeepSpeed config (components.training.deepspeed_config) and our collator, on batches of
sample-world-like prompts at the paper's lengths. Prints samples/s, the estimated training FLOPs
per sample and the model FLOPs utilisation against the GPU's dense bf16 peak.

Paper: about 5.6 samples/s per A100 (METHOD.md). Goal (issue 4): at least 150 samples/s on one H100.

    python benchmarks/train_throughput_gpu.py [--batch 64] [--steps 20] [--peak-tflops 989]
    python benchmarks/train_throughput_gpu.py --smoke     # the same code on CPU, shapes cut down

Needs a CUDA GPU (exits with a message otherwise). `--smoke` runs every step of it (model built from
the config, trainable set, DeepSpeed ZeRO-2 in bf16, collated batches, timed steps, the FLOPs
estimate) on CPU with gloo and small shapes, so that the script is known to work before a GPU is at
hand; its numbers are no measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# dense bf16 peak, TFLOP/s (vendor data sheets)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


# the paper's shapes, and a cut-down set with the same structure for --smoke
FULL = {"image": 224, "patch": 14, "vit": (1408, 6144, 39, 16), "qformer": (768, 3072, 12, 12), "queries": 32,
        "t5": (2048, 5120, 24, 32), "vocab": 32000}
SMOKE = {"image": 56, "patch": 14, "vit": (64, 128, 2, 4), "qformer": (64, 128, 2, 4), "queries": 8,
         "t5": (64, 128, 2, 4), "vocab": 2000}


def flant5xl_sized(vocab_texts, shapes=FULL):
    """(model, processor) with the paper's FlanT5-XL InstructBLIP shapes (or `shapes`) and random weights."""
    from transformers import (
        BlipImageProcessorPil, InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor,
        T5Config,
    )

    from components.model import build_tokenizers

    llm_tok, qf_tok = build_tokenizers(vocab_texts, shapes["vocab"])
    side, queries = shapes["image"], shapes["queries"]
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": side, "width": side}),
        tokenizer=llm_tok, qformer_tokenizer=qf_tok, num_query_tokens=queries,
    )
    d_model, d_ff, layers, heads = shapes["t5"]
    text = T5Config(vocab_size=len(llm_tok), d_model=d_model, d_kv=d_model // heads, d_ff=d_ff, num_layers=layers,
                    num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False, pad_token_id=llm_tok.pad_token_id, eos_token_id=llm_tok.eos_token_id,
                    decoder_start_token_id=llm_tok.pad_token_id)
    (vit, vit_mlp, vit_layers, vit_heads), (qf, qf_mlp, qf_layers, qf_heads) = shapes["vit"], shapes["qformer"]
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=vit, intermediate_size=vit_mlp, num_hidden_layers=vit_layers,
                           num_attention_heads=vit_heads, image_size=side, patch_size=shapes["patch"],
                           initializer_range=0.02),
        qformer_config=dict(vocab_size=len(qf_tok), hidden_size=qf, num_hidden_layers=qf_layers,
                            num_attention_heads=qf_heads, intermediate_size=qf_mlp, encoder_hidden_size=vit,
                            pad_token_id=qf_tok.pad_token_id),
        text_config=text.to_dict(), num_query_tokens=queries,
        image_token_index=llm_tok.convert_tokens_to_ids("<image>"),
    )
    return InstructBlipForConditionalGeneration(config), processor


def flops_per_sample(model, batch, shapes=FULL) -> float:
    """Estimated training FLOPs of one sample: 2 x params x tokens per forward matmul pass.

    Frozen ViT: forward only. Q-Former (trained): forward + backward (3x forward). Frozen LLM:
    forward, plus the backward pass for activation gradients only (no weight gradients: 1x more).
    """
    def params(module):
        return sum(p.numel() for p in module.parameters())

    n = batch["input_ids"].shape[0]
    vit_tokens = (shapes["image"] // shapes["patch"]) ** 2 + 1
    qf_tokens = shapes["queries"] + batch["qformer_input_ids"].shape[1]
    enc_tokens = batch["attention_mask"].sum().item() / n
    dec_tokens = (batch["labels"] != -100).sum().item() / n
    lm = model.language_model
    enc, dec = params(lm.encoder), params(lm.decoder) + params(lm.lm_head)
    return (
        2 * params(model.vision_model) * vit_tokens
        + 6 * params(model.qformer) * qf_tokens
        + 4 * (enc * enc_tokens + dec * dec_tokens)
    )


def timed(make_step, batch: int, warmup: int, steps: int, sync, free) -> tuple[float, int, float]:
    """(samples/s, batch used, FLOPs per sample) of `steps` timed steps after `warmup` untimed ones.

    `make_step(n)` returns (a step on a batch of n, its FLOPs per sample). A batch that runs out of GPU
    memory is halved (after `free()`) and tried again, down to 1, so that one scarce GPU run still
    measures something; the batch used is reported.
    """
    import torch

    while True:
        try:
            step, flops = make_step(batch)
            for _ in range(warmup):
                step()
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            return steps * batch / (time.perf_counter() - t0), batch, flops
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            step = None  # the failed batch's tensors go before the cache is freed
            free()
            print(f"out of GPU memory at batch {batch}: trying {batch // 2}", flush=True)
            batch //= 2


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="micro-batch on the one GPU")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="dense bf16 peak (default: from the GPU name)")
    parser.add_argument("--smoke", action="store_true",
                        help="run the same code on CPU with cut-down shapes (checks the script; measures nothing)")
    args = parser.parse_args()
    if args.smoke:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    elif not torch.cuda.is_available():
        sys.exit("train_throughput_gpu.py needs a CUDA GPU; none is visible (not measured); --smoke checks it on CPU")
    shapes, device = (SMOKE, "cpu") if args.smoke else (FULL, "cuda")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29511")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    import deepspeed
    import numpy as np

    from components.inference import collator_for, to_device
    from components.model import set_trainable
    from components.tiny_lm import reading_examples, vocabulary_texts
    from components.training import TrainConfig, deepspeed_config, parameter_groups

    torch.manual_seed(0)
    model, processor = flant5xl_sized(list(vocabulary_texts(2000)), shapes)
    trainable, total = set_trainable(model)
    cfg = TrainConfig(data="-", global_batch_size=args.batch, micro_batch_size=args.batch)
    cfg.scaling.num_workers, cfg.scaling.use_gpu, cfg.deepspeed.zero_stage = 1, device == "cuda", 2
    cfg.deepspeed.precision = "bf16"
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=parameter_groups(model, 0.05),
                                           config=deepspeed_config(cfg))

    def make_batch(n: int):
        rows = reading_examples(n, seed=1)
        rng = np.random.default_rng(0)
        columns = {
            "pixel_values": rng.standard_normal((n, 3, shapes["image"], shapes["image"]), dtype=np.float32),
            "instruction": [i for _, i, _ in rows], "target": [t for _, _, t in rows],
        }
        batch = collator_for(model, processor)(columns)
        return batch, flops_per_sample(model, batch, shapes)

    engine.train()

    def make_step(n: int):
        batch, flops = make_batch(n)
        batch = to_device(batch, device, torch.bfloat16)

        def step():
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()

        return step, flops

    def free():  # after an out-of-memory step: drop its gradients and the cached blocks
        engine.zero_grad()
        if device == "cuda":
            torch.cuda.empty_cache()

    rate, used, flops = timed(make_step, args.batch, args.warmup, args.steps, sync, free)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (--smoke: cut-down shapes, not a measurement)"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    print(f"{name}: {'FlanT5-XL-sized' if shapes is FULL else 'cut-down'} InstructBLIP, bf16, ZeRO-2, "
          f"batch {used}{'' if used == args.batch else f' (asked {args.batch}: out of GPU memory)'}, "
          f"trainable {trainable:,} of {total:,} parameters")
    print(f"samples/s: {rate:.1f} (paper: ~5.6 per A100; goal: >= 150 on one H100)")
    print(f"estimated training FLOPs per sample: {flops / 1e9:.1f} GFLOP; achieved {rate * flops / 1e12:.1f} TFLOP/s")
    if peak:
        print(f"model FLOPs utilisation: {100 * rate * flops / (peak * 1e12):.1f}% of {peak:.0f} TFLOP/s bf16 dense")
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
