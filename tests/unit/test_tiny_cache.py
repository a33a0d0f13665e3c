"""The pre-trained tiny model is built once per configuration and then loaded (components.tiny_cache)."""

import json
import os
import shutil

import pytest
import torch

from components import tiny_cache
from components.config import ConfigError
from components.model import ModelSourceConfig, assemble, pretrained_tiny


def _config(cache, **changes) -> ModelSourceConfig:
    cfg = ModelSourceConfig(vision_steps=2, reader_steps=3, reader_batch_size=4, tiny_cache=str(cache))
    cfg.tiny.hidden_size, cfg.tiny.num_heads, cfg.tiny.vocab_size = 32, 2, 200
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def _assemble(cfg, seed=0):
    lines = []
    model, processor = assemble(cfg, seed=seed, log=lines.append, max_target_tokens=24)
    return model, processor, "\n".join(lines)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_first_assembly_pre_trains_and_caches_the_next_one_loads(tmp_path):
    cfg = _config(tmp_path)
    first, processor, log = _assemble(cfg)
    assert "pre-training the tiny ViT" in log and "pre-training the tiny t5 LLM" in log
    folder, key = tiny_cache.entry_dir(cfg, 0, 24)
    assert os.path.dirname(os.path.dirname(folder)) == str(tmp_path)
    assert json.load(open(os.path.join(folder, tiny_cache.ENTRY)))["key"] == key

    second, processor2, log2 = _assemble(cfg)
    assert "pre-training" not in log2 and f"from the cache {folder}" in log2
    assert _same_weights(first, second)
    assert processor2.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    # what the cache holds is what this configuration builds without it
    fresh, _ = pretrained_tiny(cfg, 0, lambda *_: None, max_target_tokens=24)
    cached = second.state_dict()
    assert all(torch.allclose(v, cached[k], atol=1e-5) for k, v in fresh.state_dict().items())


def test_another_configuration_or_seed_gets_its_own_entry(tmp_path):
    base = _config(tmp_path)
    _assemble(base)
    for cfg, seed in [(_config(tmp_path, reader_steps=4), 0), (base, 1)]:
        _, _, log = _assemble(cfg, seed)
        assert "pre-training the tiny t5 LLM" in log
        assert tiny_cache.entry_dir(cfg, seed, 24)[0] != tiny_cache.entry_dir(base, 0, 24)[0]
    assert len(os.listdir(tmp_path / "tiny")) == 3


def test_an_incomplete_entry_is_rebuilt_with_a_message(tmp_path):
    cfg = _config(tmp_path)
    _assemble(cfg)
    folder, _ = tiny_cache.entry_dir(cfg, 0, 24)
    os.remove(os.path.join(folder, tiny_cache.ENTRY))  # e.g. a copy that stopped half-way
    _, _, log = _assemble(cfg)
    assert "incomplete or from another configuration: rebuilding" in log and "pre-training" in log
    assert tiny_cache.read_entry(folder, tiny_cache.entry_dir(cfg, 0, 24)[1])
    assert [n for n in os.listdir(tmp_path / "tiny") if n.startswith(".building-")] == []


def test_a_complete_entry_published_meanwhile_by_another_process_is_kept(tmp_path):
    cfg = _config(tmp_path)
    _assemble(cfg)
    folder, key = tiny_cache.entry_dir(cfg, 0, 24)
    before = os.path.getmtime(os.path.join(folder, "model.safetensors"))
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"from the slower builder")
    tiny_cache._publish(str(staging), folder, key)
    assert os.path.getmtime(os.path.join(folder, "model.safetensors")) == before
    assert tiny_cache.read_entry(folder, key)


def test_off_pre_trains_every_time_and_writes_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(tiny_cache.ENV, str(tmp_path / "env-cache"))
    cfg = _config(tiny_cache.OFF)
    _, _, log = _assemble(cfg)
    assert "pre-training the tiny t5 LLM" in log and "cache" not in log
    assert not (tmp_path / "env-cache").exists()


def test_the_cache_folder_comes_from_config_then_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv(tiny_cache.ENV, str(tmp_path / "env"))
    assert tiny_cache.cache_root(str(tmp_path / "cfg")) == str(tmp_path / "cfg")
    assert tiny_cache.cache_root("") == str(tmp_path / "env")
    monkeypatch.delenv(tiny_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tiny_cache.cache_root("") == str(tmp_path / "xdg" / "instructblip")


def test_the_code_fingerprint_follows_the_sample_world_sources(tmp_path, monkeypatch):
    copy = tmp_path / "components"
    shutil.copytree(tiny_cache._COMPONENTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tiny_cache, "_COMPONENTS", copy)
    before = tiny_cache.code_fingerprint()
    assert tiny_cache.code_fingerprint() == before
    (copy / "serving.py").write_text("# not part of the tiny model\n")
    assert tiny_cache.code_fingerprint() == before
    scene = copy / "sample_world" / "scene.py"
    scene.write_text(scene.read_text() + "\n# a changed sample world\n")
    assert tiny_cache.code_fingerprint() != before


def test_a_bad_tiny_configuration_is_refused_before_anything_is_cached(tmp_path):
    cfg = _config(tmp_path)
    cfg.tiny.num_heads = 3
    with pytest.raises(Exception, match="num_heads"):
        _assemble(cfg)
    assert not (tmp_path / "tiny").exists() or os.listdir(tmp_path / "tiny") == []


def test_an_unwritable_or_remote_cache_is_refused_before_any_pre_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    lines = []
    with pytest.raises(ConfigError, match="model.tiny_cache: cannot write"):
        assemble(_config(blocker / "cache"), log=lines.append)
    assert not any("pre-training the tiny" in line for line in lines)
    with pytest.raises(ConfigError, match="must be a local folder"):
        assemble(_config("s3://bucket/cache"))


def test_staging_folders_of_killed_builds_are_removed_once_a_day_old(tmp_path):
    """A build killed outright leaves its `.building-*` folder; the next build removes it when it is
    old enough not to be a build still running in another process."""
    import time

    old, recent = tmp_path / ".building-killed", tmp_path / ".building-running"
    for folder in (old, recent):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    staging = tiny_cache._staging_dir(str(tmp_path))
    assert not old.exists() and recent.exists()
    assert os.path.isdir(staging) and os.path.basename(staging).startswith(".building-")
