"""Test-session settings shared by every test file."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


def pytest_configure() -> None:
    # Under pytest-xdist every worker is its own process: one torch thread each keeps two
    # workers from oversubscribing a 2-core machine (small models are overhead-bound anyway).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
    # Exact float32 matmuls on GPUs too: the numerics tests compare against float64 references.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny ops: one intra-op thread is several times faster than two on a shared CPU
    (outside xdist too). Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
