"""Instruction templates: loaded from YAML data, filled from an example's slots.

The templates themselves live in `templates.yaml` next to this module (or in a
user's own file of the same form), keyed by task category; no adapter holds
prompt text. A template set is named "<category>" or "<category>.<variant>",
and a dataset names its set in `DatasetSpec.template_set`.

Which templates a record gets is a pure function of (record_id, seed), so a
prepared dataset is reproducible on any machine and in any worker.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from pathlib import Path

from components.datasets.base import CATEGORIES, Example

# Every placeholder an Example's slots may fill (see base.Example.slots).
PLACEHOLDERS = frozenset({"question", "caption", "answer", "statement", "ocr", "options", "history", "context", "text"})

DEFAULT_PATH = str(Path(__file__).with_name("templates.yaml"))

# Written for a slot whose value is empty, so the template still reads naturally
# ("Dialog history: none") and the model sees the slot was empty on purpose.
EMPTY_SLOT = "none"

_SPACES = re.compile(r" {2,}")


def placeholders(template: str) -> set[str]:
    """The named fields of a str.format template.

    Args:
        template: the template text.
    Returns:
        The set of field names, e.g. {"question", "options"}; a positional field
        ("{}" or "{0}") appears as "" or "0".
    Raises:
        ValueError: the template has unbalanced braces.
    """
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def _check_template(set_name: str, template: object) -> None:
    if not isinstance(template, str):
        raise ValueError(f"template set {set_name!r}: template {template!r} is not a string")
    if not template.strip():
        raise ValueError(f"template set {set_name!r}: empty template")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template set {set_name!r}: template {template!r} is malformed: {exc}") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"template set {set_name!r}: template {template!r} has unknown placeholder {{{field}}}; "
                f"allowed: {', '.join(sorted(PLACEHOLDERS))}"
            )
        if spec or conversion:
            # slots are plain text; a format spec or !r would only surprise
            raise ValueError(
                f"template set {set_name!r}: template {template!r}: placeholder {{{field}}} "
                "must not carry a format spec or conversion"
            )


def _check_list(set_name: str, templates: object) -> list[str]:
    if not isinstance(templates, list) or not templates:
        raise ValueError(f"template set {set_name!r} must be a non-empty list of strings")
    seen: set[str] = set()
    for template in templates:
        _check_template(set_name, template)
        if template in seen:
            raise ValueError(f"template set {set_name!r}: template {template!r} appears twice")
        seen.add(template)
    return list(templates)


def load_templates(path: str | None = None) -> dict[str, list[str]]:
    """Read and validate a templates YAML file.

    Args:
        path: fsspec URI of the file (local path, s3://..., memory://...);
            None = the shipped `templates.yaml`.
    Returns:
        Flat mapping of template-set name ("<category>" or
        "<category>.<variant>") to its templates, in file order.
    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid YAML of the expected form; the message
            names the bad category, set or template (unknown category, empty or
            non-list set, non-string template, placeholder outside PLACEHOLDERS).
    """
    import fsspec
    import yaml

    uri = path or DEFAULT_PATH
    with fsspec.open(uri, "r", encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"templates file {uri} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"templates file {uri} must map task categories to templates")

    sets: dict[str, list[str]] = {}
    for category, value in data.items():
        if category not in CATEGORIES:
            raise ValueError(
                f"templates file {uri}: unknown category {category!r}; known: {', '.join(CATEGORIES)}"
            )
        if isinstance(value, dict):
            if not value:
                raise ValueError(f"templates file {uri}: category {category!r} has no variants")
            for variant, templates in value.items():
                if not isinstance(variant, str) or not variant or "." in variant:
                    raise ValueError(f"templates file {uri}: category {category!r} has a bad variant name {variant!r}")
                name = f"{category}.{variant}"
                sets[name] = _check_list(name, templates)
        else:
            sets[category] = _check_list(category, value)
    return sets


def render(template: str, slots: dict[str, str]) -> str:
    """Fill a template from an example's slots.

    Args:
        template: the template text.
        slots: placeholder name -> value; extra slots are ignored.
    Returns:
        The instruction; an empty (or whitespace-only) slot is written as
        "none", and runs of spaces are collapsed to one.
    Raises:
        KeyError: a placeholder of the template has no slot (named in the message).
    """
    values = {}
    for name in placeholders(template):
        if name not in slots:
            raise KeyError(f"template needs slot {name!r}, which the example does not provide: {template!r}")
        value = "" if slots[name] is None else str(slots[name])
        values[name] = value if value.strip() else EMPTY_SLOT
    return _SPACES.sub(" ", template.format(**values)).strip()


def choose(templates: list[str], record_id: str, seed: int, k: int) -> list[int]:
    """Pick k distinct template indices for one record, deterministically.

    Uses sha256 of f"{seed}:{record_id}" (never Python's salted hash()), so the
    choice is the same in every process and on every machine.

    Args:
        templates: the set's templates.
        record_id: the record's stable id (e.g. "vqav2/train/123").
        seed: the template seed of the config.
        k: how many templates; clamped to len(templates).
    Returns:
        min(k, len(templates)) distinct indices, in the order drawn.
    Raises:
        ValueError: templates is empty or k < 1.
    """
    if not templates:
        raise ValueError("cannot choose from an empty template list")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    digest = hashlib.sha256(f"{seed}:{record_id}".encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return rng.sample(range(len(templates)), min(k, len(templates)))


class TemplateBank:
    """The loaded template sets, turning examples into instructions."""

    def __init__(self, path: str | None = None) -> None:
        """Args:
        path: fsspec URI of a templates YAML; None = the shipped templates.
        """
        self.sets = load_templates(path)

    def instructions(
        self, example: Example, template_set: str | None, record_id: str, seed: int, k: int
    ) -> list[tuple[str, str]]:
        """The instructions of one record, one per chosen template.

        Args:
            example: the record; its slots fill the templates.
            template_set: the dataset's set name, or None for template-free data
                (the example carries its own instruction, as LLaVA does).
            record_id: the record's stable id, which seeds the choice.
            seed: the template seed of the config.
            k: templates per record (clamped to the size of the set).
        Returns:
            (template_id, instruction) pairs; template_id is "<set>/<index>",
            or "none" for template-free data (always one pair).
        Raises:
            KeyError: unknown template set, or a placeholder without a slot.
            ValueError: template_set is None and the example has no instruction.
        """
        if template_set is None:
            if not example.instruction or not example.instruction.strip():
                raise ValueError(f"record {record_id!r} has no template set and no instruction of its own")
            return [("none", example.instruction)]
        if template_set not in self.sets:
            raise KeyError(f"unknown template set {template_set!r}; known: {', '.join(sorted(self.sets))}")
        templates = self.sets[template_set]
        return [
            (f"{template_set}/{index}", render(templates[index], example.slots))
            for index in choose(templates, record_id, seed, k)
        ]
