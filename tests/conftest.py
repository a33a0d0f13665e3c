import json
import os
import shutil
import tempfile
import uuid

import fsspec
import pytest


def pytest_configure(config):
    """A fresh tiny-model cache for the session (components.tiny_cache): tests never read or fill
    the user's ~/.cache, and tests (and the Ray workers and subprocesses they start) share it."""
    config._iblip_cache = tempfile.mkdtemp(prefix="iblip-test-cache-")
    os.environ["IBLIP_CACHE_DIR"] = config._iblip_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_iblip_cache", ""), ignore_errors=True)


class RawTree:
    """Builds a small raw source tree on fsspec's in-memory filesystem (a real fsspec URI)."""

    def __init__(self) -> None:
        self.root = f"memory://raw-{uuid.uuid4().hex}"
        self.fs = fsspec.filesystem("memory")

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def write_bytes(self, rel: str, data: bytes) -> str:
        with self.fs.open(self.path(rel), "wb") as fh:
            fh.write(data)
        return self.path(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, obj) -> str:
        return self.write_text(rel, json.dumps(obj))


@pytest.fixture
def raw_tree():
    tree = RawTree()
    yield tree
    if tree.fs.exists(tree.root):
        tree.fs.rm(tree.root, recursive=True)
