"""The instruction-data preparation, as plain functions the Ray Data job maps over.

Three steps, each a pure function of its input and the config:
1. `read_records(task, cfg)`: one (dataset, split) -> flat record dicts (or reject dicts), via the adapter.
2. `attach_media(records, cfg)`: read + normalise each record's image or video frames; failures become rejects.
3. `expand_rows(record, cfg, bank)`: one record -> `templates_per_sample` instruction rows.

`OUTPUT_SCHEMA` is the Parquet schema of the prepared rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from components.config import ConfigError, doc
from components.datasets import HELD_IN, HELD_OUT, Adapter, DatasetSpec, Example, Reject, SourceError, registry
from components.datasets.base import CATEGORIES
from components.imaging import ImageConfig, MediaError, VideoConfig, normalize_image, read_media, sample_video_frames


@dataclass
class SourceConfig:
    """Where one raw source lives, when not at `<raw>/<source>`."""

    root: str = doc("URI of the source folder (default: <raw>/<source>).", "")
    image_root: str = doc("URI under which its image/video paths resolve (default: the source folder).", "")


@dataclass
class CustomDatasetConfig:
    """A dataset of your own instruction data (no code needed)."""

    name: str = doc("Dataset name (output folder, mixing key); must not clash with a built-in dataset.")
    files: dict[str, str] = doc("Split name -> annotation file URI, e.g. {train: s3://b/train.jsonl}.")
    format: str = doc("'jsonl' (image, instruction, output per line) or 'llava' (LLaVA conversation JSON).", "jsonl")
    image_root: str = doc("URI relative image paths resolve under (default: the annotation file's folder).", "")
    category: str = doc("Task category (one of the 11; llava_instruct = free-form instructions).", "llava_instruct")
    role: str = doc("held_in (trained on) or held_out (evaluation only).", HELD_IN)

    def validate(self) -> None:
        if self.format not in ("jsonl", "llava"):
            raise ConfigError(f"custom dataset {self.name!r}: format must be 'jsonl' or 'llava', got {self.format!r}")
        if self.category not in CATEGORIES:
            raise ConfigError(f"custom dataset {self.name!r}: unknown category {self.category!r}")
        if self.role not in (HELD_IN, HELD_OUT):
            raise ConfigError(f"custom dataset {self.name!r}: role must be held_in or held_out")
        if not self.files:
            raise ConfigError(f"custom dataset {self.name!r}: files must name at least one split")


@dataclass
class TemplateConfig:
    """How instructions are made from templates."""

    templates_per_sample: int = doc("Rows per record, each with a different template (>1 expands the data).", 1)
    seed: int = doc("Seed of the per-record template choice (reproducible).", 0)
    file: str = doc("Your own templates YAML (fsspec URI); empty = the shipped templates.", "")

    def validate(self) -> None:
        if self.templates_per_sample < 1:
            raise ConfigError(f"templates.templates_per_sample must be >= 1, got {self.templates_per_sample}")


@dataclass
class MixingConfig:
    """Balanced mixing of the held-in training sets (METHOD.md)."""

    balanced: bool = doc("p_d proportional to sqrt(size); false = plain concatenation (the paper's ablation).", True)
    weights: dict[str, float] = doc(
        "Manual multipliers on p_d by dataset. The paper raises OKVQA and lowers A-OKVQA without publishing "
        "the values; these defaults are ours.",
        default_factory=lambda: {"okvqa": 2.0, "aokvqa": 0.5},
    )
    seed: int = doc("Seed of the mixed stream (the stream is a pure function of data and seed).", 0)

    def validate(self) -> None:
        for name, w in self.weights.items():
            if w < 0:
                raise ConfigError(f"mixing.weights.{name} must be >= 0, got {w}")


@dataclass
class RayConfig:
    """How to reach Ray."""

    address: str = doc("Ray address ('' starts a local Ray; 'auto' or ray://host:10001 joins a cluster).", "")
    num_cpus: int = doc("Logical CPUs of a local Ray (0 = twice the machine's core count, see README).", 0)


@dataclass
class PrepareConfig:
    """`iblip prepare`: raw datasets -> instruction-formatted Parquet."""

    raw: str = doc("URI of the raw root; each source is read from <raw>/<source> unless sources.<name>.root is set.", "")
    out: str = doc("URI of the output root: <out>/<dataset>/<split>/*.parquet, manifest.json, rejects/.", "")
    datasets: list[str] = doc("Datasets to prepare (empty = all 26 built-in plus custom ones).", default_factory=list)
    splits: dict[str, list[str]] = doc("Per-dataset split override, e.g. {vqav2: [train]}.", default_factory=dict)
    sources: dict[str, SourceConfig] = doc("Per-source locations.", default_factory=dict)
    custom: list[CustomDatasetConfig] = doc("Your own datasets (bring-your-own data).", default_factory=list)
    image: ImageConfig = doc("Image normalisation.", default_factory=ImageConfig)
    video: VideoConfig = doc("Video frame sampling.", default_factory=VideoConfig)
    templates: TemplateConfig = doc("Instruction templates.", default_factory=TemplateConfig)
    mixing: MixingConfig = doc("Balanced mixing.", default_factory=MixingConfig)
    ray: RayConfig = doc("Ray connection.", default_factory=RayConfig)
    media_batch_size: int = doc("Records per Ray Data block/task in the image/video step.", 256)

    def validate(self) -> None:
        known = set(registry()) | {c.name for c in self.custom}
        for c in self.custom:
            if c.name in registry():
                raise ConfigError(f"custom dataset name {c.name!r} clashes with a built-in dataset")
        for name in list(self.datasets) + list(self.splits) + list(self.mixing.weights):
            if name not in known:
                raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(known))}")
        sources = {cls.source for cls in registry().values()}
        for name in self.sources:
            if name not in sources:
                raise ConfigError(f"unknown source {name!r} in sources; known: {', '.join(sorted(sources))}")
        if self.media_batch_size < 1:
            raise ConfigError("media_batch_size must be >= 1")

    # -- resolution ------------------------------------------------------------------
    def selected(self) -> list[str]:
        """The datasets this run prepares, in a stable order."""
        names = self.datasets or sorted(registry()) + [c.name for c in self.custom]
        return list(dict.fromkeys(names))

    def dataset_spec(self, dataset: str) -> DatasetSpec:
        return make_adapter(self, dataset).spec(dataset)

    def splits_of(self, dataset: str) -> list[str]:
        return list(self.splits.get(dataset) or self.dataset_spec(dataset).splits)


def make_adapter(cfg: PrepareConfig, dataset: str) -> Adapter:
    """The adapter instance that reads `dataset`, located by the config."""
    for custom in cfg.custom:
        if custom.name == dataset:
            from components.datasets.custom import CustomInstructionAdapter

            return CustomInstructionAdapter(
                custom.name,
                dict(custom.files),
                custom.format,
                image_root=custom.image_root or None,
                category=custom.category,
                role=custom.role,
            )
    cls = registry()[dataset]
    where = cfg.sources.get(cls.source, SourceConfig())
    root = where.root or f"{cfg.raw.rstrip('/')}/{cls.source}"
    if not where.root and not cfg.raw:
        raise ConfigError(f"no raw location for {dataset!r}: set raw or sources.{cls.source}.root")
    return cls(root, image_root=where.image_root or None)


# -- step 1: records ----------------------------------------------------------------------


def _record(spec: DatasetSpec, dataset: str, split: str, item: Example | Reject) -> dict[str, Any]:
    base = {
        "record_id": f"{dataset}/{split}/{item.key}",
        "dataset": dataset,
        "split": split,
        "category": spec.category,
        "role": spec.role,
        "task": spec.task,
        "template_set": spec.template_set or "",
        "key": item.key,
        "source": item.source,
        "image_uri": None,
        "video_uri": None,
        "slots": "{}",
        "target": "",
        "answers": [],
        "choices": [],
        "label_index": -1,
        "instruction": "",
        "reject_reason": None,
    }
    if isinstance(item, Reject):
        base["reject_reason"] = item.reason
        return base
    base.update(
        image_uri=item.image,
        video_uri=item.video,
        slots=json.dumps(item.slots, sort_keys=True),
        target=item.target,
        answers=list(item.answers),
        choices=list(item.choices),
        label_index=int(item.label_index),
        instruction=item.instruction or "",
    )
    if item.image is None and item.video is None:
        base["reject_reason"] = "record has no image or video"
    return base


def read_records(dataset: str, split: str, cfg: PrepareConfig) -> Iterator[dict[str, Any]]:
    """All records of one (dataset, split) as flat dicts; bad ones carry `reject_reason`.

    Duplicate keys are rejected (the second one), so every record_id is unique.

    Raises:
        SourceError: the source folder or an annotation file is missing/unreadable.
    """
    adapter = make_adapter(cfg, dataset)
    if dataset in registry():
        adapter.check_root()
    spec = adapter.spec(dataset)
    seen: set[str] = set()
    for item in adapter.read(dataset, split):
        record = _record(spec, dataset, split, item)
        if item.key in seen:
            record["record_id"] += f"#dup{len(seen)}"
            record["reject_reason"] = f"duplicate record key {item.key!r}"
        seen.add(item.key)
        yield record


# -- step 2: media -------------------------------------------------------------------------
def attach_media(record: dict[str, Any], cfg: PrepareConfig) -> dict[str, Any]:
    """Read and normalise the record's image or video; on failure set `reject_reason`.

    Adds `image` (bytes or None) and `frames` (list of bytes) to the record.
    """
    record = dict(record)
    record["image"] = None
    record["frames"] = []
    if record["reject_reason"]:
        return record
    try:
        if record["video_uri"]:
            data = read_media(record["video_uri"], cfg.image.max_bytes)
            record["frames"] = sample_video_frames(data, cfg.video, cfg.image)
        else:
            data = read_media(record["image_uri"], cfg.image.max_bytes)
            record["image"] = normalize_image(data, cfg.image)
    except MediaError as exc:
        record["reject_reason"] = str(exc)
    return record


# -- step 3: instruction rows -----------------------------------------------------------------
OUTPUT_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("record_id", pa.string()),
        ("dataset", pa.string()),
        ("category", pa.string()),
        ("split", pa.string()),
        ("role", pa.string()),
        ("task", pa.string()),
        ("image", pa.binary()),
        ("frames", pa.list_(pa.binary())),
        ("instruction", pa.string()),
        ("target", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("choices", pa.list_(pa.string())),
        ("label_index", pa.int64()),
        ("template_id", pa.string()),
        ("source", pa.string()),
    ]
)
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)


def expand_rows(record: dict[str, Any], cfg: PrepareConfig, bank) -> list[dict[str, Any]]:
    """One good record -> `templates_per_sample` rows, each with its own template.

    `bank` is a components.templates.TemplateBank. The template choice is a
    pure function of (record_id, templates.seed).
    """
    example = Example(
        key=record["key"],
        source=record["source"],
        slots=json.loads(record["slots"]),
        instruction=record["instruction"] or None,
    )
    template_set = record["template_set"] or None
    pairs = bank.instructions(
        example, template_set, record["record_id"], cfg.templates.seed, cfg.templates.templates_per_sample
    )
    rows = []
    for rank, (template_id, instruction) in enumerate(pairs):
        row = {name: record.get(name) for name in OUTPUT_COLUMNS if name in record}
        row.update(
            sample_id=f"{record['record_id']}/{rank}",
            instruction=instruction,
            template_id=template_id,
            answers=list(record["answers"]),
            choices=list(record["choices"]),
            frames=list(record["frames"]),
        )
        rows.append(row)
    return rows


def reject_row(record: dict[str, Any]) -> dict[str, Any]:
    """What the rejects file keeps of a rejected record."""
    return {
        "dataset": record["dataset"],
        "split": record["split"],
        "key": record["key"],
        "source": record["source"],
        "reason": record["reject_reason"],
    }
