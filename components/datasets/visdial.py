"""Visual Dialog v1.0 (visualdialog.org release).

Layout under the source root:
    visdial_1.0_train.json, visdial_1.0_val.json, visdial_1.0_test.json
    train2014/COCO_train2014_<image_id:012d>.jpg   train images are COCO train2014 ...
    val2014/COCO_val2014_<image_id:012d>.jpg       ... and COCO val2014 (looked up by image_id)
    VisualDialog_val2018/VisualDialog_val2018_<image_id:012d>.jpg
    VisualDialog_test2018/VisualDialog_test2018_<image_id:012d>.jpg

Each file is {"data": {"questions": [...], "answers": [...], "dialogs": [...]}, "split", "version"}.
Questions and answers are GLOBAL pools of strings (questions without their "?"); a dialog is
{"image_id", "caption", "dialog": [rounds]} and a round holds indices into the pools:
{"question", "answer", "answer_options": [100 answer indices], "gt_index": position of the
answer among the options}. Train and val dialogs have 10 rounds. A test dialog has "round_id"
and only that many rounds: the earlier ones with question and answer, the last one with
question and answer_options but no answer or gt_index.

Provides `visdial` (held out, conversational QA) on val, ranking the 100 candidate answers:
one example per round, keyed "<image_id>_r<round>" (rounds count from 1), with the caption,
the earlier rounds as history ("Q: ...? A: ...") and the question with "?" restored. On test,
only the evaluated round (round_id) is an example. A pool index out of range rejects the
round it is in, and every later round of that dialog whose history needs it.
"""

from __future__ import annotations

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
)

SPLITS = ("train", "val", "test")


