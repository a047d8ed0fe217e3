"""Property tests of the saturation statistics (satadvisor.saturation.functional).

Hypothesis draws the shape, the input dtype (float32, float64, bfloat16), the offset and scale,
the rank, constant rows or columns, and how the rows are split into batches; the streamed
(n, mean, M2) and the saturation must match a NumPy float64 reference computed from the
concatenated data (the dtype-rounded values the function actually saw), and stay finite.
Examples are derandomized, so every run checks the same cases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satadvisor.saturation import functional as F

THRESHOLD = 0.99
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Case:
    """One drawn data set: rows (N, F) in ``dtype`` and batch boundaries."""

    x: torch.Tensor
    cuts: tuple[int, ...]
    rank: int
    kind: str

    def batches(self) -> list[torch.Tensor]:
        edges = [0, *self.cuts, self.x.shape[0]]
        return [self.x[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def cases(draw: st.DrawFn, *, max_rows: int = 300, max_width: int = 24) -> Case:
    seed = draw(st.integers(0, 2**31 - 1))
    rows = draw(st.integers(1, max_rows))
    width = draw(st.integers(1, max_width))
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    kind = draw(st.sampled_from(["full", "low-rank", "constant", "constant-columns", "integers"]))
    offset = draw(st.sampled_from([0.0, 1.0, -3.5, 1e3, 1e4]))
    scale = draw(st.sampled_from([1e-2, 1.0, 10.0]))
    rng = np.random.default_rng(seed)
    rank = min(width, rows)
    if kind == "low-rank":
        rank = draw(st.integers(0, min(width, rows)))
        z = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, width))
    elif kind == "constant":
        rank = 0
        z = np.zeros((rows, width))
    elif kind == "integers":  # many exact ties
        z = rng.integers(-3, 4, size=(rows, width)).astype(np.float64)
    else:
        z = rng.standard_normal((rows, width)) * rng.uniform(0.1, 3.0, size=width)
    if kind == "constant-columns":
        dead = rng.random(width) < 0.5
        z[:, dead] = 0.0
        rank = min(int((~dead).sum()), rows)
    data = offset + scale * z + (rng.standard_normal(width) if kind != "constant" else 0.0)
    x = torch.from_numpy(data).to(dtype)
    n_cuts = draw(st.integers(0, min(6, rows)))
    cuts = tuple(sorted(draw(st.lists(st.integers(0, rows), min_size=n_cuts, max_size=n_cuts))))
    return Case(x=x, cuts=cuts, rank=rank, kind=kind)


def _reference(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Float64 mean and M2 of the values the function saw (after dtype rounding)."""
    data = x.to(torch.float64).numpy()
    mean = data.mean(axis=0)
    centered = data - mean
    return mean, centered.T @ centered


def _reference_k(cov: np.ndarray) -> tuple[int, np.ndarray]:
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    total = lam.sum()
    if total <= 0:
        return 0, np.zeros_like(lam)
    share = np.cumsum(lam) / total
    return int(np.argmax(share >= THRESHOLD)) + 1, share


def _stream(batches: list[torch.Tensor], width: int, order: list[int]) -> F.CovarianceState:
    states = [F.batch_state(b) for b in batches]
    total = F.empty_state(width)
    for i in order:
        total = F.merge(total, states[i])
    return total


def _tolerances(x: torch.Tensor) -> tuple[float, float]:
    """(mean, covariance) absolute tolerances for the dtype the function reduced in.

    Float64 input is reduced in float64; everything else in float32, whose error scales with
    the spread of the data around its mean (the rows are centered before the scatter), not
    with the offset. Naive float32 sums of xᵀx would miss these by orders of magnitude at
    offset 1e4.
    """
    data = x.to(torch.float64)
    spread = float((data - data.mean(0)).abs().max()) if data.numel() else 0.0
    size = float(data.abs().max()) if data.numel() else 0.0
    eps = 1e-12 if x.dtype == torch.float64 else 2e-6
    # The float64 reference has round-off of its own, ~1e-16 of the data's size per centered
    # value (its summation order depends on memory alignment): a constant column can come out
    # at 5e-32 instead of 0.
    floor = (1e-15 * size) ** 2 + 1e-300
    return eps * (size + spread) * 4 + 1e-300, eps * 50 * spread**2 + floor


