"""IconQA (lupantech/IconQA release, `iconqa_data.zip`).

Layout under the source root:
    iconqa_data/problems.json      {pid: problem} for all three sub-tasks and every split
    iconqa_data/pid_splits.json    {"<sub-task>_<split>": [pid, ...]}, sub-task in choose_txt /
                                   choose_img / fill_in_blank, split in train / val / test /
                                   trainval / minitrain / minival / minitest
    iconqa_data/iconqa/{split}/{ques_type}/{pid}/image.png   the problem's image
    iconqa_data/iconqa/{split}/{ques_type}/{pid}/data.json   the same problem object again
    iconqa_data/iconqa/{split}/choose_img/{pid}/choice_<i>.png   choice images of choose_img

A problem has question, choices, answer, ques_type, grade, label (a skill code) and, in
problems.json, split. pids are numeric strings. `answer` is an int index into `choices` for
choose_txt and choose_img, but the answer text itself (a str) for fill_in_blank, and choose_img
choices are image file names, not text. Questions may open with a counting instruction
("Count by twos.") that belongs to the question, so it is kept.

Provides `iconqa` (held out, visual reasoning). Like the paper, whose evaluation (through LAVIS)
used only the multiple-choice text sub-task, the dataset is choose_txt and is scored by ranking
its text choices. choose_img (choices are pictures: a one-image example cannot show them) and
fill_in_blank (open-ended, no choices to rank) are simply not part of the dataset: their pids
are never listed under choose_txt_<split>, so they are not read and are not rejects.
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
    SourceError,
    format_options,
    guard,
    require,
    text_list,
)

DATA = "iconqa_data"
PROBLEMS = f"{DATA}/problems.json"
PID_SPLITS = f"{DATA}/pid_splits.json"
# the sub-task this dataset is made of (see the module docstring)
SUB_TASK = "choose_txt"
# our split names are the release's (train / val / test)
SPLITS = ("train", "val", "test")


class IconQAAdapter(Adapter):
    source = "iconqa"
    datasets = (
        DatasetSpec(
            "iconqa",
            "visual_reasoning",
            HELD_OUT,
            "visual_reasoning.multiple_choice",
            ("test",),
            eval_split="test",
            task="rank_choices",
        ),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        """Yield the choose_txt problems listed under `choose_txt_<split>` in pid_splits.json."""
        self.spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"iconqa has no split {split!r}; known: {list(SPLITS)}")
        split_key = f"{SUB_TASK}_{split}"
        pids = self.load_json_field(PID_SPLITS, split_key, list)
        problems = self.load_json(PROBLEMS)
        if not isinstance(problems, dict):
            raise SourceError(f"iconqa: {self.uri(PROBLEMS)} must hold an object keyed by pid")
        seen: set[str] = set()
        for pid in pids:
            key = str(pid)
            if key in seen:
                yield Reject(key, f"{PROBLEMS}#{key}", f"pid {key} is listed twice under {split_key}")
                continue
            seen.add(key)
            yield guard(key, f"{PROBLEMS}#{key}", lambda key=key: self._example(problems, key, split))

    def _example(self, problems: dict, pid: str, split: str) -> Example:
        if pid not in problems:
            raise RecordError(f"pid {pid} is listed in {PID_SPLITS} but absent from {PROBLEMS}")
        problem = problems[pid]
        ques_type = require(problem, "ques_type", str)
        if ques_type != SUB_TASK:
            raise RecordError(f"pid {pid} is listed under {SUB_TASK}_{split} but its ques_type is {ques_type!r}")
        question = require(problem, "question", str, allow_empty=False).strip()
        choices = text_list(require(problem, "choices", list, allow_empty=False), "choices")
        if any(not c for c in choices):
            raise RecordError("a choice is empty")
        answer = require(problem, "answer", int)
        if not 0 <= answer < len(choices):
            raise RecordError(f"answer index {answer} is outside the {len(choices)} choices")
        return Example(
            key=pid,
            source=f"{PROBLEMS}#{pid}",
            image=self.media_uri(f"{DATA}/iconqa/{split}/{SUB_TASK}/{pid}/image.png"),
            slots={"question": question, "options": format_options(choices)},
            target=choices[answer],
            answers=[choices[answer]],
            choices=choices,
            label_index=answer,
        )
