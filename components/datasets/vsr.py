"""VSR, Visual Spatial Reasoning (cambridgeltl/visual-spatial-reasoning release).

Layout under the source root (the repository's `data/` folder plus the user's image copy):
    splits/zeroshot/{train,dev,test}.jsonl   the zero-shot split (object concepts of test unseen in train)
    splits/random/{train,dev,test}.jsonl     the random split (same kind of rows, another partition)
    images/<image>                           COCO-2017 train+val images copied into one flat folder,
                                             named like "000000050403.jpg" (no "COCO_" prefix)

One JSON object per line: image, image_link, caption (the statement to verify), label (1 true,
0 false), relation, annotator_id, vote_true_validator_id, vote_false_validator_id; zeroshot rows
also carry subj/obj, random rows carry reference_frame instead. The validator ids are
stringified lists ("[2, 6]") in the split files but real lists in the README; this adapter
reads neither. Rows have no id, so a row's key is its line number in its file. Every split,
test included, is labelled.

Provides `vsr` (held out, visual reasoning), evaluated like the paper on the zero-shot test split
by ranking "yes" (statement true) against "no".
"""

from __future__ import annotations

from typing import Iterator

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    guard,
    require,
)

# The paper evaluates on the zero-shot split; the random split is not part of the dataset.
SPLIT_FOLDER = "splits/zeroshot"
# our split name -> the release's file stem
SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}
CHOICES = ["yes", "no"]


class VSRAdapter(Adapter):
    source = "vsr"
    datasets = (
        DatasetSpec(
            "vsr",
            "visual_reasoning",
            HELD_OUT,
            "visual_reasoning.statement",
            ("test",),
            eval_split="test",
            task="binary",
        ),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        """Yield one binary example per statement of `splits/zeroshot/<split>.jsonl`."""
        self.spec(dataset)
        if split not in SPLIT_FILES:
            raise ValueError(f"vsr has no split {split!r}; known: {sorted(SPLIT_FILES)}")
        relpath = f"{SPLIT_FOLDER}/{SPLIT_FILES[split]}.jsonl"
        for lineno, row in self.iter_jsonl(relpath):
            if isinstance(row, Reject):
                yield row
                continue
            key = f"line{lineno}"
            yield guard(key, f"{relpath}#{key}", lambda row=row, key=key: self._example(row, key, relpath))

    def _example(self, row: dict, key: str, relpath: str) -> Example:
        image = require(row, "image", str, allow_empty=False).strip()
        statement = require(row, "caption", str, allow_empty=False).strip()
        label = require(row, "label", int)
        if label not in (0, 1):
            raise RecordError(f"label must be 0 or 1, got {label}")
        # binary verbalizer: index 0 = "yes" (the statement holds), 1 = "no"
        index = 0 if label == 1 else 1
        return Example(
            key=key,
            source=f"{relpath}#{key}",
            image=self.media_uri(f"images/{image}"),
            slots={"statement": statement},
            target=CHOICES[index],
            answers=[CHOICES[index]],
            choices=list(CHOICES),
            label_index=index,
        )
