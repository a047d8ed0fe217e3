"""Sampled rows (the tracker's default) and the batch-group standard error, against NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from satadvisor.saturation import SaturationTracker, auto_rows, sample_size
from satadvisor.saturation import functional as F


def _np_fractional(eigenvalues: np.ndarray, threshold: float = 0.99) -> float:
    """The interpolated intrinsic dimension, written out independently."""
    lam = np.clip(np.sort(eigenvalues)[::-1], 0, None)
    if lam.sum() <= 0:
        return 0.0
    share = np.concatenate([[0.0], np.cumsum(lam) / lam.sum()])
    k = int(np.argmax(share[1:] >= threshold)) + 1
    return (k - 1) + (threshold - share[k - 1]) / (share[k] - share[k - 1])


def _np_fractional_saturation(rows: np.ndarray) -> float:
    cov = np.cov(rows, rowvar=False, bias=True)
    return _np_fractional(np.linalg.eigvalsh(cov)) / rows.shape[1]


def test_fractional_dimension_against_numpy_and_its_ceiling_is_k() -> None:
    g = torch.Generator().manual_seed(0)
    spectra = torch.rand(50, 12, generator=g, dtype=torch.float64) ** 6
    spectra[0] = 0.0  # no variance at all
    spectra[1] = torch.tensor([1.0] + [1e-9] * 11, dtype=torch.float64)  # one direction: k = 1
    got = F.fractional_dimension(spectra)
    k = F.intrinsic_dimension(spectra)
    for i in range(len(spectra)):
        assert float(got[i]) == pytest.approx(_np_fractional(spectra[i].numpy()), abs=1e-12)
    assert float(got[0]) == 0.0 and int(k[0]) == 0
    assert 0.0 < float(got[1]) <= 1.0
    assert torch.equal(torch.ceil(got[1:]).long(), k[1:])


def test_sampled_map_moments_equal_numpy_on_the_drawn_rows() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randn(5, 7, 6, 9, generator=g) * 0.3 + torch.linspace(-50, 50, 7).view(1, 7, 1, 1)
    state = F.to_state(F.sampled_map_moments(y, 11, generator=torch.Generator().manual_seed(3)))
    # the draw, repeated: 11 positions per example, uniform with replacement
    index = torch.randint(54, (5, 1, 11), generator=torch.Generator().manual_seed(3))
    maps = y.flatten(2).numpy()
    rows = np.stack([maps[b, :, p] for b in range(5) for p in index[b, 0].tolist()])
    rows = rows.astype(np.float64)
    assert int(state.n) == 55
    np.testing.assert_allclose(state.mean.numpy(), rows.mean(0), rtol=0, atol=1e-5)
    ref = np.cov(rows, rowvar=False, bias=True) * len(rows)
    np.testing.assert_allclose(state.m2.numpy(), ref, rtol=0, atol=1e-4)


class _Spatial(nn.Module):
    """A conv map whose statistics depend on the position: a centre brighter and richer than
    the border, so a sample that favoured some positions would show."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 24, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _spatial_batches(count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-1, 1, 40)
    weight = torch.exp(-(ramp.view(-1, 1) ** 2 + ramp.view(1, -1) ** 2) * 2)  # centre-heavy
    mix = torch.randn(6, 6, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.3, 0.1, 0.05])
    out = []
    for _ in range(count):
        z = torch.randn(64, 40, 40, 6, generator=g) @ mix
        out.append(z.permute(0, 3, 1, 2) * (0.2 + weight) + 2.0 * weight)
    return out


def test_auto_rows_sample_and_stay_close_to_every_position() -> None:
    torch.manual_seed(2)
    net = _Spatial()
    batches = _spatial_batches(24, seed=4)
    assert 2 * auto_rows(24) < 64 * 40 * 40  # the default samples this layer
    with (
        SaturationTracker(net, seed=5) as auto,
        SaturationTracker(net, rows="all") as every,
        torch.no_grad(),
    ):
        for x in batches:
            net(x)
    a, e = auto.compute()[0], every.compute()[0]
    assert e.samples == 24 * 64 * 1600
    assert a.samples == 24 * 64 * math.ceil(auto_rows(24) / 64)  # positions per example
    assert abs(a.intrinsic_dimension - e.intrinsic_dimension) <= 1
    sa, se = auto.state("conv"), every.state("conv")
    assert sa is not None and se is not None
    cov_a, cov_e = F.covariance(sa).numpy(), F.covariance(se).numpy()
    # a sample of ~100k rows: relative error of the covariance of order 1/sqrt(rows)
    assert np.linalg.norm(cov_a - cov_e) / np.linalg.norm(cov_e) < 0.02
    np.testing.assert_allclose(sa.mean.numpy(), se.mean.numpy(), atol=0.02 * np.abs(cov_e).max())


