"""LLaVA-Instruct-150K (liuhaotian/LLaVA-Instruct-150K): GPT-written instructions on COCO images.

Layout under the source root (as released on the Hugging Face hub):
    detail_23k.json              detailed descriptions (one human/gpt pair per record)
    complex_reasoning_77k.json   reasoning questions (one pair per record)
    conversation_58k.json        multi-turn conversations
    llava_instruct_150k.json     the three above in one file (not read: the subsets are read apart)
        each a JSON array of {"id": str, "image": str, "conversations": [{"from": "human"|"gpt", "value": str}]}
        `image` is a bare COCO train2017 file name ("000000033471.jpg"); ids repeat across
        files and records; the first human turn carries an "<image>" token as a prefix
        ("<image>\\n...") or a suffix ("...\\n<image>").
    train2017/<image>            the COCO train2017 images

Provides `llava_detail`, `llava_reasoning` and `llava_conversation`, held in, used without
templates: each human/gpt pair becomes one Example whose `instruction` is the human turn
(after earlier turns of the conversation given as context) and whose target is the reply.
"""

from __future__ import annotations

from typing import Callable, Iterator

from components.datasets.base import (
    HELD_IN,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    guard,
    require,
)

IMAGE_TOKEN = "<image>"
# dataset name -> the release file it is read from
SUBSET_FILES = {
    "llava_detail": "detail_23k.json",
    "llava_reasoning": "complex_reasoning_77k.json",
    "llava_conversation": "conversation_58k.json",
}
COMBINED_FILE = "llava_instruct_150k.json"


def dialog_context(pairs: list[tuple[str, str]]) -> str:
    """Earlier turns as context: "Q: ... A: ..." per pair, joined by a space ("" when none)."""
    return " ".join(f"Q: {question} A: {answer}" for question, answer in pairs)


def conversation_examples(key: str, source: str, image: str | None, turns: list) -> list[Example]:
    """Split one LLaVA conversation into one Example per human/gpt turn pair.

    The "<image>" token is removed from the human turns (it marks where LLaVA puts the
    image; here the image goes in separately). For every pair after the first, the
    instruction starts with the earlier pairs as context (see `dialog_context`), then a
    newline, then the human turn.

    Args:
        key: the record's key; the Examples get "<key>_t<n>" (n = 0-based pair number).
        source: the record's lineage ("<file>#<key>"), kept on every Example.
        image: URI of the record's image (None for a text-only record).
        turns: the record's `conversations` list.
    Returns:
        the Examples, in conversation order.
    Raises:
        RecordError: turns is not a non-empty list of {from, value} that alternates
            human/gpt starting with human, a turn is empty, or the last human turn has no reply.
    """
    if not isinstance(turns, list) or not turns:
        raise RecordError("field 'conversations' must be a non-empty list of turns")
    if len(turns) % 2:
        raise RecordError(f"conversation has {len(turns)} turns; the last human turn has no reply")
    texts: list[str] = []
    for n, turn in enumerate(turns):
        speaker = require(turn, "from", str)
        expected = "human" if n % 2 == 0 else "gpt"
        if speaker != expected:
            raise RecordError(f"turn {n} is from {speaker!r}, expected {expected!r}")
        value = require(turn, "value", str)
        if speaker == "human":
            value = value.replace(IMAGE_TOKEN, "")
        value = value.strip()
        if not value:
            raise RecordError(f"turn {n} ({speaker}) is empty")
        texts.append(value)

    examples: list[Example] = []
    history: list[tuple[str, str]] = []
    for n in range(0, len(texts), 2):
        question, reply = texts[n], texts[n + 1]
        context = dialog_context(history)
        examples.append(
            Example(
                key=f"{key}_t{n // 2}",
                source=source,
                image=image,
                target=reply,
                answers=[reply],
                instruction=f"{context}\n{question}" if context else question,
            )
        )
        history.append((question, reply))
    return examples


def llava_records(records: list, relpath: str, image_uri: Callable[[str], str]) -> Iterator[Example | Reject]:
    """Examples (or Rejects) of a LLaVA-style JSON array.

    A record's key is "<index>_<id>" (its position in the file and its id), since LLaVA
    ids repeat; its lineage is "<relpath>#<key>". A bad record yields one Reject.

    Args:
        records: the parsed JSON array.
        relpath: the file the records come from, for lineage.
        image_uri: the record's `image` value -> image URI.
    """
    for index, record in enumerate(records):
        rid = record.get("id") if isinstance(record, dict) else None
        key = f"{index}_{rid}" if isinstance(rid, (str, int)) and not isinstance(rid, bool) else str(index)
        source = f"{relpath}#{key}"

        def build(record=record, key=key, source=source) -> list[Example]:
            image = require(record, "image", str, allow_empty=False).strip()
            return conversation_examples(key, source, image_uri(image), require(record, "conversations", list))

        # guard() returns the list of Examples, or one Reject for the whole record
        result = guard(key, source, build)
        if isinstance(result, Reject):
            yield result
        else:
            yield from result


class LLaVAInstructAdapter(Adapter):
    source = "llava_instruct"
    datasets = tuple(
        DatasetSpec(name, "llava_instruct", HELD_IN, None, ("train",), task="generate") for name in SUBSET_FILES
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split != "train":
            raise ValueError(f"{dataset} has only a train split, not {split!r}")
        relpath = SUBSET_FILES[dataset]
        records = self.load_json(relpath)
        if not isinstance(records, list):
            raise SourceError(f"llava_instruct: {self.uri(relpath)} is not a JSON array")
        yield from llava_records(records, relpath, lambda image: self.media_uri(f"train2017/{image}"))