def _check_state(state: F.CovarianceState, x: torch.Tensor) -> None:
    mean_ref, m2_ref = _reference(x)
    n = x.shape[0]
    assert int(state.n) == n
    assert state.mean.dtype == torch.float64 and state.m2.dtype == torch.float64
    assert torch.isfinite(state.mean).all() and torch.isfinite(state.m2).all()
    mean_tol, cov_tol = _tolerances(x)
    np.testing.assert_allclose(state.mean.numpy(), mean_ref, rtol=0, atol=mean_tol)
    np.testing.assert_allclose(F.covariance(state).numpy(), m2_ref / n, rtol=0, atol=cov_tol)


@PROPERTY
@given(case=cases(), data=st.data())
def test_streamed_state_equals_numpy_on_the_concatenated_rows(
    case: Case, data: st.DataObject
) -> None:
    batches = case.batches()
    original = case.x.clone()
    order = data.draw(st.permutations(range(len(batches))))
    state = _stream(batches, case.x.shape[1], list(order))
    assert torch.equal(case.x, original), "input modified in place"
    _check_state(state, case.x)


@PROPERTY
@given(case=cases(max_rows=200, max_width=16))
def test_saturation_equals_numpy_reference(case: Case) -> None:
    state = _stream(case.batches(), case.x.shape[1], list(range(len(case.batches()))))
    eig = F.eigenvalues(F.covariance(state))
    sat = F.saturation_from_eigenvalues(eig, threshold=THRESHOLD)
    k = int(F.intrinsic_dimension(eig, threshold=THRESHOLD))
    assert torch.isfinite(eig).all() and torch.isfinite(sat)
    width = case.x.shape[1]
    assert 0.0 <= float(sat) <= 1.0 and float(sat) == pytest.approx(k / width, abs=1e-15)
    _, m2_ref = _reference(case.x)
    k_ref, share = _reference_k(m2_ref / case.x.shape[0])
    if k != k_ref:
        # only where the reference share passes 0.99 within round-off of the threshold
        lo, hi = sorted((k, k_ref))
        assert lo >= 1, (k, k_ref)
        ambiguous = np.abs(share[lo - 1 : hi] - THRESHOLD) < 1e-4
        assert ambiguous.all(), (k, k_ref, share)
    if k_ref == 0:
        assert k == 0 and float(sat) == 0.0, "zero variance must give saturation 0"
    # independent of the reference: no more directions than the data has
    data = case.x.to(torch.float64)
    true_rank = int(torch.linalg.matrix_rank(data - data.mean(0))) if data.shape[0] > 1 else 0
    assert k <= max(true_rank, 0) or k == k_ref


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 6),
    channels=st.integers(1, 12),
    side=st.integers(1, 6),
    dtype=st.sampled_from(sorted(DTYPES)),
    offset=st.sampled_from([0.0, 5.0, 1e3]),
    constant=st.booleans(),
)
def test_channels_first_state_equals_rows_reference(
    seed: int, batch: int, channels: int, side: int, dtype: str, offset: float, constant: bool
) -> None:
    """A conv output (B, C, H, W) is B·H·W observations of C features."""
    rng = np.random.default_rng(seed)
    values = (
        np.zeros((batch, channels, side, side))
        if constant
        else rng.standard_normal((batch, channels, side, side))
    )
    y = torch.from_numpy(offset + values).to(DTYPES[dtype])
    original = y.clone()
    state = F.channels_first_batch_state(y)
    assert torch.equal(y, original)
    rows = y.movedim(1, -1).reshape(-1, channels)
    _check_state(state, rows)
    if constant:
        eig = F.eigenvalues(F.covariance(state))
        assert float(F.saturation_from_eigenvalues(eig)) == 0.0


@PROPERTY
@given(case=cases(max_rows=120, max_width=12), data=st.data())
def test_merge_is_associative_and_order_free(case: Case, data: st.DataObject) -> None:
    """Two groupings and orders of the same batches give the same float64 state."""
    batches = case.batches()
    states = [F.batch_state(b) for b in batches]
    width = case.x.shape[1]
    left = F.empty_state(width)
    for s in states:
        left = F.merge(left, s)
    order = data.draw(st.permutations(range(len(states))))
    right = F.empty_state(width)
    for i in reversed(order):
        right = F.merge(states[i], right)
    assert int(left.n) == int(right.n) == case.x.shape[0]
    _, cov_tol = _tolerances(case.x)
    scale = max(float(left.mean.abs().max()), 1.0)
    torch.testing.assert_close(left.mean, right.mean, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(
        F.covariance(left), F.covariance(right), rtol=0, atol=max(cov_tol * 1e-3, 1e-300) + 1e-12
    )