def _pool_text(pool: list, index: Any, what: str) -> str:
    """The pool string at `index`, or a RecordError saying why it cannot be had."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise RecordError(f"{what} index is {type(index).__name__}, expected int")
    if not 0 <= index < len(pool):
        raise RecordError(f"{what} index {index} is outside the pool of {len(pool)}")
    text = pool[index]
    if not isinstance(text, str):
        raise RecordError(f"{what} pool entry {index} is {type(text).__name__}, expected str")
    return text.strip()


def _question(text: str) -> str:
    # the pool stores questions without their question mark
    return text if text.endswith("?") else f"{text}?"


class VisDialAdapter(Adapter):
    source = "visdial"
    datasets = (
        DatasetSpec(
            "visdial",
            "conversational_qa",
            HELD_OUT,
            "conversational_qa",
            ("val",),
            eval_split="val",
            task="rank_choices",
        ),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._coco_val_ids: set[int] | None = None

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        """Yield one ranking example per dialog round (test: per evaluated round)."""
        self.spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"visdial has no split {split!r}; known: {list(SPLITS)}")
        relpath = f"visdial_1.0_{split}.json"
        doc = self.load_json(relpath)
        data = doc.get("data") if isinstance(doc, dict) else None
        pools = {
            name: data.get(name) if isinstance(data, dict) else None for name in ("questions", "answers", "dialogs")
        }
        for name, pool in pools.items():
            if not isinstance(pool, list):
                raise SourceError(f"visdial: {self.uri(relpath)} has no list data.{name}")
        for index, dialog in enumerate(pools["dialogs"]):
            yield from self._dialog(dialog, index, pools["questions"], pools["answers"], relpath, split)

    # -- one dialog --------------------------------------------------------------------
    def _dialog(
        self, dialog: Any, index: int, questions: list, answers: list, relpath: str, split: str
    ) -> Iterator[Example | Reject]:
        image_id = dialog.get("image_id") if isinstance(dialog, dict) else None
        key = str(image_id) if isinstance(image_id, int) and not isinstance(image_id, bool) else f"dialog{index}"
        try:
            image_id = require(dialog, "image_id", int)
            caption = require(dialog, "caption", str).strip()
            rounds = require(dialog, "dialog", list, allow_empty=False)
            evaluated = range(1, len(rounds) + 1)
            if split == "test":
                round_id = dialog.get("round_id", len(rounds))
                if isinstance(round_id, bool) or not isinstance(round_id, int) or not 1 <= round_id <= len(rounds):
                    raise RecordError(f"round_id {round_id!r} does not name one of the {len(rounds)} rounds")
                evaluated = range(round_id, round_id + 1)
        except RecordError as exc:
            yield Reject(key, f"{relpath}#{key}", str(exc))
            return

        image = self._image(split, image_id)
        # question and answer text of every round, or the reason it cannot be had
        turns: list[tuple[str, str] | str] = []
        for rnd in rounds:
            try:
                q = _question(_pool_text(questions, require(rnd, "question", int), "question"))
                a = _pool_text(answers, require(rnd, "answer", int), "answer")
                turns.append((q, a))
            except RecordError as exc:
                turns.append(str(exc))

        for number in evaluated:
            rkey = f"{image_id}_r{number}"
            yield guard(
                rkey,
                f"{relpath}#{rkey}",
                lambda number=number, rkey=rkey: self._round(
                    rounds[number - 1], number, turns, questions, answers, caption, image, rkey, relpath, split
                ),
            )

    def _round(
        self,
        rnd: Any,
        number: int,
        turns: list,
        questions: list,
        answers: list,
        caption: str,
        image: str,
        key: str,
        relpath: str,
        split: str,
    ) -> Example:
        history = []
        for k, turn in enumerate(turns[: number - 1], start=1):
            if isinstance(turn, str):
                raise RecordError(f"history round {k}: {turn}")
            history.append(f"Q: {turn[0]} A: {turn[1]}")
        question = _question(_pool_text(questions, require(rnd, "question", int), "question"))
        raw_options = require(rnd, "answer_options", list, allow_empty=False)
        choices = [_pool_text(answers, i, f"answer_options[{pos}]") for pos, i in enumerate(raw_options)]
        target, label_index = "", -1
        if split != "test" or "answer" in rnd:
            target = _pool_text(answers, require(rnd, "answer", int), "answer")
            label_index = require(rnd, "gt_index", int)
            if not 0 <= label_index < len(choices):
                raise RecordError(f"gt_index {label_index} is outside the {len(choices)} answer options")
            if raw_options[label_index] != rnd["answer"]:
                raise RecordError(f"gt_index {label_index} does not point at the answer")
        return Example(
            key=key,
            source=f"{relpath}#{key}",
            image=image,
            slots={"caption": caption, "history": " ".join(history), "question": question},
            target=target,
            answers=[target] if target else [],
            choices=choices,
            label_index=label_index,
        )

    # -- images -----------------------------------------------------------------------
    def _image(self, split: str, image_id: int) -> str:
        if split != "train":
            name = f"VisualDialog_{split}2018"
            return self.media_uri(f"{name}/{name}_{image_id:012d}.jpg")
        subset = "val2014" if image_id in self._val2014_ids() else "train2014"
        return self.media_uri(f"{subset}/COCO_{subset}_{image_id:012d}.jpg")

    def _val2014_ids(self) -> set[int]:
        """Image ids present in the COCO val2014 folder (train dialogs use both COCO folders).

        Listed once per adapter; an absent folder means every train image is in train2014.
        """
        if self._coco_val_ids is None:
            fs, root = fsspec.core.url_to_fs(self.image_root, **self.storage_options)
            folder = posixpath.join(root, "val2014")
            ids: set[int] = set()
            if fs.isdir(folder):
                for path in fs.ls(folder, detail=False):
                    stem = posixpath.basename(path).rsplit(".", 1)[0]
                    if stem.startswith("COCO_val2014_") and stem[len("COCO_val2014_"):].isdigit():
                        ids.add(int(stem[len("COCO_val2014_"):]))
            self._coco_val_ids = ids
        return self._coco_val_ids
