"""Raw-dataset adapters, one file per raw source, discovered automatically.

`registry()` maps every dataset name of the mixture to the adapter class that
provides it. Adding a source means adding one module here that defines an
`Adapter` subclass with `source` and `datasets` set; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from components.datasets.base import (
    HELD_IN,
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    Reject,
    SourceError,
)

__all__ = [
    "HELD_IN",
    "HELD_OUT",
    "Adapter",
    "DatasetSpec",
    "Example",
    "Reject",
    "SourceError",
    "adapter_classes",
    "registry",
    "spec",
]

# Modules of this package that are not adapters.
_NOT_ADAPTERS = {"base", "custom"}


@lru_cache(maxsize=1)
def adapter_classes() -> tuple[type[Adapter], ...]:
    """Every Adapter subclass defined in this package (imported on first call, not at import)."""
    found: list[type[Adapter]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_ADAPTERS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Adapter) and obj is not Adapter and obj.source:
                if obj.__module__ == module.__name__:
                    found.append(obj)
    return tuple(found)


@lru_cache(maxsize=1)
def registry() -> dict[str, type[Adapter]]:
    """Dataset name -> adapter class. Raises RuntimeError on a duplicate name or source."""
    by_dataset: dict[str, type[Adapter]] = {}
    sources: dict[str, type[Adapter]] = {}
    for cls in adapter_classes():
        if cls.source in sources:
            raise RuntimeError(f"source {cls.source!r} claimed by {sources[cls.source].__name__} and {cls.__name__}")
        sources[cls.source] = cls
        for spec_ in cls.datasets:
            if spec_.name in by_dataset:
                raise RuntimeError(
                    f"dataset {spec_.name!r} declared by {by_dataset[spec_.name].__name__} and {cls.__name__}"
                )
            by_dataset[spec_.name] = cls
    return by_dataset


def spec(dataset: str) -> DatasetSpec:
    """The DatasetSpec of a built-in dataset; KeyError naming the known ones otherwise."""
    reg = registry()
    if dataset not in reg:
        raise KeyError(f"unknown dataset {dataset!r}; known: {sorted(reg)}")
    return reg[dataset].spec(dataset)
