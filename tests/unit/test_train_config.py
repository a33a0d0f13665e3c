"""The training job's configuration pieces: validation, DeepSpeed config, AdamW groups, progress, pixels, scoring."""

import io
import json
import re
import random

import numpy as np
import pytest
import torch
from PIL import Image

from components.config import ConfigError, describe, load_config
from components.imaging import AugmentConfig, MediaError, PixelSpec, to_pixels
from components.inference import exact_match, normalize_answer
from components.training import Progress, TrainConfig, deepspeed_config, parameter_groups


def _cfg(*overrides):
    cfg = load_config(TrainConfig, None, ["data=/tmp/prepared", *overrides])
    cfg.validate()
    return cfg


# ---- TrainConfig ----


def test_defaults_are_two_cpu_workers_zero2_fp32_without_accumulation():
    cfg = _cfg()
    assert (cfg.scaling.num_workers, cfg.deepspeed.zero_stage, cfg.bf16, cfg.accumulation_steps) == (2, 2, False, 1)


def test_precision_auto_is_bf16_on_gpu_only_and_bf16_can_be_asked_for_on_cpu():
    assert _cfg("scaling.use_gpu=true").bf16 and not _cfg("scaling.use_gpu=true", "deepspeed.precision=fp32").bf16
    assert _cfg("deepspeed.precision=bf16").bf16  # DeepSpeed's CPU accelerator trains in bf16 too
    assert deepspeed_config(_cfg("deepspeed.precision=bf16"))["bf16"] == {"enabled": True}


def test_accumulation_fills_the_global_batch():
    cfg = _cfg("global_batch_size=192", "micro_batch_size=12", "scaling.num_workers=4")
    assert cfg.accumulation_steps == 4


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["global_batch_size=30"], "global_batch_size"),
        (["deepspeed.zero_stage=4"], "zero_stage"),
        (["deepspeed.precision=fp8"], "precision"),
        (["schedule.lr=0"], "lr"),
        (["model.source=blip2"], "model.path"),
        (["model.tiny.llm_family=gpt"], "llm_family"),
        (["train_data.augment.min_scale=0"], "min_scale"),
        (["validation.every_steps=0"], "every_steps"),
    ],
)
def test_bad_settings_are_named(overrides, names):
    with pytest.raises(ConfigError, match=names):
        _cfg(*overrides)


def test_data_is_required():
    with pytest.raises(ConfigError, match="data is required"):
        load_config(TrainConfig, None, []).validate()


def test_a_partial_nested_section_keeps_the_other_defaults():
    cfg = _cfg("schedule.total_steps=50")
    assert cfg.schedule.total_steps == 50 and cfg.schedule.lr == TrainConfig().schedule.lr == 3e-3
    cfg = load_config(TrainConfig, None, ["data=x", "schedule={total_steps: 70}"])
    assert cfg.schedule.total_steps == 70 and cfg.schedule.warmup_steps == TrainConfig().schedule.warmup_steps


def test_describe_lists_every_key_with_the_factory_defaults():
    text = "\n".join(describe(TrainConfig))
    assert "schedule.lr = 0.003" in text and "deepspeed.zero_stage = 2" in text
    assert "mlflow.alias = 'champion'" in text and "model.tiny.hidden_size" in text


# ---- DeepSpeed config ----


def test_deepspeed_config_follows_the_training_config():
    ds = deepspeed_config(_cfg("global_batch_size=64", "micro_batch_size=8", "optimizer.weight_decay=0.1"))
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (64, 8, 4)
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["betas"] == [0.9, 0.999]
    assert ds["zero_optimization"] == {"stage": 2} and ds["bf16"] == {"enabled": False}


def test_gpu_runs_get_bf16_zero3_gathering_and_offload():
    ds = deepspeed_config(_cfg("scaling.use_gpu=true", "deepspeed.zero_stage=3", "deepspeed.offload_optimizer=true"))
    assert ds["bf16"] == {"enabled": True}
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


# ---- AdamW groups ----


