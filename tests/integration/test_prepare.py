"""sample-data then prepare on a real local Ray, validating every Parquet file and the manifest."""

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.config import load_config
from components.datasets import SourceError, registry
from components.mixing import mixed_stream
from components.preparation import OUTPUT_COLUMNS, PrepareConfig
from components.sample_world.world import generate
from pipelines.prepare import run_prepare

pytestmark = pytest.mark.integration

ALL_26 = {
    "coco_caption", "web_capfilt", "textcaps", "vqav2", "okvqa", "aokvqa", "ocrvqa", "vqav2_qg", "okvqa_qg",
    "aokvqa_qg", "llava_detail", "llava_reasoning", "llava_conversation",
    "nocaps", "flickr30k", "gqa", "vsr", "iconqa", "textvqa", "visdial", "hateful_memes", "vizwiz",
    "scienceqa", "msvd_qa", "msrvtt_qa", "ivqa",
}
HELD_IN = {"coco_caption", "web_capfilt", "textcaps", "vqav2", "okvqa", "aokvqa", "ocrvqa", "vqav2_qg",
           "okvqa_qg", "aokvqa_qg", "llava_detail", "llava_reasoning", "llava_conversation"}
VIDEO = {"msvd_qa", "msrvtt_qa", "ivqa"}


