"""No hidden global state: importing satadvisor, analysing and tracking leave the process as
they found it (loggers, warning filters, torch settings, RNG streams, sys.path, environment)."""

from __future__ import annotations

import ast
import json
import logging
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import satadvisor
from satadvisor import analyze
from satadvisor.advisor import Analysis
from satadvisor.config import TrainConfig
from satadvisor.saturation import SaturationTracker
from satadvisor.saturation import functional as F
from satadvisor.search.worker import quiet_optuna


def _dependencies() -> list[str]:
    """The modules outside satadvisor that satadvisor's modules import when they load (their
    module-level import statements). The probe imports these first, so what a third-party
    import does to the process (lightning adds warning filters, torch's inductor sets
    environment variables) is not blamed on satadvisor."""
    names: set[str] = set()
    for path in Path(satadvisor.__file__).parent.rglob("*.py"):
        for node in _module_level(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] != "satadvisor")


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run on import: the body, and inside if/try blocks of it."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            handlers = [stmt for h in node.handlers for stmt in h.body]
            yield from _module_level(node.body + handlers + node.orelse + node.finalbody)


PROBE = textwrap.dedent(
    """
    import importlib, json, logging, os, pkgutil, random, signal, sys, warnings

    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional dependency that is not installed
            pass

    import numpy, optuna, torch

    def logger(name):
        log = logging.getLogger(name)
        return [log.level, [repr(h) for h in log.handlers], log.propagate, log.disabled]

    def snapshot():
        matmul = torch.backends.cuda.matmul
        return {
            "optuna verbosity": optuna.logging.get_verbosity(),
            "loggers": {n: logger(n) for n in ("", "optuna", "torch", "py.warnings")},
            "logging.disable": logging.root.manager.disable,
            "warnings.filters": [repr(f) for f in warnings.filters],
            "default dtype": str(torch.get_default_dtype()),
            "threads": torch.get_num_threads(),
            "cuda matmul allow_tf32": matmul.allow_tf32,
            "cudnn allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32 matmul precision": torch.get_float32_matmul_precision(),
            "cudnn benchmark": torch.backends.cudnn.benchmark,
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
            "grad enabled": torch.is_grad_enabled(),
            "torch rng": torch.random.get_rng_state().tolist(),
            "numpy rng": repr(numpy.random.get_state()),
            "python rng": repr(random.getstate()),
            "signal handlers": [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
            "sys.excepthook": repr(sys.excepthook),
            "sys.path": list(sys.path),
            "os.environ": dict(os.environ),
        }

    before = snapshot()
    import satadvisor
    imported = []
    for info in pkgutil.walk_packages(satadvisor.__path__, "satadvisor."):
        if info.name != "satadvisor.__main__":
            importlib.import_module(info.name)
            imported.append(info.name)
    after = snapshot()
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    print(json.dumps({"imported": imported, "changed": changed}, default=str))
    """
)


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_importing_every_satadvisor_module_changes_no_process_state() -> None:
    report = json.loads(_python(PROBE, json.dumps(_dependencies())))
    # The walk reached the deep modules too (not only the package's __init__).
    assert {"satadvisor.cli", "satadvisor.search.study", "satadvisor.search.worker"} <= set(
        report["imported"]
    )
    assert report["changed"] == {}


# ------------------------------------------------------------------------------- RNG streams


def _rng_states() -> tuple[torch.Tensor, str, str]:
    return torch.random.get_rng_state(), repr(np.random.get_state()), repr(random.getstate())


def _same_states(a: tuple[torch.Tensor, str, str], b: tuple[torch.Tensor, str, str]) -> bool:
    return torch.equal(a[0], b[0]) and a[1:] == b[1:]


ONE_EPOCH = TrainConfig(epochs=1, batch_size=32, device="cpu", optimizer="adam", lr=0.01)
TINY_PLAIN = {"depth": 2, "width": 4, "downsamplings": 1}


def _analyze(train: bool = True, seed: int = 0) -> Analysis:
    return analyze(
        "plain",
        knobs=TINY_PLAIN,
        dataset="digits",
        config=ONE_EPOCH.replace(seed=seed),
        train=train,
        subset=161,
    )


