"""sync() across two torch.distributed (gloo) processes equals one process seeing all the data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from satadvisor.saturation import SaturationTracker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable"),
]

WORLD = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 6)
    )


def _data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, 5, 5, generator=g) + 2 for n in (3, 7, 4, 6, 5, 1)]


# rank -> (train batches, eval batches); rank 1 never runs an eval pass and must still take part
SHARDS = {0: ([0, 2], [4, 5]), 1: ([1, 3], [])}


def _run(model: nn.Module, train: list[torch.Tensor], evals: list[torch.Tensor]) -> None:
    model.train()
    for x in train:
        model(x)
    model.eval()
    with torch.no_grad():
        for x in evals:
            model(x)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model, data = _model(), _data()
        train, evals = SHARDS[rank]
        with SaturationTracker(model) as tracker:
            _run(model, [data[i] for i in train], [data[i] for i in evals])
        tracker.sync()
        results = {p: [r.to_dict() for r in tracker.compute(p)] for p in ("train", "eval")}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_single_process_result(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)

    model, data = _model(), _data()
    with SaturationTracker(model) as single:
        _run(model, data[:4], data[4:])
    want = {p: single.compute(p) for p in ("train", "eval")}
    assert want["train"][0].samples == 20 * 25 and want["eval"][0].samples == 6 * 25

    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for phase in ("train", "eval"):
            assert [r["name"] for r in got[phase]] == [r.name for r in want[phase]] == ["0", "3"]
            for g, w in zip(got[phase], want[phase], strict=True):
                assert g["samples"] == w.samples
                assert g["intrinsic_dimension"] == w.intrinsic_dimension
                np.testing.assert_allclose(g["eigenvalues"], w.eigenvalues, rtol=1e-9, atol=1e-9)
