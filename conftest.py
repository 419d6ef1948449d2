"""Project-wide pytest hooks: GPU tests skip without CUDA, and every test starts from the same seed."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run shared/gpu_check.sh on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_distribution_validation():
    # torch._dynamo switches argument validation of torch.distributions off, process-wide, when it sets itself up
    # (the first torch.compile or custom-op call); a test that compiles must not change what later tests see.
    before = torch.distributions.Distribution._validate_args
    yield
    torch.distributions.Distribution.set_default_validate_args(before)