def test_jackknife_standard_error_equals_numpy_delete_a_group() -> None:
    torch.manual_seed(3)
    layer = nn.Linear(8, 10)
    g = torch.Generator().manual_seed(6)
    scale = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02])
    batches = [torch.randn(n, 8, generator=g) * scale for n in (40, 33, 51, 40, 29, 40, 44)]
    with SaturationTracker(layer, rows="all", groups=4) as tracker, torch.no_grad():
        outs = [layer(x).double().numpy() for x in batches]
    got = tracker.compute()[0]
    groups = [np.concatenate(outs[i::4]) for i in range(4)]  # batch b joins group b mod 4
    leave_out = [
        _np_fractional_saturation(np.concatenate(groups[:i] + groups[i + 1 :])) for i in range(4)
    ]
    mean = np.mean(leave_out)
    want = math.sqrt(3 / 4 * sum((v - mean) ** 2 for v in leave_out))
    # float32 scatters against float64 NumPy: the SE is a spread of close values
    assert got.saturation_se == pytest.approx(want, rel=1e-4)
    whole = np.concatenate(outs)
    cov = np.cov(whole, rowvar=False, bias=True)
    assert got.intrinsic_dimension == math.ceil(_np_fractional(np.linalg.eigvalsh(cov)) - 1e-12)


def test_standard_error_is_calibrated_over_independent_runs() -> None:
    # The spread of the continuous saturation over 60 independent runs against the mean of the
    # standard errors each run reported for itself from its own 8 batches.
    torch.manual_seed(4)
    layer = nn.Linear(16, 16)
    scale = torch.logspace(0, -2.5, 16)
    values, errors = [], []
    g = torch.Generator().manual_seed(7)
    for _ in range(60):
        with SaturationTracker(layer, rows="all", groups=4) as tracker, torch.no_grad():
            for _ in range(8):
                layer(torch.randn(24, 16, generator=g) * scale)
        result = tracker.compute()[0]
        spectrum = torch.tensor(result.eigenvalues, dtype=torch.float64)
        values.append(float(F.fractional_dimension(spectrum)) / 16)
        assert result.saturation_se is not None
        errors.append(result.saturation_se)
    spread = float(np.std(values, ddof=1))
    assert spread > 0
    assert 0.6 < float(np.mean(errors)) / spread < 1.7


def test_no_standard_error_without_three_groups() -> None:
    layer = nn.Linear(4, 4)
    x = torch.randn(30, 4)
    with SaturationTracker(layer) as two, torch.no_grad():
        layer(x[:15])
        layer(x[15:])
    with SaturationTracker(layer, groups=1) as one, torch.no_grad():
        for part in x.split(5):
            layer(part)
    assert two.compute()[0].saturation_se is None
    assert one.compute()[0].saturation_se is None


@pytest.mark.parametrize("batch,size", [(4, 8), (32, 32)])
def test_kept_statistics_are_width_squared_whatever_the_batch_and_map(
    batch: int, size: int
) -> None:
    net = nn.Conv2d(3, 20, 3, padding=1)
    with SaturationTracker(net, groups=4) as tracker, torch.no_grad():
        for _ in range(5):
            net(torch.randn(batch, 3, size, size))
    snapshot = tracker.state_dict()["states"]["train"][""]
    assert len(snapshot) == 4
    kept = sum(t.numel() for part in snapshot if part is not None for t in part.values())
    assert kept == 4 * (1 + 20 + 20 * 20)


def test_old_one_state_snapshots_load_into_one_group() -> None:
    layer = nn.Linear(5, 6)
    x = torch.randn(40, 5)
    with SaturationTracker(layer, groups=1) as ref, torch.no_grad():
        layer(x)
    state = ref.state("")
    assert state is not None
    old = {
        "format": "satadvisor.saturation/1",
        "order": [""],
        "types": {"": "Linear"},
        "states": {"train": {"": state._asdict()}, "eval": {}},
    }
    loaded = SaturationTracker(layer)
    loaded.close()
    loaded.load_state_dict(old)
    got = loaded.state("")
    assert got is not None
    torch.testing.assert_close(got.m2, state.m2)
    assert loaded.compute()[0].intrinsic_dimension == ref.compute()[0].intrinsic_dimension


@pytest.mark.parametrize(
    "target,rows,examples,want",
    [
        (None, 10_000, None, None),  # rows="all"
        (100, 90, None, None),  # under the cap
        (100, 150, None, None),  # under twice the cap: read in full
        (100, 250, None, 100),
        (100, 4 * 64, 4, 25),  # 25 of 64 positions per example
        (100, 4 * 40, 4, None),  # 25 of 40: read in full
        (100, 3 * 80, 3, 34),  # ceil(100 / 3)
    ],
)
def test_sample_size_draws_only_well_below_every_row(
    target: int | None, rows: int, examples: int | None, want: int | None
) -> None:
    assert sample_size(target, rows, examples) == want