@pytest.fixture(scope="module")
def prepared(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    raw, out = root / "raw", root / "out"
    generate(str(raw), per_dataset=24, seed=0, faults=True, log=lambda _: None)
    cfg = load_config(PrepareConfig, "configs/prepare.yaml", [f"raw={raw}", f"out={out}", "image.max_side=64"])
    manifest = run_prepare(cfg, log=lambda _: None)
    return raw, out, cfg, manifest


def test_registry_declares_the_26_datasets_with_roles():
    reg = registry()
    assert set(reg) == ALL_26
    for name in ALL_26:
        spec = reg[name].spec(name)
        assert spec.role == ("held_in" if name in HELD_IN else "held_out"), name


def test_every_dataset_split_is_written_and_valid(prepared):
    _, out, cfg, manifest = prepared
    assert set(manifest["datasets"]) == ALL_26
    for name, entry in manifest["datasets"].items():
        for split, counts in entry["splits"].items():
            files = sorted((out / name / split).glob("*.parquet"))
            assert files, f"{name}/{split} has no parquet files"
            table = pq.read_table(files[0]) if len(files) == 1 else None
            rows = [r for f in files for r in pq.read_table(f).to_pylist()]
            assert len(rows) == counts["rows_written"] > 0, f"{name}/{split}"
            assert set(pq.read_schema(files[0]).names) >= set(OUTPUT_COLUMNS)
            assert len({r["sample_id"] for r in rows}) == len(rows), "duplicate sample ids"
            for r in rows:
                assert r["dataset"] == name and r["split"] == split and r["role"] == entry["role"]
                assert r["instruction"] and not re.search(r"[{}]", r["instruction"]) or name.startswith("llava")
                assert r["template_id"]
                assert r["source"] and "#" in r["source"]
                if name in VIDEO:
                    assert r["image"] is None and len(r["frames"]) == cfg.video.num_frames
                    Image.open(io.BytesIO(r["frames"][0])).verify()
                else:
                    img = Image.open(io.BytesIO(r["image"]))
                    assert max(img.size) <= 64 and img.mode == "RGB"
                if r["choices"]:
                    assert 0 <= r["label_index"] < len(r["choices"]) or r["label_index"] == -1
                if entry["role"] == "held_in":
                    assert r["target"], f"{name}/{split} row without target"


def test_manifest_counts_add_up_and_rejects_are_kept(prepared):
    _, out, _, manifest = prepared
    total_rejected = 0
    for name, entry in manifest["datasets"].items():
        lines = (out / "rejects" / f"{name}.jsonl").read_text().splitlines()
        rejects = [json.loads(line) for line in lines]
        for split, s in entry["splits"].items():
            assert s["records_read"] == s["records_written"] + s["records_rejected"]
            assert s["records_rejected"] == sum(1 for r in rejects if r["split"] == split)
        for r in rejects:
            assert r["reason"] and r["key"] and r["source"]
        total_rejected += len(rejects)
    # the sample world plants a broken annotation and a corrupt image in sources
    assert total_rejected >= 20
    reasons = " ".join(json.loads(l)["reason"] for f in (out / "rejects").glob("*.jsonl") for l in f.read_text().splitlines())
    assert "not a decodable image" in reasons


def test_manifest_mixing_probabilities(prepared):
    _, _, _, manifest = prepared
    probs = {n: e["splits"]["train"]["mixing_probability"] for n, e in manifest["datasets"].items() if n in HELD_IN}
    assert set(probs) == HELD_IN
    assert sum(probs.values()) == pytest.approx(1.0)
    ok = manifest["datasets"]["okvqa"]["splits"]["train"]
    assert ok["multiplier"] == 2.0 and ok["sqrt_weight"] == pytest.approx(ok["records_written"] ** 0.5)
    for name, entry in manifest["datasets"].items():
        if name not in HELD_IN:
            assert all("mixing_probability" not in s for s in entry["splits"].values())


def test_rerun_replaces_without_duplicates(prepared, local_ray):
    raw, out, cfg, manifest = prepared
    before = {n: e["splits"] for n, e in manifest["datasets"].items()}
    cfg2 = load_config(PrepareConfig, None, [f"raw={raw}", f"out={out}", "image.max_side=64", "datasets=[vqav2, vsr]"])
    again = run_prepare(cfg2, log=lambda _: None)
    for name in ("vqav2", "vsr"):
        for split, s in again["datasets"][name]["splits"].items():
            assert s["rows_written"] == before[name][split]["rows_written"]
            files = list((out / name / split).glob("*.parquet"))
            assert sum(pq.read_metadata(f).num_rows for f in files) == s["rows_written"]
    assert set(again["datasets"]) == ALL_26  # other datasets kept in the manifest
    assert not (out / "_staging").exists()


def test_templates_per_sample_expands_rows(local_ray, tmp_path, prepared):
    raw, _, _, manifest = prepared
    cfg = load_config(PrepareConfig, None, [f"raw={raw}", f"out={tmp_path}", "datasets=[vqav2]",
                                            "templates.templates_per_sample=3", "image.max_side=32"])
    m = run_prepare(cfg, log=lambda _: None)
    s = m["datasets"]["vqav2"]["splits"]["train"]
    assert s["rows_written"] == 3 * s["records_written"]
    rows = pq.read_table(tmp_path / "vqav2" / "train").to_pylist()
    by_record = {}
    for r in rows:
        by_record.setdefault(r["record_id"], set()).add(r["template_id"])
    assert all(len(t) == 3 for t in by_record.values())


def test_missing_source_is_a_clear_error_and_writes_nothing(local_ray, tmp_path):
    cfg = load_config(PrepareConfig, None, [f"raw={tmp_path / 'nothing'}", f"out={tmp_path / 'out'}", "datasets=[gqa]"])
    with pytest.raises(SourceError, match=str(tmp_path / "nothing" / "gqa")):
        run_prepare(cfg, log=lambda _: None)
    assert not (tmp_path / "out" / "gqa").exists()


def test_mixed_stream_proportions_and_determinism(prepared):
    _, out, _, manifest = prepared
    n = 1500
    columns = ["sample_id", "dataset", "mix_position"]  # not the images: the mixing is what is checked
    a = mixed_stream(str(out), n, seed=11).select_columns(columns).take_all()  # small: built in the driver
    b = mixed_stream(str(out), n, seed=11).select_columns(columns).take_all()
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    assert [r["mix_position"] for r in a] == list(range(n))
    # the distributed read + sort (streams over train_data.local_read_limit_mb) gives the same stream;
    # two datasets keep its one-task-per-file read short
    pair = ["okvqa", "vqav2"]
    local = mixed_stream(str(out), 300, seed=5, datasets=pair).select_columns(columns).take_all()
    distributed = mixed_stream(str(out), 300, seed=5, datasets=pair, local_limit_mb=0).select_columns(columns).take_all()
    assert local == distributed and {r["dataset"] for r in local} == set(pair)
    probs = {name: e["splits"]["train"]["mixing_probability"] for name, e in manifest["datasets"].items() if name in HELD_IN}
    for name, p in probs.items():
        observed = sum(1 for r in a if r["dataset"] == name) / n
        assert abs(observed - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-9, (name, observed, p)
    # another seed gives another stream: tests/unit/test_mixing.py (the plan is a pure function of it)


def test_unbalanced_stream_is_plain_concatenation(prepared):
    _, out, _, manifest = prepared
    total = sum(e["splits"]["train"]["rows_written"] for n, e in manifest["datasets"].items() if n in HELD_IN)
    rows = mixed_stream(str(out), total, seed=0, balanced=False).select_columns(["sample_id"]).take_all()
    assert len({r["sample_id"] for r in rows}) == total  # every row once per epoch


def test_failed_run_leaves_previous_output_intact(local_ray, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate(str(raw), per_dataset=12, seed=1, sources=["vqav2"], log=lambda _: None)
    overrides = [f"raw={raw}", f"out={out}", "datasets=[vqav2]", "image.max_side=32"]
    first = run_prepare(load_config(PrepareConfig, None, overrides), log=lambda _: None)
    before = sorted(p.name for p in (out / "vqav2" / "train").glob("*.parquet"))
    (raw / "vqav2" / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(SourceError, match="v2_mscoco_val2014_annotations.json"):
        run_prepare(load_config(PrepareConfig, None, overrides), log=lambda _: None)
    assert sorted(p.name for p in (out / "vqav2" / "train").glob("*.parquet")) == before
    assert json.loads((out / "manifest.json").read_text())["created"] == first["created"]
    assert not (out / "_staging").exists()


def test_bring_your_own_jsonl_and_llava_through_prepare(local_ray, tmp_path):
    from components.sample_world import scene as scenes
    import random

    data = tmp_path / "mine"
    (data / "img").mkdir(parents=True)
    rng = random.Random(0)
    lines = []
    for i in range(6):
        s = scenes.random_scene(rng)
        scenes.draw(s, 64).save(data / "img" / f"{i}.png")
        lines.append(json.dumps({"id": i, "image": f"img/{i}.png", "instruction": "Describe the picture.", "output": s.caption(rng)}))
    lines.append("{not json")
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    (data / "conv.json").write_text(json.dumps([
        {"id": "c1", "image": "img/0.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the background color?"}, {"from": "gpt", "value": "It is gray."},
            {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No."}]}]))
    overrides = [
        f"out={tmp_path / 'out'}",
        "datasets=[mine, mine_conv]",
        f"custom=[{{name: mine, files: {{train: '{data / 'train.jsonl'}'}}}}, "
        f"{{name: mine_conv, format: llava, files: {{train: '{data / 'conv.json'}'}}, image_root: '{data}'}}]",
    ]
    m = run_prepare(load_config(PrepareConfig, None, overrides), log=lambda _: None)
    mine = m["datasets"]["mine"]["splits"]["train"]
    assert (mine["records_read"], mine["records_written"], mine["records_rejected"]) == (7, 6, 1)
    rows = pq.read_table(tmp_path / "out" / "mine" / "train").to_pylist()
    assert {r["instruction"] for r in rows} == {"Describe the picture."}
    assert all(r["target"] and r["image"] and r["template_id"] == "none" for r in rows)
    conv = pq.read_table(tmp_path / "out" / "mine_conv" / "train").to_pylist()
    assert len(conv) == 2 and {r["target"] for r in conv} == {"It is gray.", "No."}
    assert m["datasets"]["mine"]["splits"]["train"]["mixing_probability"] > 0


def test_small_reads_in_the_driver_match_the_distributed_read(prepared):
    from components.manifest import split_files
    from components.mixing import _fs
    from components.reading import read_rows

    _, out, _, manifest = prepared
    with_val = sorted(n for n, e in manifest["datasets"].items() if n in HELD_IN and "val" in e["splits"])[:3]
    files = [f for name in with_val for f in split_files(str(out), name, "val")]
    fs, _ = _fs(str(out))
    every = read_rows(files, fs, ["sample_id"]).take_all()
    some = sorted(r["sample_id"] for r in every)[::3]
    columns = ["sample_id", "dataset", "target"]
    local = read_rows(files, fs, columns, some, block_rows=5)
    distributed = read_rows(files, fs, columns, some, local_limit_mb=0)
    key = lambda r: r["sample_id"]  # noqa: E731
    assert sorted(local.take_all(), key=key) == sorted(distributed.take_all(), key=key)
    assert sorted(r["sample_id"] for r in local.take_all()) == some and len(some) > 5
    assert local.materialize().num_blocks() > 1  # several blocks: the operators after it run in parallel


def test_a_stream_far_longer_than_its_data_comes_in_bounded_blocks(local_ray):
    """The distributed stream repeats each row once per position the plan gives it: thousands of times
    when the stream is much longer than the data (a long run on a small dataset). One output block per
    input block then outgrew Arrow's 2 GB binary offsets (measured: 3.2 million samples of the sample
    world failed with "ArrowIndexError: Negative buffer slice length"); `_place` now yields bounded blocks."""
    import pyarrow as pa

    from components.mixing import _place

    batch = pa.table({"sample_id": [f"s{i}" for i in range(10)], "image": [bytes([i]) * 100_000 for i in range(10)]})
    plan = {f"s{i}": list(range(i, 1000, 10)) for i in range(10)}  # each row at 100 positions
    blocks = list(_place(batch, local_ray.put(plan), block_bytes=2_000_000))
    assert len(blocks) >= 5 and all(b.nbytes <= 2_000_000 + 100_100 for b in blocks)
    rows = pa.concat_tables(blocks)
    assert sorted(rows.column("mix_position").to_pylist()) == list(range(1000))
    for sid, image, pos in zip(*(rows.column(c).to_pylist() for c in ("sample_id", "image", "mix_position"))):
        assert sid == f"s{pos % 10}" and image == bytes([pos % 10]) * 100_000
