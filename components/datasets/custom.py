"""Bring-your-own instruction data: one adapter instance per dataset named in the config.

Not discovered with the built-in adapters (the registry skips this module); `prepare`
builds a `CustomInstructionAdapter` for every entry of `custom:` in its config.

Each split is one annotation file (any fsspec URI), in one of two formats:

"jsonl": one JSON object per line,
    {"image": "<path or URI>", "instruction": "...", "output": "...",
     optional "id": str|int, "answers": [str], "choices": [str], "label_index": int,
     "video": "<path or URI>" (instead of, or besides, "image")}
    `answers` defaults to [output]. With `choices`, `label_index` (if absent) is the
    position of `output` among them; an empty `output` with a `label_index` takes the
    chosen choice as target.

"llava": a JSON array of LLaVA-style records
    {"id": ..., "image": "<path or URI>", "conversations": [{"from": "human"|"gpt", "value": ...}]},
    split into one Example per human/gpt pair as for LLaVA-Instruct-150K.

Relative image/video paths resolve under `image_root`, by default the folder of the
annotation file they appear in; a path with a scheme ("s3://...") or a leading "/" is
kept as it is.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Iterator

import fsspec

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    guard,
    require,
    text_list,
)
from components.datasets.llava_instruct import llava_records

FORMATS = ("jsonl", "llava")


def is_absolute(path: str) -> bool:
    """True for a URI with a scheme or an absolute local path (kept as given)."""
    return "://" in path or path.startswith("/")


class CustomInstructionAdapter(Adapter):
    """Reads the user's own instruction data; each example carries its ready `instruction`."""

    def __init__(
        self,
        name: str,
        files: dict[str, str],
        format: str,
        image_root: str | None = None,
        category: str = "llava_instruct",
        role: str = "held_in",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        name: the dataset name (output folder, mixing key).
        files: our split name (train / val / test) -> annotation file URI.
        format: "jsonl" or "llava" (see the module docstring).
        image_root: URI relative image/video paths resolve under (default: each
            annotation file's folder).
        category: one of the 11 task categories.
        role: "held_in" or "held_out".
        storage_options: passed to fsspec (credentials, endpoint).
        Raises:
            ValueError: unknown format or category/role, or no files.
        """
        if format not in FORMATS:
            raise ValueError(f"custom dataset {name!r}: format must be one of {FORMATS}, got {format!r}")
        if not files:
            raise ValueError(f"custom dataset {name!r}: files must name at least one split")
        self.files = dict(files)
        self.format = format
        self.name = name
        self.source = f"custom:{name}"
        # a held-out set is evaluated on its test split when it has one, else on its last split
        eval_split = None
        if role == HELD_OUT:
            eval_split = "test" if "test" in self.files else list(self.files)[-1]
        self.datasets = (DatasetSpec(name, category, role, None, tuple(self.files), eval_split=eval_split),)
        first = next(iter(self.files.values()))
        super().__init__(posixpath.dirname(first) or ".", image_root=image_root, storage_options=storage_options)
        self._explicit_image_root = image_root.rstrip("/") if image_root else None

    def spec(self, dataset: str) -> DatasetSpec:  # instance method: the spec is built per instance
        if dataset != self.name:
            raise KeyError(f"custom adapter {self.name!r} does not provide dataset {dataset!r}")
        return self.datasets[0]

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in self.files:
            raise ValueError(f"custom dataset {self.name!r} has no split {split!r}; known: {list(self.files)}")
        uri = self.files[split]
        base = self._explicit_image_root or posixpath.dirname(uri)
        text = self._load_text(uri)
        if self.format == "jsonl":
            yield from self._read_jsonl(text, uri, base)
        else:
            try:
                records = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{self.source}: {uri} is not valid JSON: {exc}") from exc
            if not isinstance(records, list):
                raise SourceError(f"{self.source}: {uri} is not a JSON array of LLaVA-style records")
            yield from llava_records(records, uri, lambda path: self._resolve(path, base))

    # -- helpers -------------------------------------------------------------------------
    def _load_text(self, uri: str) -> str:
        try:
            fs, path = fsspec.core.url_to_fs(uri, **self.storage_options)
            with fs.open(path, "rb") as fh:
                return fh.read().decode("utf-8")
        except FileNotFoundError as exc:
            raise SourceError(f"{self.source}: annotation file not found: {uri}") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SourceError(f"{self.source}: cannot read annotation file {uri}: {exc}") from exc

    @staticmethod
    def _resolve(path: str, base: str) -> str:
        if is_absolute(path):
            return path
        while path.startswith("./"):
            path = path[2:]
        return posixpath.join(base, path) if base else path

    def _read_jsonl(self, text: str, uri: str, base: str) -> Iterator[Example | Reject]:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            key = f"line{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Reject(key, f"{uri}#{key}", f"bad JSON line: {exc}")
                continue
            rid = obj.get("id") if isinstance(obj, dict) else None
            if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip():
                key = str(rid).strip()
            yield guard(key, f"{uri}#{key}", lambda obj=obj, key=key: self._jsonl_example(obj, key, uri, base))

    def _jsonl_example(self, obj: Any, key: str, uri: str, base: str) -> Example:
        if not isinstance(obj, dict):
            raise RecordError("JSON line is not an object")
        image = video = None
        if obj.get("image") is not None:
            image = self._resolve(require(obj, "image", str, allow_empty=False).strip(), base)
        if obj.get("video") is not None:
            video = self._resolve(require(obj, "video", str, allow_empty=False).strip(), base)
        if image is None and video is None:
            raise RecordError("record has neither 'image' nor 'video'")
        instruction = require(obj, "instruction", str).strip()
        if not instruction:
            raise RecordError("field 'instruction' is empty")
        output = require(obj, "output", str).strip()
        choices = text_list(obj["choices"], "choices") if obj.get("choices") is not None else []
        if obj.get("label_index") is not None:
            label_index = require(obj, "label_index", int)
            if not 0 <= label_index < len(choices):
                raise RecordError(f"label_index {label_index} is outside the {len(choices)} choices")
            if output and output != choices[label_index]:
                raise RecordError(f"output {output!r} is not choices[{label_index}] {choices[label_index]!r}")
            output = output or choices[label_index]
        else:
            label_index = choices.index(output) if output in choices else -1
        if not output:
            raise RecordError("field 'output' is empty")
        answers = text_list(obj["answers"], "answers") if obj.get("answers") is not None else [output]
        return Example(
            key=key,
            source=f"{uri}#{key}",
            image=image,
            video=video,
            target=output,
            answers=answers,
            choices=choices,
            label_index=label_index,
            instruction=instruction,
        )
