"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

import torch


def pytest_configure() -> None:
    # Under pytest-xdist every worker is its own process: one torch thread each keeps two
    # workers from oversubscribing a 2-core machine (small models are overhead-bound anyway).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
    # Exact float32 matmuls on GPUs too: the numerics tests compare against float64 references.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
