"""Placing workers, replicas and actors on a cluster's nodes (`pipelines.common.unplaceable`)."""

import pytest

from pipelines.common import unplaceable

CPU_BOX = {"CPU": 4.0, "memory": 1e10}
GPU_BOX = {"CPU": 8.0, "GPU": 2.0}


@pytest.mark.parametrize("bundles, nodes, left", [
    ([{"CPU": 1.0, "GPU": 0.0}] * 2, [CPU_BOX], 0),  # the default training job on the 2-core machine's local Ray
    ([{"CPU": 1.0, "GPU": 1.0}] * 2, [CPU_BOX], 2),  # use_gpu on a CPU-only Ray: never placed
    ([{"CPU": 1.0}] * 5, [CPU_BOX], 1),  # one more worker than CPUs
    ([{"CPU": 0.5}] * 8, [CPU_BOX], 0),  # fractions add up
    ([{"CPU": 1.0, "GPU": 1.0}] * 4, [GPU_BOX, GPU_BOX, CPU_BOX], 0),  # spread over the GPU nodes
    ([{"CPU": 1.0, "GPU": 1.0}] * 5, [GPU_BOX, GPU_BOX, CPU_BOX], 1),
    ([{"CPU": 5.0}] * 2, [CPU_BOX, CPU_BOX], 2),  # 8 CPUs in all, but no node holds 5: Ray places a worker on one node
    ([{"CPU": 1.0, "GPU": 0.5}] * 4, [GPU_BOX], 0),  # GPU fractions (serving replicas)
    ([{"CPU": 1.0}], [], 1),
])
def test_bundles_are_placed_on_single_nodes(bundles, nodes, left):
    assert unplaceable(bundles, nodes) == left


def test_large_bundles_are_placed_first():
    """Packed in the order given, the small bundle would take the GPU node's last CPU and the large one fail."""
    nodes = [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 1.0}]
    assert unplaceable([{"CPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}], nodes) == 0
