"""The contract every raw-dataset adapter follows.

An adapter reads ONE raw source (the files a dataset's authors released, see
shared/formats/) through fsspec and yields canonical `Example`s. A source may
feed several of the 26 mixture datasets (VQAv2 feeds `vqav2` and `vqav2_qg`;
LLaVA-Instruct feeds three subsets), so an adapter declares a `DatasetSpec`
for each dataset it provides.

Bad input never stops a job: an adapter yields a `Reject` (key + reason) for
a record it cannot use and goes on. Only a missing source or an unreadable
annotation file raises `SourceError`, naming the path.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import fsspec

HELD_IN = "held_in"
HELD_OUT = "held_out"

# The 11 task categories of METHOD.md. Templates are keyed by these names.
CATEGORIES = (
    "image_captioning",
    "captioning_reading",
    "visual_reasoning",
    "image_qa",
    "knowledge_qa",
    "reading_qa",
    "question_generation",
    "video_qa",
    "conversational_qa",
    "image_classification",
    "llava_instruct",
)


class SourceError(Exception):
    """A raw source is missing or one of its annotation files cannot be read."""


@dataclass(frozen=True)
class DatasetSpec:
    """Declares one dataset of the mixture.

    Attributes:
        name: dataset name used everywhere (config keys, output folders).
        category: one of CATEGORIES.
        role: HELD_IN (trained on) or HELD_OUT (zero-shot evaluation only).
        template_set: key of the template list in templates.yaml
            ("<category>" or "<category>.<variant>"); None = no template
            (the example carries its own instruction, as LLaVA does).
        splits: the splits `prepare` converts by default, in the names used in
            the output (train / val / test).
        eval_split: for held-out sets, the split the paper evaluates on.
        task: how the dataset is scored at evaluation: "generate",
            "rank_choices" (vocabulary ranking over `choices`) or "binary".
    """

    name: str
    category: str
    role: str
    template_set: str | None
    splits: tuple[str, ...]
    eval_split: str | None = None
    task: str = "generate"

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"dataset {self.name!r}: unknown category {self.category!r}")
        if self.role not in (HELD_IN, HELD_OUT):
            raise ValueError(f"dataset {self.name!r}: role must be {HELD_IN!r} or {HELD_OUT!r}")
        if self.task not in ("generate", "rank_choices", "binary"):
            raise ValueError(f"dataset {self.name!r}: unknown task {self.task!r}")


@dataclass
class Example:
    """A raw record in canonical form, before templating.

    Attributes:
        key: record key, unique within (dataset, split); e.g. the question id.
        source: lineage, "<annotation file relative to the source root>#<record key>".
        image: URI of the image file, or None (video, or text-only record).
        video: URI of the video file, or None.
        slots: values for the template placeholders ({question}, {caption},
            {answer}, {statement}, {ocr}, {options}, {history}, {context}, {text}).
        target: the text the model must produce.
        answers: every reference answer (for metrics); may repeat (VQA counts votes).
        choices: candidates for vocabulary ranking; empty when open-ended.
        label_index: index of the correct choice, -1 when none.
        instruction: a ready instruction for template-free data (LLaVA, your own data).
    """

    key: str
    source: str
    image: str | None = None
    video: str | None = None
    slots: dict[str, str] = field(default_factory=dict)
    target: str = ""
    answers: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    label_index: int = -1
    instruction: str | None = None


@dataclass
class Reject:
    """A record that could not be used, with the reason and where it came from."""

    key: str
    source: str
    reason: str


class Adapter:
    """Base class of the raw-source adapters; subclasses live one per file in this package.

    Subclasses set `source` (the folder name under the raw root) and `datasets`
    (the specs they provide), and implement `read(dataset, split)`.
    """

    source: ClassVar[str] = ""
    datasets: ClassVar[tuple[DatasetSpec, ...]] = ()

    def __init__(
        self, root: str, image_root: str | None = None, storage_options: dict[str, Any] | None = None
    ) -> None:
        """Args:
        root: URI of this source's folder (e.g. "/data/raw/vqav2", "s3://bucket/vqav2").
        image_root: URI under which image/video paths are resolved (default: root), for
            users whose COCO images live in one shared folder.
        storage_options: passed to fsspec (credentials, endpoint).
        """
        self.root = root.rstrip("/")
        self.image_root = (image_root or root).rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **self.storage_options)

    # -- what subclasses implement ------------------------------------------------------
    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        """Yield the canonical examples (and rejects) of `dataset` / `split`."""
        raise NotImplementedError

    # -- helpers shared by every adapter ----------------------------------------------
    @classmethod
    def spec(cls, dataset: str) -> DatasetSpec:
        for spec in cls.datasets:
            if spec.name == dataset:
                return spec
        raise KeyError(f"{cls.__name__} does not provide dataset {dataset!r}")

    def uri(self, relpath: str) -> str:
        """URI of a file inside this source, in the same scheme as `root`."""
        return posixpath.join(self.root, relpath)

    def media_uri(self, relpath: str) -> str:
        """URI of an image or video file, resolved under `image_root`."""
        return posixpath.join(self.image_root, relpath)

    def exists(self, relpath: str) -> bool:
        return self.fs.exists(posixpath.join(self._root_path, relpath))

    def check_root(self) -> None:
        """Raise SourceError if the source folder does not exist."""
        if not self.fs.exists(self._root_path):
            raise SourceError(f"source folder for {self.source!r} not found: {self.root}")

    def open_text(self, relpath: str) -> str:
        """Read a whole annotation file as text, or raise SourceError naming it."""
        path = posixpath.join(self._root_path, relpath)
        try:
            with self.fs.open(path, "rb") as fh:
                return fh.read().decode("utf-8")
        except FileNotFoundError as exc:
            raise SourceError(f"{self.source}: annotation file not found: {self.uri(relpath)}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"{self.source}: cannot read annotation file {self.uri(relpath)}: {exc}") from exc

    def load_json(self, relpath: str) -> Any:
        """Parse a JSON annotation file, or raise SourceError naming it."""
        text = self.open_text(relpath)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{self.source}: {self.uri(relpath)} is not valid JSON: {exc}") from exc

    def load_json_field(self, relpath: str, key: str, kind: type) -> Any:
        """`load_json(relpath)[key]`, checked to be of `kind`; SourceError naming the file otherwise."""
        data = self.load_json(relpath)
        if not isinstance(data, dict) or not isinstance(data.get(key), kind):
            raise SourceError(f"{self.source}: {self.uri(relpath)} has no top-level {key!r} {kind.__name__}")
        return data[key]

    def iter_jsonl(self, relpath: str) -> Iterator[tuple[int, dict | Reject]]:
        """Yield (line number, parsed object) for a JSON Lines file; a bad line becomes a Reject."""
        text = self.open_text(relpath)
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, Reject(f"line{lineno}", f"{relpath}#line{lineno}", f"bad JSON line: {exc}")
                continue
            if not isinstance(obj, dict):
                yield lineno, Reject(f"line{lineno}", f"{relpath}#line{lineno}", "JSON line is not an object")
                continue
            yield lineno, obj

    def read_csv(self, relpath: str) -> list[dict[str, str]]:
        """Parse a CSV file with a header row into dicts keyed by column name."""
        return list(csv.DictReader(io.StringIO(self.open_text(relpath))))


class RecordError(ValueError):
    """Raised inside an adapter's per-record code; turned into a Reject by `guard`."""


