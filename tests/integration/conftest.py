import pytest


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray cluster shared by the integration tests.

    4 logical CPUs on a 2-core machine: Ray Data's tasks must never wait behind
    CPUs that other work holds (see README, "CPU budgeting").
    """
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