def test_no_weight_decay_on_biases_norms_and_frozen_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 4  # bias, norm weight, norm bias, last bias
    assert all(p is not model[2].weight for g in (decay, no_decay) for p in g["params"])


# ---- Progress ----


def test_progress_rate_and_eta_come_from_the_clock():
    now = [100.0]
    progress = Progress(total_steps=100, samples_per_step=32, start_step=20, clock=lambda: now[0])
    now[0] = 110.0  # 10 steps in 10 s
    m = progress.update(30)
    assert m["samples_per_s"] == pytest.approx(32.0) and m["eta_s"] == pytest.approx(70.0)
    now[0] = 115.0  # 10 more steps in 5 s: the window rate doubles, the ETA uses the run's mean rate
    m = progress.update(40)
    assert m["samples_per_s"] == pytest.approx(64.0) and m["eta_s"] == pytest.approx(60 / (20 / 15))
    line = Progress.line(40, 100, dict(m, loss=1.5, lr=1e-3, grad_norm=2.0))
    assert line.startswith("[train] step 40/100 loss 1.5000") and "64.0 samples/s" in line and "ETA 0:45" in line


# ---- pixels ----


def _png(size=(40, 20)):
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, size[0] // 2, size[1]))  # left half blue
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


SPEC = PixelSpec(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_to_pixels_resizes_and_normalises():
    arr = to_pixels(_png(), SPEC)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.float32
    assert arr[2, 8, 0] == pytest.approx(1.0) and arr[0, 8, 0] == pytest.approx(-1.0)  # blue on the left
    assert arr[0, 8, -1] == pytest.approx(1.0)  # red on the right


def test_a_large_jpeg_decoded_at_reduced_scale_matches_a_full_decode():
    """to_pixels lets the JPEG decoder scale down (DCT) before the bicubic resize: the result stays
    close to decoding every pixel and resizing, on a real photo-like image with edges and gradients."""
    from PIL import ImageDraw

    side = 512
    yy, xx = np.mgrid[0:side, 0:side]
    img = Image.fromarray(np.stack([xx * 255 // side, yy * 255 // side, (xx + yy) * 255 // (2 * side)],
                                   axis=-1).astype(np.uint8))
    pen = ImageDraw.Draw(img)
    pen.ellipse((100, 120, 300, 330), fill=(230, 30, 30))
    pen.rectangle((340, 60, 480, 200), fill=(20, 40, 220))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    spec = PixelSpec(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    full = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)
    reference = (np.asarray(full, dtype=np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    arr = to_pixels(buf.getvalue(), spec)
    assert arr.shape == reference.shape
    assert np.abs(arr - reference).mean() < 0.02  # in normalised units (range 2): under 1% on average


def test_augmentation_is_seeded_and_flips():
    aug = AugmentConfig(enabled=True, min_scale=1.0, hflip=True)
    plain = to_pixels(_png((32, 32)), SPEC)
    outs = [to_pixels(_png((32, 32)), SPEC, aug, random.Random(seed)) for seed in range(12)]
    flipped = [o for o in outs if np.allclose(o, plain[:, :, ::-1], atol=1e-4)]
    assert flipped and len(flipped) < len(outs)  # some flipped, some not
    assert np.array_equal(to_pixels(_png(), SPEC, aug, random.Random(3)), to_pixels(_png(), SPEC, aug, random.Random(3)))
    assert not AugmentConfig().enabled  # off unless asked for
    with pytest.raises(ValueError, match="rng"):
        to_pixels(_png(), SPEC, aug)


def test_crops_cover_at_least_min_scale():
    aug = AugmentConfig(enabled=True, min_scale=0.5, hflip=False)
    plain = to_pixels(_png((64, 64)), SPEC)
    outs = [to_pixels(_png((64, 64)), SPEC, aug, random.Random(s)) for s in range(8)]
    assert any(not np.allclose(o, plain, atol=1e-3) for o in outs)
    for o in outs:  # a crop of at least half the area keeps both colours of the half/half image
        assert (o[2] > 0.9).any() and (o[0] > 0.9).any()


def test_undecodable_bytes_are_a_media_error():
    with pytest.raises(MediaError, match="not a decodable image"):
        to_pixels(b"not an image", SPEC)


# ---- exact match ----


@pytest.mark.parametrize(
    "prediction, references, expected",
    [("Red.", ["red"], True), ("  two  ", ["2", "two"], True), ("the red", ["red"], False), ("", ["red"], False),
     ("Dune and Rain", ["dune and rain"], True)],
)
def test_exact_match(prediction, references, expected):
    assert exact_match(prediction, references) is expected


def test_normalize_answer():
    assert normalize_answer("  A  Big\tDog.. ") == "a big dog"


@pytest.mark.parametrize("override, named", [
    ("train_data.max_target_tokens=1", "max_target_tokens"), ("train_data.max_instruction_tokens=0", "max_instruction_tokens"),
    ("train_data.local_read_limit_mb=-1", "local_read_limit_mb"),
])
def test_bad_data_bounds_are_config_errors(override, named):
    with pytest.raises(ConfigError, match=named):
        _cfg(override)


def _manifest(tmp_path, datasets):
    (tmp_path / "manifest.json").write_text(json.dumps({"datasets": {
        name: {"role": role, "splits": {split: {"records_written": 10} for split in splits}}
        for name, (role, splits) in datasets.items()}}))
    return str(tmp_path)


WORLD = {"vqav2": ("held_in", ["train", "val"]), "llava": ("held_in", ["train"]), "gqa": ("held_out", ["test"])}


@pytest.mark.parametrize("chosen, message", [
    (["vqav2", "nope", "gqa"], "train_data.datasets ['nope', 'gqa'] are not held-in training sets of "),
    (["llava"], "none of the training sets ['llava'] has a validation split"),
])
def test_training_sets_are_checked_against_the_prepared_data(tmp_path, chosen, message):
    from pipelines.train import check_data

    data = _manifest(tmp_path, WORLD)
    cfg = load_config(TrainConfig, overrides=[f"data={data}", f"train_data.datasets={json.dumps(chosen)}"])
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        check_data(cfg, json.loads((tmp_path / "manifest.json").read_text()))
    assert "it has ['llava', 'vqav2']" in str(err.value) or "validation" in message
    cfg.train_data.datasets = []  # all held-in training sets: vqav2 validates
    check_data(cfg, json.loads((tmp_path / "manifest.json").read_text()))


@pytest.mark.parametrize("override, message", [
    ("train_data.datasets=[nope]", "['nope'] are not held-in training sets"),
    ("mlflow.tracking_uri=http://127.0.0.1:{port}", "is not reachable"),
])
def test_train_refuses_bad_data_or_tracking_before_starting_anything(tmp_path, override, message):
    """Checked before Ray starts or the model is assembled (minutes for a tiny model's first pre-training)."""
    import socket

    import ray

    from pipelines.train import train

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there afterwards
    data = _manifest(tmp_path, WORLD)
    cfg = load_config(TrainConfig, overrides=[f"data={data}", f"storage={tmp_path}/runs", "run_name=r",
                                              f"model.tiny_cache={tmp_path}/cache", override.format(port=port)])
    ray_was_up = ray.is_initialized()  # the suite's own Ray may be up already
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(cfg, log=lambda _: None)
    # no model assembled or cached, no run folder, no Ray started
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()
    assert ray.is_initialized() == ray_was_up


def _finished_run(tmp_path, total_steps=20, register=True, status="FINISHED"):
    """A config and what a finished job left: the run's summary, its export and its MLflow run (a real
    local store)."""
    from components import tracking
    from pipelines.train import SUMMARY, run_paths

    data = _manifest(tmp_path, WORLD)
    cfg = load_config(TrainConfig, overrides=[
        f"data={data}", f"storage={tmp_path}/runs", "run_name=done", f"model.tiny_cache={tmp_path}/cache",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"schedule.total_steps={total_steps}",
        "schedule.warmup_steps=1"])
    paths = run_paths(cfg)
    run_id = tracking.start_run(cfg.mlflow, cfg.run_name)
    tracking.RunLogger(run_id, cfg.mlflow.tracking_uri).finish(status)
    (tmp_path / "runs" / "done" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "done" / "model" / "config.json").write_text("{}")
    summary = {"step": 20, "accuracy_before": 0.2, "accuracy_after": 0.7, "run_name": "done", "mlflow_run_id": run_id,
               "export": paths["export"], "registered_model": "instructblip", "model_version": 3 if register else None,
               "alias": "champion" if register else None}
    (tmp_path / "runs" / "done" / SUMMARY).write_text(json.dumps(summary))
    return cfg, paths, summary


def test_a_finished_run_launched_again_reports_its_result_and_trains_nothing(tmp_path):
    """No Ray, no model assembly, no new MLflow run, no new registered version: the stored summary."""
    import ray

    from components import tracking
    from pipelines.train import train

    cfg, _, summary = _finished_run(tmp_path)
    ray_was_up = ray.is_initialized()
    lines = []
    assert train(cfg, log=lines.append) == summary
    assert any("run done finished already: 20 of 20 steps" in line and "registered as instructblip v3 @champion" in line
               for line in lines), lines
    assert not (tmp_path / "cache").exists() and ray.is_initialized() == ray_was_up
    client = tracking._client(cfg.mlflow.tracking_uri)
    assert len(client.search_runs([client.get_experiment_by_name("instructblip").experiment_id])) == 1


@pytest.mark.parametrize("change", ["more steps", "export deleted", "run not finished", "run deleted",
                                    "not registered", "another registered model", "another alias",
                                    "summary cut short"])
def test_a_run_that_has_not_finished_what_is_asked_is_not_skipped(tmp_path, change):
    import shutil

    from components import tracking
    from pipelines.train import SUMMARY, finished_summary

    cfg, paths, summary = _finished_run(tmp_path, total_steps=30 if change == "more steps" else 20,
                                        register=change != "not registered",
                                        status="FAILED" if change == "run not finished" else "FINISHED")
    as_first = load_config(TrainConfig, overrides=[f"data={cfg.data}", f"storage={tmp_path}/runs", "run_name=done",
                                                    f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}"])
    as_first.schedule.total_steps = 20  # the finished job's own request: skipped unless the run itself changed
    expected = None if change in ("run not finished", "not registered") else summary
    assert finished_summary(as_first, paths) == expected
    if change == "export deleted":
        shutil.rmtree(tmp_path / "runs" / "done" / "model")
    elif change == "run deleted":
        tracking._client(cfg.mlflow.tracking_uri).delete_run(summary["mlflow_run_id"])
    elif change == "another registered model":
        cfg.mlflow.registered_model = "other"
    elif change == "another alias":
        cfg.mlflow.alias = "staging"
    lines = []
    if change == "summary cut short":
        (tmp_path / "runs" / "done" / SUMMARY).write_text(json.dumps(summary)[:40])
    assert finished_summary(cfg, paths, log=lines.append) is None
    assert bool(lines) == (change == "summary cut short")


def test_an_initial_model_whose_export_was_interrupted_is_assembled_again(tmp_path):
    """A relaunch reuses the run's initial model only when its export finished: a driver stopped while
    writing it (seconds to minutes for a real checkpoint) left config.json without weights, and every
    relaunch then failed in `from_pretrained` with a traceback."""
    from transformers import InstructBlipForConditionalGeneration

    from pipelines.train import INITIAL_COMPLETE, ensure_initial_model, run_paths

    cfg = load_config(TrainConfig, overrides=[
        f"data={tmp_path}", f"storage={tmp_path}/runs", "run_name=r", f"model.tiny_cache={tmp_path}/cache",
        "model.vision_steps=2", "model.reader_steps=3", "model.reader_batch_size=4", "model.tiny.hidden_size=32",
        "model.tiny.num_heads=2", "model.tiny.vocab_size=200"])
    paths = run_paths(cfg)
    initial = tmp_path / "runs" / "r" / "initial_model"
    initial.mkdir(parents=True)
    (initial / "config.json").write_text("{}")  # what a stopped export leaves
    (initial / "stray.bin").write_text("half")
    lines = []
    assert ensure_initial_model(cfg, paths, lines.append) == str(initial)
    assert "has no .complete mark (its export was interrupted, or a version before the mark wrote it); assembling " \
           "it again" in lines[0]
    assert (initial / INITIAL_COMPLETE).is_file() and not (initial / "stray.bin").exists()
    InstructBlipForConditionalGeneration.from_pretrained(initial)
    lines.clear()
    assert ensure_initial_model(cfg, paths, lines.append) == str(initial)
    assert lines == [f"[train] reusing the run's initial model {initial}"]


def test_the_ablation_copies_an_initial_model_whole_or_again(tmp_path):
    from pipelines.ablate import _copy_initial
    from pipelines.train import INITIAL_COMPLETE

    src = tmp_path / "full" / "initial_model"
    (src / "sub").mkdir(parents=True)
    for name, text in (("config.json", "{}"), ("model.safetensors", "w"), ("sub/t.json", "t"), (INITIAL_COMPLETE, "")):
        (src / name).write_text(text)
    dst = tmp_path / "variant" / "initial_model"
    dst.mkdir(parents=True)
    (dst / "config.json").write_text("{}")  # a copy stopped part way
    _copy_initial(str(src), str(dst))
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == [
        INITIAL_COMPLETE, "config.json", "model.safetensors", "sub/t.json"]
    (dst / "model.safetensors").write_text("kept")
    _copy_initial(str(src), str(dst))  # whole: left alone
    assert (dst / "model.safetensors").read_text() == "kept"


def _jpeg(color) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buf, format="JPEG")
    return buf.getvalue()


def test_rows_whose_image_cannot_be_decoded_are_set_aside_and_recorded(tmp_path):
    """The training stream's preprocessing leaves such rows out and records them; the others go on."""
    import numpy as np

    from components.imaging import PixelSpec
    from pipelines.train import _pixels, count_rejects

    spec = PixelSpec(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    good = _jpeg((200, 0, 0))
    batch = {"sample_id": np.array(["a/0", "b/0", "c/0", "d/0"], dtype=object),
             "mix_position": np.array([0, 1, 2, 3]),
             "image": np.array([good, good[: len(good) // 3], b"not an image", good], dtype=object),
             "answers": np.array([["x"], ["y"], ["z"], ["w"]], dtype=object)}
    rejects = str(tmp_path / "rejects")
    out = _pixels(batch, spec, None, 0, keep_image=False, rejects=rejects)
    assert list(out["sample_id"]) == ["a/0", "d/0"] and list(out["mix_position"]) == [0, 3]
    assert out["pixel_values"].shape == (2, 3, 16, 16) and [list(a) for a in out["answers"]] == [["x"], ["w"]]
    assert "image" not in out
    records = [json.loads(line) for f in (tmp_path / "rejects").iterdir() for line in f.read_text().splitlines()]
    assert [r["sample_id"] for r in records] == ["b/0", "c/0"]
    assert all("not a decodable image" in r["reason"] or "not an image" in r["reason"] for r in records), records
    # a batch of bad rows only is empty with the right columns; the same sample met again counts once
    only_bad = {k: v[1:3] for k, v in batch.items()}
    out = _pixels(only_bad, spec, None, 0, keep_image=True, rejects=rejects)
    assert out["pixel_values"].shape == (0, 3, 16, 16) and len(out["image"]) == 0
    assert count_rejects(rejects) == (2, 4)
    assert count_rejects(str(tmp_path / "none")) == (0, 0)


def test_the_stream_holds_a_margin_for_rows_set_aside():
    from pipelines.train import stream_length

    batch = ("global_batch_size=16", "micro_batch_size=8")
    assert stream_length(_cfg("schedule.total_steps=800", *batch)) == 800 * 16 + 128  # 1%
    assert stream_length(_cfg("schedule.total_steps=10", "schedule.warmup_steps=1", *batch)) == 10 * 16 + 16  # a batch