def require(record: Any, key: str, kind: type | tuple[type, ...], *, allow_empty: bool = True) -> Any:
    """Return record[key] if it exists with the expected type, else raise RecordError.

    `bool` is never accepted where `int` is expected (JSON true is not a number).
    """
    if not isinstance(record, dict):
        raise RecordError(f"record is a {type(record).__name__}, expected an object")
    if key not in record or record[key] is None:
        raise RecordError(f"missing field {key!r}")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise RecordError(f"field {key!r} is a boolean, expected {'/'.join(k.__name__ for k in kinds)}")
    if not isinstance(value, kinds):
        raise RecordError(
            f"field {key!r} is {type(value).__name__}, expected {'/'.join(k.__name__ for k in kinds)}"
        )
    if not allow_empty and isinstance(value, (str, list, dict)) and len(value) == 0:
        raise RecordError(f"field {key!r} is empty")
    return value


def text_list(values: Any, field_name: str) -> list[str]:
    """Check that `values` is a list of strings (stripped) and return it."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RecordError(f"field {field_name!r} must be a list of strings")
    return [v.strip() for v in values]


def guard(key: str, source: str, build) -> Example | Reject:
    """Run `build()` for one record; a RecordError (or a type/key slip) becomes a Reject."""
    try:
        return build()
    except (RecordError, KeyError, TypeError, ValueError, IndexError) as exc:
        reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
        return Reject(key=key, source=source, reason=reason)


def most_common(values: list[str]) -> str:
    """The most frequent non-empty string (first seen wins ties); '' if none."""
    counts: dict[str, int] = {}
    for v in values:
        if v:
            counts[v] = counts.get(v, 0) + 1
    if not counts:
        return ""
    return max(counts, key=lambda v: (counts[v], -values.index(v)))


def format_options(choices: list[str]) -> str:
    """Render multiple-choice options the way every template shows them."""
    return " ".join(f"({chr(ord('a') + i)}) {c}" for i, c in enumerate(choices))


def question_generation(item: Example | Reject) -> Example | Reject:
    """Turn a VQA example into a question-generation example (answer in, question out).

    A Reject passes through unchanged; an example without an answer or question
    (which cannot become a question-generation example) becomes a Reject.
    """
    if isinstance(item, Reject):
        return item
    answer = item.target
    question = item.slots.get("question", "")
    if not answer or not question:
        return Reject(item.key, item.source, "no answer/question pair to build a question-generation example from")
    return Example(
        key=item.key,
        source=item.source,
        image=item.image,
        slots={"answer": answer},
        target=question,
        answers=[question],
    )


def with_question_generation(dataset: str, items: Iterator[Example | Reject]) -> Iterator[Example | Reject]:
    """The items of a VQA source as `dataset` wants them: unchanged, or for a question-generation
    dataset (name ending in "_qg") turned around by `question_generation`."""
    if dataset.endswith("_qg"):
        return (question_generation(item) for item in items)
    return items
