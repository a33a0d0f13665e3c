"""Every sample-world source reads back through its adapter: clean without faults, rejects with them."""

import pytest

from components.datasets import Example, Reject, registry
from components.sample_world.world import generate, writers

SOURCES = sorted(writers())


def _adapters_for(source):
    return {cls for cls in registry().values() if cls.source == source}


@pytest.mark.parametrize("source", SOURCES)
def test_clean_world_reads_without_rejects(tmp_path, source):
    generate(str(tmp_path), per_dataset=20, seed=3, faults=False, sources=[source], log=lambda _: None)
    (cls,) = _adapters_for(source)
    adapter = cls(str(tmp_path / source))
    for spec in cls.datasets:
        for split in spec.splits:
            items = list(adapter.read(spec.name, split))
            rejects = [i for i in items if isinstance(i, Reject)]
            assert not rejects, f"{spec.name}/{split}: {rejects[:3]}"
            examples = [i for i in items if isinstance(i, Example)]
            assert len(examples) >= 5, f"{spec.name}/{split} has only {len(examples)} examples"
            for e in examples:
                assert e.target or e.instruction or spec.role == "held_out" or split == "test"
                assert e.image or e.video, f"{spec.name}/{split}/{e.key} has no media"


@pytest.mark.parametrize("source", SOURCES)
def test_faults_become_rejects(tmp_path, source):
    generate(str(tmp_path), per_dataset=20, seed=3, faults=True, sources=[source], log=lambda _: None)
    (cls,) = _adapters_for(source)
    adapter = cls(str(tmp_path / source))
    rejects = [
        i for spec in cls.datasets for split in spec.splits for i in adapter.read(spec.name, split) if isinstance(i, Reject)
    ]
    # an annotation-level fault in every source (image-level faults are caught later, by prepare)
    assert rejects, f"{source}: no planted fault was rejected"
    assert all(r.reason for r in rejects)


@pytest.mark.parametrize("source", SOURCES)
def test_world_is_deterministic_for_a_seed(tmp_path, source):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        generate(str(out), per_dataset=10, seed=5, sources=[source], log=lambda _: None)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix in (".json", ".jsonl", ".csv", ".txt"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
