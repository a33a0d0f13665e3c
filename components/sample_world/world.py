"""Writes the sample world: small raw datasets in each source's ORIGINAL release format.

One module per raw source in this package (`components/sample_world/<source>.py`)
defines `SOURCE` (the folder name) and `write(w: SourceWriter, n: int, faults: bool)`.
Discovery is automatic, as for the adapters.

With `faults=True` (the default) every writer also plants a few broken records
(a record with a missing or mistyped field, an image file that is not an image)
so the reject path of `prepare` is exercised on every run.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import posixpath
import random
import sys
import time
from typing import Any, Callable

import fsspec
from PIL import Image

from components.sample_world import scene as scenes

CORRUPT_IMAGE = b"this is not an image file\n"


class SourceWriter:
    """File helpers bound to one source folder of the sample world."""

    def __init__(self, root: str, source: str, seed: int, image_scale: float = 1.0) -> None:
        self.source = source
        self.image_scale = image_scale
        self.root = posixpath.join(root.rstrip("/"), source)
        self.fs, self._path = fsspec.core.url_to_fs(self.root)
        self.rng = random.Random(f"{seed}:{source}")
        self.files_written = 0

    def _full(self, relpath: str) -> str:
        return posixpath.join(self._path, relpath)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        path = self._full(relpath)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            fh.write(data)
        self.files_written += 1

    def write_text(self, relpath: str, text: str) -> None:
        self.write_bytes(relpath, text.encode("utf-8"))

    def write_json(self, relpath: str, obj: Any, *, compact: bool = False) -> None:
        sep = (",", ":") if compact else (", ", ": ")
        self.write_text(relpath, json.dumps(obj, separators=sep))

    def write_jsonl(self, relpath: str, rows: list[Any], *, compact: bool = False, escape_slashes: bool = False) -> None:
        """JSON Lines; `escape_slashes` writes "/" as "\\/" (the PHP-style JSON of Hateful Memes).

        A row that is already a `str` is written verbatim (for planting a broken line).
        """
        sep = (",", ":") if compact else (", ", ": ")
        lines = []
        for row in rows:
            line = row if isinstance(row, str) else json.dumps(row, separators=sep)
            if escape_slashes and not isinstance(row, str):
                line = line.replace("/", "\\/")
            lines.append(line)
        self.write_text(relpath, "\n".join(lines) + "\n")

    def write_image(self, relpath: str, img, fmt: str | None = None) -> None:
        """Encode a PIL image by the file's extension (or `fmt`) and write it."""
        ext = relpath.rsplit(".", 1)[-1].lower()
        fmt = fmt or {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF"}[ext]
        if self.image_scale != 1.0:
            # photo-sized pictures for benchmarks; the content (and so every fact) is unchanged
            size = (round(img.width * self.image_scale), round(img.height * self.image_scale))
            img = img.resize(size, Image.Resampling.BICUBIC)
        self.write_bytes(relpath, scenes.encode(img, fmt))

    def write_scene(self, relpath: str, scene: scenes.Scene, side: int = 160) -> None:
        self.write_image(relpath, scenes.draw(scene, side))

    def write_corrupt_image(self, relpath: str) -> None:
        """Plant a file with an image's name whose bytes are not an image."""
        self.write_bytes(relpath, CORRUPT_IMAGE)


def writers() -> dict[str, Callable[[SourceWriter, int, bool], None]]:
    """Discover every `components/sample_world/<source>.py` with SOURCE and write()."""
    import components.sample_world as pkg

    found: dict[str, Callable] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in ("scene", "world"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        source = getattr(module, "SOURCE", None)
        write = getattr(module, "write", None)
        if source is None or write is None:
            continue
        if source in found:
            raise RuntimeError(f"two sample-world writers claim source {source!r}")
        found[source] = write
    return found


MIN_PER_DATASET = 10  # fewer records leave some splits empty


def generate(
    out: str,
    per_dataset: int = 200,
    seed: int = 0,
    faults: bool = True,
    sources: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    image_scale: float = 1.0,
) -> dict[str, int]:
    """Write the sample world under `out/<source>/`.

    Args:
        out: folder or fsspec URI to write into.
        per_dataset: records in each source's main training (or evaluation) split.
        seed: the world is a pure function of the seed.
        faults: plant a few broken records per source (see module docstring).
        sources: only these sources (default: all).
        log: progress callback (one line per source).
        image_scale: scale every still image by this factor (e.g. 4 for photo-sized
            pictures in benchmarks); videos keep their size.
    Returns:
        files written per source.
    Raises:
        ValueError: an unknown source was asked for, or per_dataset < 10.
    """
    if per_dataset < MIN_PER_DATASET:
        raise ValueError(f"per_dataset must be at least {MIN_PER_DATASET}, got {per_dataset}")
    available = writers()
    wanted = sources or sorted(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise ValueError(f"unknown sample-world source(s) {unknown}; known: {sorted(available)}")
    log = log or (lambda line: print(line, file=sys.stderr))
    written: dict[str, int] = {}
    for i, source in enumerate(wanted, start=1):
        start = time.perf_counter()
        w = SourceWriter(out, source, seed, image_scale)
        available[source](w, per_dataset, faults)
        written[source] = w.files_written
        log(f"[sample-data {i}/{len(wanted)}] {source}: {w.files_written} files in {time.perf_counter() - start:.1f}s")
    return written