@pytest.mark.parametrize("train", [True, False], ids=["trained", "no-train"])
def test_analyze_leaves_the_global_rng_states_as_they_were(train: bool) -> None:
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    torch.rand(3)  # a stream already in use, not a freshly seeded one
    before = _rng_states()
    _analyze(train=train, seed=1)
    assert _same_states(_rng_states(), before)


def test_analyze_is_reproducible_and_a_users_torch_stream_continues_undisturbed() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)  # what the user's stream yields with nothing in between

    torch.manual_seed(123)
    first = _analyze(seed=3)
    assert torch.equal(torch.rand(4), expected)
    second = _analyze(seed=3)
    other = _analyze(seed=4)

    def measured(a: Analysis) -> tuple[list[float], list[list[float]]]:
        assert a.run is not None and a.run.epochs
        return [e.train_loss for e in a.run.epochs], [s.eigenvalues for s in a.profile]

    assert measured(first) == measured(second)  # bitwise
    assert measured(first) != measured(other)


# ------------------------------------------------------------------------- precision settings


# torch's per-backend precision settings (torch >= 2.9), attributes its type stubs lack.
BACKENDS: Any = torch.backends
MKLDNN_MATMUL: Any = getattr(torch.backends.mkldnn, "matmul", None)


def _precision_settings() -> dict[str, object]:
    return {
        "cuda matmul": BACKENDS.cuda.matmul.fp32_precision,
        "cudnn": BACKENDS.cudnn.fp32_precision,
        "mkldnn matmul": MKLDNN_MATMUL.fp32_precision,
        "generic": BACKENDS.fp32_precision,
    }


@pytest.fixture
def reduced_cpu_matmul() -> Iterator[None]:
    """The process lets CPU float32 matmuls run in bfloat16 (oneDNN), as a user may set."""
    if not hasattr(MKLDNN_MATMUL, "fp32_precision"):
        pytest.skip("needs torch >= 2.9 (per-backend float32 precision)")
    saved = MKLDNN_MATMUL.fp32_precision
    MKLDNN_MATMUL.fp32_precision = "bf16"
    yield
    MKLDNN_MATMUL.fp32_precision = saved


def _track(model: nn.Module, batches: list[torch.Tensor]) -> SaturationTracker:
    with SaturationTracker(model, rows="all") as tracker, torch.no_grad():
        for x in batches:
            model(x)
    return tracker


def test_tracking_batches_changes_no_precision_setting() -> None:
    if not hasattr(BACKENDS.cuda.matmul, "fp32_precision"):
        pytest.skip("needs torch >= 2.9 (per-backend float32 precision)")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5))
    before = _precision_settings()
    seen: list[dict[str, object]] = []
    model[0].register_forward_hook(lambda *_: seen.append(_precision_settings()))
    _track(model, [torch.randn(4, 3, 8, 8) for _ in range(3)])
    assert _precision_settings() == before
    assert seen == [before] * 3  # not even flipped while a batch is tracked


def test_statistics_stay_exact_when_the_process_allows_bfloat16_matmuls(
    reduced_cpu_matmul: None,
) -> None:
    # A large offset on few features: a bfloat16 scatter (8-bit mantissa) would be off by
    # about 1e-2 of the offset squared; float64 statistics match the float64 reference.
    torch.manual_seed(1)
    lin = nn.Linear(6, 6)
    with torch.no_grad():
        lin.bias.fill_(50.0)
    xs = [torch.randn(200, 6) for _ in range(3)]
    assert F.compute_dtype(xs[0]) == torch.float64  # documented: exact whatever the setting
    tracker = _track(lin, xs)
    assert MKLDNN_MATMUL.fp32_precision == "bf16"  # read, never reset
    state = tracker.state("", phase="train")
    assert state is not None
    with torch.no_grad():
        ref = torch.cat([lin(x) for x in xs]).double()
    centered = ref - ref.mean(0)
    torch.testing.assert_close(state.mean.double(), ref.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state.m2.double(), centered.T @ centered, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ Optuna


def test_quieting_optuna_is_scoped_to_our_block_and_restored_on_error() -> None:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        with pytest.raises(RuntimeError), quiet_optuna():
            assert optuna.logging.get_verbosity() == optuna.logging.ERROR
            raise RuntimeError("a failing search")
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
        assert logging.getLogger("optuna").level == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(level)
