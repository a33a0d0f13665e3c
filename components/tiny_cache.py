"""The cache of pre-trained tiny models: the sample world's stand-in for a hub download.

A real run starts from checkpoints someone pre-trained elsewhere (BLIP-2's ViT, FlanT5) and that
`from_pretrained` downloads once into a local cache. The sample world's tiny ViT and LLM are
pre-trained by this project (`components.model.pretrained_tiny`, minutes on a laptop CPU); this
module does the same for them: built once per configuration, saved as a directory that
`from_pretrained` loads, and reused by every later `iblip train` on this machine.

An entry is keyed by everything that decides its weights: the tiny sizes, the pre-training steps,
batch size, rate and seed, the training's target cut, the torch/transformers/tokenizers versions,
and a fingerprint of the source files that define the sample world and the pre-training. Change
any of them and a new entry is built. An entry is written to a temporary folder and renamed into
place with its `entry.json` last, so an interrupted build or two concurrent ones never leave a
half-written entry that is taken for a whole one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

OFF = "off"
ENV = "IBLIP_CACHE_DIR"
ENTRY = "entry.json"

_COMPONENTS = Path(__file__).resolve().parent
# what a pre-trained tiny model is made of: its assembly, the pre-training, the sample world it
# learns from and the instruction templates it reads
_SOURCES = ("model.py", "tiny_lm.py", "tiny_vision.py", "imaging.py", "training.py", "inference.py",
            "templates", "sample_world")


def cache_root(configured: str = "") -> str:
    """The cache folder: the configured one, else $IBLIP_CACHE_DIR, else ~/.cache/instructblip."""
    if configured:
        return os.path.expanduser(configured)
    if os.environ.get(ENV):
        return os.path.expanduser(os.environ[ENV])
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "instructblip")


def code_fingerprint() -> str:
    """sha256 over the source files that decide a tiny model's pre-trained weights."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = _COMPONENTS / name
        files = sorted(p for p in path.rglob("*") if p.suffix in (".py", ".yaml")) if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(_COMPONENTS)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def entry_key(cfg, seed: int, max_target_tokens: int) -> dict:
    """Everything that decides the weights of the tiny model built from `cfg` (a ModelSourceConfig)."""
    import tokenizers
    import torch
    import transformers

    return {
        "tiny": asdict(cfg.tiny),
        "vision_steps": cfg.vision_steps,
        "reader_steps": cfg.reader_steps,
        "reader_batch_size": cfg.reader_batch_size,
        "reader_lr": cfg.reader_lr,
        "seed": seed,
        "max_target_tokens": max_target_tokens,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "code": code_fingerprint(),
    }


def entry_dir(cfg, seed: int, max_target_tokens: int) -> tuple[str, dict]:
    """(folder of the cache entry for this configuration, its key); the folder may not exist yet."""
    key = entry_key(cfg, seed, max_target_tokens)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_root(cfg.tiny_cache), "tiny", f"{cfg.tiny.llm_family}-{name}"), key


def read_entry(folder: str, key: dict) -> dict | None:
    """The entry's record when the folder holds a complete entry for `key`, else None."""
    try:
        with open(os.path.join(folder, ENTRY)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


def tiny_model_dir(cfg, seed: int = 0, max_target_tokens: int = 0, log=print) -> str:
    """The folder of the pre-trained tiny model for `cfg` (a ModelSourceConfig), built on first use.

    Returns:
        A directory that `components.model.load_pretrained` loads (model, processor).
    """
    from components.model import pretrained_tiny

    folder, key = entry_dir(cfg, seed, max_target_tokens)
    record = read_entry(folder, key)
    if record:
        log(f"[model] pre-trained tiny model from the cache {folder} "
            f"(built {record['built']} in {record['seconds']:.0f}s)")
        return folder
    if os.path.exists(folder):
        log(f"[model] the cache entry {folder} is incomplete or from another configuration: rebuilding it")
    log(f"[model] no pre-trained tiny model for this configuration yet: pre-training it now "
        f"(once; cached in {folder}; model.tiny_cache=off skips the cache)")
    staging = _staging_dir(os.path.dirname(folder))  # before the minutes of pre-training: fail fast
    try:
        t0 = time.perf_counter()
        model, processor = pretrained_tiny(cfg, seed, log, max_target_tokens)
        seconds = time.perf_counter() - t0
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        built = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(os.path.join(staging, ENTRY), "w") as f:
            json.dump({"key": key, "built": built, "seconds": round(seconds, 1)}, f, indent=1)
        _publish(staging, folder, key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"[model] pre-trained tiny model built in {seconds:.0f}s and cached in {folder}")
    return folder


STALE_STAGING_S = 24 * 3600  # a build takes minutes: a staging folder this old belongs to a killed one


def _staging_dir(parent: str) -> str:
    """A new empty folder beside the entries, where a build is written before it is published.
    Staging folders left by builds killed outright (SIGKILL, power loss) are removed once a day old."""
    from components.config import ConfigError

    try:
        os.makedirs(parent, exist_ok=True)
        for old in Path(parent).glob(".building-*"):
            try:
                if time.time() - old.stat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:  # removed meanwhile by its own build or another cleaner
                pass
        return tempfile.mkdtemp(prefix=".building-", dir=parent)
    except OSError as exc:
        raise ConfigError(f"model.tiny_cache: cannot write the tiny-model cache in {parent} ({exc}); "
                          f"set model.tiny_cache (or ${ENV}) to a writable folder, or to {OFF!r}") from exc


def _publish(staging: str, folder: str, key: dict) -> None:
    """Rename the finished `staging` folder to `folder`. A complete entry that another process put
    there meanwhile is kept (same key, same weights); a broken one is replaced."""
    try:
        os.rename(staging, folder)
        return
    except OSError:
        if read_entry(folder, key):
            return
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(staging, folder)
