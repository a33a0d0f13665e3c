"""ScienceQA (lupantech/ScienceQA release, `data/scienceqa/`).

Layout under the source root:
    problems.json                    {pid: problem} for every split (pids are numeric strings)
    pid_splits.json                  {"train": [pid, ...], "val": [...], "test": [...],
                                      "trainval", "minival", "minitest": [...]}
    images/{split}/{pid}/image.png   the problem's image, when it has one

A problem has question (may contain newlines), choices (2-5 strings), answer (int index into
choices), hint (the textual context, may be ""), image ("image.png" or null), task, grade,
subject, topic, category, skill, lecture, solution (may be "") and split. The image path is
images/<problem's split>/<pid>/<image>.

Provides `scienceqa` (held out, knowledge-grounded QA), scored by ranking the choices. The
paper evaluates the IMAGE subset, so a problem whose `image` is null (a text-only problem,
about half the release) is not part of the dataset: it is skipped, not rejected. A problem with
no `image` key at all is malformed and is rejected.
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

PROBLEMS = "problems.json"
PID_SPLITS = "pid_splits.json"
# our split names are the release's (train / val / test)
SPLITS = ("train", "val", "test")


class ScienceQAAdapter(Adapter):
    source = "scienceqa"
    datasets = (
        DatasetSpec(
            "scienceqa",
            "knowledge_qa",
            HELD_OUT,
            "knowledge_qa.science",
            ("test",),
            eval_split="test",
            task="rank_choices",
        ),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        """Yield the image problems listed under `split` in pid_splits.json."""
        self.spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"scienceqa has no split {split!r}; known: {list(SPLITS)}")
        pids = self.load_json_field(PID_SPLITS, split, list)
        problems = self.load_json(PROBLEMS)
        if not isinstance(problems, dict):
            raise SourceError(f"scienceqa: {self.uri(PROBLEMS)} must hold an object keyed by pid")
        seen: set[str] = set()
        for pid in pids:
            key = str(pid)
            source = f"{PROBLEMS}#{key}"
            if key in seen:
                yield Reject(key, source, f"pid {key} is listed twice under {split!r}")
                continue
            seen.add(key)
            problem = problems.get(key)
            # text-only problems are outside the image subset the paper evaluates
            if isinstance(problem, dict) and "image" in problem and problem["image"] is None:
                continue
            yield guard(key, source, lambda key=key, problem=problem: self._example(key, problem, split))

    def _example(self, pid: str, problem: dict | None, split: str) -> Example:
        if problem is None:
            raise RecordError(f"pid {pid} is listed in {PID_SPLITS} but absent from {PROBLEMS}")
        image = require(problem, "image", str, allow_empty=False).strip()
        question = require(problem, "question", str, allow_empty=False).strip()
        choices = text_list(require(problem, "choices", list), "choices")
        if len(choices) < 2 or any(not c for c in choices):
            raise RecordError(f"need at least two non-empty choices, got {choices!r}")
        answer = require(problem, "answer", int)
        if not 0 <= answer < len(choices):
            raise RecordError(f"answer index {answer} is outside the {len(choices)} choices")
        hint = problem.get("hint")
        if hint is None:
            hint = ""
        if not isinstance(hint, str):
            raise RecordError(f"field 'hint' is {type(hint).__name__}, expected str")
        recorded = problem.get("split", split)
        if recorded != split:
            raise RecordError(f"problem says split {recorded!r} but {PID_SPLITS} lists it under {split!r}")
        return Example(
            key=pid,
            source=f"{PROBLEMS}#{pid}",
            image=self.media_uri(f"images/{split}/{pid}/{image}"),
            slots={"context": hint.strip(), "question": question, "options": format_options(choices)},
            target=choices[answer],
            answers=[choices[answer]],
            choices=choices,
            label_index=answer,
        )
