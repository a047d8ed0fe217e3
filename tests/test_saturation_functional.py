"""The pure saturation maths against NumPy references and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from satadvisor.saturation import functional as F


def _reference_k(cov: np.ndarray, threshold: float = 0.99) -> tuple[np.ndarray, int]:
    """NumPy reference: descending eigenvalues and the smallest k with share >= threshold."""
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    share = np.cumsum(lam) / lam.sum()
    return lam, int(np.argmax(share >= threshold)) + 1


def _accumulate(batches: list[torch.Tensor]) -> F.CovarianceState:
    state = F.empty_state(batches[0].shape[1])
    for b in batches:
        state = F.merge(state, F.batch_state(b))
    return state


def _split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    assert sum(sizes) == x.shape[0]
    return list(torch.split(x, sizes))


def _spectrum_data(
    n: int, variances: list[float], *, mean: float, dtype: torch.dtype, seed: int
) -> torch.Tensor:
    """Rows whose population covariance has (roughly) the given eigenvalues, rotated randomly."""
    g = torch.Generator().manual_seed(seed)
    f = len(variances)
    q, _ = torch.linalg.qr(torch.randn(f, f, generator=g, dtype=torch.float64))
    z = torch.randn(n, f, generator=g, dtype=torch.float64) * torch.tensor(variances).sqrt()
    return (z @ q.T + mean).to(dtype)


# geometric spectrum: cumulative share 1 − 2⁻ᵏ, so k = 7 for δ = 0.99 with a wide margin
GEOMETRIC = [0.5**i for i in range(12)]
UNEQUAL_SIZES = [1, 37, 200, 5, 512, 64, 181]  # sums to 1000


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streaming_state_matches_numpy_over_unequal_batches(dtype: torch.dtype) -> None:
    x = _spectrum_data(1000, GEOMETRIC, mean=3.0, dtype=dtype, seed=1)
    before = x.clone()
    state = _accumulate(_split(x, UNEQUAL_SIZES))
    assert torch.equal(x, before)  # inputs untouched

    ref = x.double().numpy()
    ref_cov = np.cov(ref, rowvar=False, bias=True)
    cov = F.covariance(state).numpy()
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert int(state.n) == 1000
    np.testing.assert_allclose(state.mean.numpy(), ref.mean(axis=0), rtol=0, atol=tol * 3)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=tol * np.abs(ref_cov).max())

    ref_lam, ref_k = _reference_k(ref_cov)
    lam = F.eigenvalues(F.covariance(state))
    np.testing.assert_allclose(lam.numpy(), ref_lam, rtol=0, atol=tol * ref_lam[0])
    share = np.cumsum(ref_lam) / ref_lam.sum()
    assert abs(share[ref_k - 1] - 0.99) > 1e-3 and abs(share[ref_k - 2] - 0.99) > 1e-3
    sat = F.saturation_from_eigenvalues(lam)
    assert ref_k == 7
    assert float(sat) == pytest.approx(ref_k / 12, abs=0)


def test_result_independent_of_batch_split() -> None:
    x = _spectrum_data(1000, GEOMETRIC, mean=-2.0, dtype=torch.float32, seed=2)
    one = _accumulate([x])
    many = _accumulate(_split(x, UNEQUAL_SIZES))
    other = _accumulate(_split(x, [500, 499, 1]))
    for s in (many, other):
        assert int(s.n) == int(one.n)
        torch.testing.assert_close(s.mean, one.mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(F.covariance(s), F.covariance(one), rtol=0, atol=1e-6)
        assert float(F.saturation_from_eigenvalues(F.eigenvalues(F.covariance(s)))) == 7 / 12


def test_merge_is_order_free_and_empty_is_identity() -> None:
    x = _spectrum_data(300, GEOMETRIC, mean=1.0, dtype=torch.float64, seed=3)
    a, b, c = (F.batch_state(p) for p in _split(x, [100, 150, 50]))
    left = F.merge(F.merge(a, b), c)
    right = F.merge(a, F.merge(c, b))
    torch.testing.assert_close(left.m2, right.m2, rtol=1e-12, atol=1e-12)
    empty = F.empty_state(12)
    same = F.merge(F.merge(empty, a), empty)
    torch.testing.assert_close(same.m2, a.m2, rtol=0, atol=0)
    torch.testing.assert_close(same.mean, a.mean, rtol=0, atol=0)
    both_empty = F.merge(empty, empty)  # no 0/0
    assert int(both_empty.n) == 0 and torch.isfinite(both_empty.m2).all()
    assert int(F.batch_state(torch.zeros(0, 12)).n) == 0


def test_large_offset_float32_keeps_reference_saturation_where_naive_sums_fail() -> None:
    # 8 strong and 8 weak directions: share after 8 is 8 / 8.0072 = 0.9991 → k = 8, saturation 0.5
    variances = [1.0] * 8 + [9e-4] * 8
    std = float(np.sqrt(np.mean(variances)))
    x = _spectrum_data(12_000, variances, mean=1000 * std, dtype=torch.float32, seed=4)
    batches = _split(x, [1000, 3000, 500, 2500, 4000, 1000])

    ref_cov = np.cov(x.double().numpy(), rowvar=False, bias=True)
    ref_lam, ref_k = _reference_k(ref_cov)
    assert ref_k == 8

    ours = F.covariance(_accumulate(batches)).numpy()
    lam, k = _reference_k(ours)
    assert k == ref_k
    np.testing.assert_allclose(lam, ref_lam, rtol=0, atol=1e-5)

    # naive: raw float32 sums of xᵀx and x, centred only at the end
    sxx = torch.zeros(16, 16)
    sx = torch.zeros(16)
    for b in batches:
        sxx += b.T @ b
        sx += b.sum(0)
    n = x.shape[0]
    naive = (sxx.double() / n - torch.outer(sx.double() / n, sx.double() / n)).numpy()
    naive_lam, naive_k = _reference_k(naive)
    assert naive_k != ref_k
    assert np.abs(naive_lam - ref_lam).max() > 100 * np.abs(lam - ref_lam).max()


@pytest.mark.parametrize("rank", [1, 3, 10, 16])
def test_known_rank_gives_rank_over_width(rank: int) -> None:
    g = torch.Generator().manual_seed(rank)
    width = 16
    basis, _ = torch.linalg.qr(torch.randn(width, rank, generator=g))
    x = torch.randn(2000, rank, generator=g) @ basis.T + 5.0  # exactly rank-r, equal variances
    state = _accumulate(_split(x, [700, 1300]))
    sat = F.saturation_from_eigenvalues(F.eigenvalues(F.covariance(state)))
    assert float(sat) == rank / width


# Hand-computed (δ = 0.99; each spectrum sums to 100 so the shares p are exact decimals).
# smallest: first k with p_k ≥ 0.99. delve 0.1.50: #(p < 0.99) — its "at least 1" and
# "+1 if 0.99 − p_k > 0.02" branches slice an already-truncated matrix and never fire.
EXPECTED = {
    # spectrum: (smallest, delve)
    (60, 25, 10, 4.5, 0.5): (4, 3),  # p = .6 .85 .95 .995 1
    (60, 25, 13.5, 1, 0.5): (4, 3),  # p = .6 .85 .985 .995 1
    (99.5, 0.5): (1, 0),  # p = .995 1: delve reports saturation 0
    (50, 49.5, 0.5): (2, 1),  # p = .5 .995 1
    (40, 30, 20, 9.2, 0.8): (4, 3),  # p = .4 .7 .9 .992 1
    (0, 0, 0): (0, 0),  # zero variance (delve's shares are NaN)
    (25, 25, 25, 25): (4, 3),  # p = .25 .5 .75 1
    (97.5, 1.5, 0.6, 0.4): (2, 1),  # p = .975 .99 .996 1: a share exactly δ counts
    (97.1, 1.5, 1.0, 0.4): (3, 2),  # p = .971 .986 .996 1
}


@pytest.mark.parametrize("spectrum", list(EXPECTED))
def test_k_rules_on_constructed_spectra(spectrum: tuple[float, ...]) -> None:
    want_smallest, want_delve = EXPECTED[spectrum]
    lam = torch.tensor(spectrum, dtype=torch.float64)
    assert int(F.intrinsic_dimension(lam, k_rule="smallest")) == want_smallest
    assert int(F.intrinsic_dimension(lam, k_rule="delve")) == want_delve
    assert int(F.intrinsic_dimension(lam.flip(0), k_rule="smallest")) == want_smallest  # any order


def test_k_rules_are_batched_over_rows() -> None:
    rows = [s for s in EXPECTED if len(s) == 5]
    lam = torch.tensor(rows, dtype=torch.float64)
    for rule, col in (("smallest", 0), ("delve", 1)):
        k = F.intrinsic_dimension(lam, k_rule=rule)  # type: ignore[arg-type]
        assert k.tolist() == [EXPECTED[s][col] for s in rows]
        sat = F.saturation_from_eigenvalues(lam.unsqueeze(0), k_rule=rule)  # type: ignore[arg-type]
        assert sat.shape == (1, len(rows))
        assert sat[0].tolist() == [EXPECTED[s][col] / 5 for s in rows]


def _delve_0_1_50_intrinsic_dimensionality(cov: torch.Tensor, thresh: float = 0.99) -> int:
    """Verbatim copy of delve 0.1.50 delve/metrics.py compute_intrinsic_dimensionality (MIT)."""
    eig_vals, eigen_space = torch.linalg.eigh(cov, UPLO="U")
    eig_vals, idx = eig_vals.sort(descending=True)  # noqa: RUF059
    eig_vals[eig_vals < 0] = 0
    percentages = eig_vals.cumsum(0) / eig_vals.sum()
    eigen_space = eigen_space[:, percentages < thresh]
    if eigen_space.shape[1] == 0:
        eigen_space = eigen_space[:, :1]
    elif thresh - (percentages[percentages < thresh][-1]) > 0.02:
        eigen_space = eigen_space[:, : eigen_space.shape[1] + 1]
    return eigen_space.shape[1]


def test_delve_rule_matches_delve_source_on_random_spectra() -> None:
    g = torch.Generator().manual_seed(5)
    disagreements_with_smallest = 0
    for trial in range(100):
        f = 4 + trial % 29
        lam = torch.rand(f, generator=g, dtype=torch.float64) ** (1 + trial % 7) * 10
        q, _ = torch.linalg.qr(torch.randn(f, f, generator=g, dtype=torch.float64))
        cov = q @ torch.diag(lam) @ q.T
        cov = (cov + cov.T) / 2
        eig = F.eigenvalues(cov)
        for thresh in (0.9, 0.99):
            want = _delve_0_1_50_intrinsic_dimensionality(cov.clone(), thresh)
            ours = F.intrinsic_dimension(eig, threshold=thresh, k_rule="delve")
            assert int(ours) == want
            smallest = int(F.intrinsic_dimension(eig, threshold=thresh))
            assert want == smallest - 1  # always one too small
            disagreements_with_smallest += smallest != want
    assert disagreements_with_smallest == 200


def test_unknown_k_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="k_rule"):
        F.intrinsic_dimension(torch.ones(3), k_rule="largest")  # type: ignore[arg-type]


# -- reductions -----------------------------------------------------------------------------


def _manual_channels_last(y: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) → (B·∏S, C) by an explicit permutation."""
    perm = [0, *range(2, y.dim()), 1]
    return y.permute(*perm).contiguous().view(-1, y.shape[1])


CONVS = [
    (nn.Conv1d(3, 5, 3), (2, 3, 9)),
    (nn.Conv2d(3, 5, 3), (2, 3, 7, 6)),
    (nn.Conv3d(3, 5, 3), (2, 3, 5, 6, 4)),
    (nn.ConvTranspose1d(3, 5, 3, stride=2), (2, 3, 4)),
    (nn.ConvTranspose2d(3, 5, 3, stride=2), (2, 3, 4, 3)),
    (nn.ConvTranspose3d(3, 5, 2), (2, 3, 3, 2, 3)),
]


@pytest.mark.parametrize(("conv", "shape"), CONVS, ids=lambda v: type(v).__name__)
def test_conv_reduction_equals_manual_reshape(conv: nn.Module, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    y = conv(torch.randn(shape)).detach()
    x = F.flatten_output(conv, y)
    assert torch.equal(x, _manual_channels_last(y))
    assert x.shape[1] == 5
    unbatched = F.flatten_output(conv, y[0])
    assert torch.equal(unbatched, _manual_channels_last(y[:1]))
    # the channels-first fast path equals the generic path
    fast, slow = F.channels_first_batch_state(y), F.batch_state(x)
    assert int(fast.n) == int(slow.n) == x.shape[0]
    torch.testing.assert_close(fast.mean, slow.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.m2, slow.m2, rtol=1e-5, atol=1e-5)
    index = torch.tensor([0, x.shape[0] - 1, 3, 7])
    assert torch.equal(F.take_rows(conv, y, index), x[index])


def test_linear_with_leading_dims() -> None:
    lin = nn.Linear(4, 6)
    y = lin(torch.randn(2, 3, 5, 4)).detach()
    x = F.flatten_output(lin, y)
    assert torch.equal(x, y.reshape(30, 6))
    assert torch.equal(F.take_rows(lin, y, torch.tensor([29, 0])), x[[29, 0]])


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_output_sequence(cls: type[nn.LSTM] | type[nn.GRU], batch_first: bool) -> None:
    torch.manual_seed(0)
    rnn = cls(4, 6, batch_first=batch_first)
    inp = torch.randn(3, 5, 4)  # (B, T, F) if batch_first else (T, B, F)
    out = rnn(inp)
    seq = out[0].detach()
    assert torch.equal(F.flatten_output(rnn, out), seq.reshape(15, 6))
    lengths = torch.tensor([5, 3, 2]) if batch_first else torch.tensor([3, 2, 2, 1, 1])
    packed = pack_padded_sequence(inp, lengths, batch_first=batch_first)
    packed_out = rnn(packed)
    assert torch.equal(F.flatten_output(rnn, packed_out), packed_out[0].data)
    assert F.flatten_output(rnn, packed_out).shape == (int(lengths.sum()), 6)


def test_low_precision_input_is_reduced_in_float32_even_under_autocast() -> None:
    x = _spectrum_data(512, GEOMETRIC, mean=1.0, dtype=torch.float32, seed=6)
    want = F.batch_state(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = F.batch_state(x)
    assert got.m2.dtype == torch.float64
    torch.testing.assert_close(got.m2, want.m2, rtol=0, atol=1e-9)  # bf16 matmul would be ~1e-1 off
    half = F.batch_state(x.to(torch.bfloat16))
    ref = np.cov(x.to(torch.bfloat16).double().numpy(), rowvar=False, bias=True) * 512
    np.testing.assert_allclose(half.m2.numpy(), ref, rtol=0, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("width", [63, 100, 300])
def test_wide_layers_match_numpy(width: int, threads: int) -> None:
    # both layouts, any thread count
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_wide(width)
    finally:
        torch.set_num_threads(saved)


def _check_wide(width: int) -> None:
    g = torch.Generator().manual_seed(width)
    for shape in ((6, width, 5, 4), (3, width, 16, 16)):
        y = torch.randn(*shape, generator=g) + torch.linspace(-3, 3, width).view(1, -1, 1, 1)
        x = _manual_channels_last(y)
        ref = np.cov(x.double().numpy(), rowvar=False, bias=True) * x.shape[0]
        for state in (F.batch_state(x), F.channels_first_batch_state(y)):
            assert int(state.n) == x.shape[0]
            np.testing.assert_allclose(state.m2.numpy(), ref, rtol=0, atol=1e-4 * len(x) / 120)
            np.testing.assert_allclose(state.m2.numpy(), state.m2.numpy().T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("chunk_rows", [7, 200, 10**6])
def test_chunked_scatter_matches_numpy_and_stays_in_its_scratch(
    chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a CPU rows go through in chunks: 7 rows per thread is less than one example of 80
    # positions (one example per chunk), 200 gives uneven chunks of examples, 10**6 one chunk.
    monkeypatch.setattr(F, "_CHUNK_ROWS_PER_THREAD", chunk_rows)
    g = torch.Generator().manual_seed(chunk_rows)
    y = torch.randn(9, 70, 10, 8, generator=g) * 0.1 + 500.0  # far from zero: centering matters
    x = _manual_channels_last(y)
    ref = x.double().numpy()
    ref_m2 = np.cov(ref, rowvar=False, bias=True) * len(ref)
    for moments, units, unit_rows in (
        (F.channels_first_batch_moments, 9, 80),
        (F.batch_moments, 720, 1),
    ):
        size = F.scratch_numel(units, unit_rows, 70)
        assert size == min(units, max(1, chunk_rows * torch.get_num_threads() // unit_rows)) * (
            unit_rows * 70
        )
        scratch = torch.full((size,), float("nan"))
        state = F.to_state(moments(y if unit_rows > 1 else x, scratch=scratch))
        assert not scratch.isnan().any()  # the centered rows were written into the scratch
        assert int(state.n) == 720
        np.testing.assert_allclose(state.mean.numpy(), ref.mean(0), rtol=1e-9, atol=0)
        np.testing.assert_allclose(state.m2.numpy(), ref_m2, rtol=0, atol=2e-5 * ref_m2.max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_accumulate_in_place_equals_merge_and_numpy(dtype: torch.dtype) -> None:
    # The tracker's per-batch path (float32 scatter added into the float64 M2 plus one rank-2
    # correction) against Chan's merge and against NumPy's population covariance, with a mean
    # far from zero and batches of unequal size, one of them empty.
    x = _spectrum_data(700, GEOMETRIC, mean=300.0, dtype=dtype, seed=11)
    parts = _split(x, [1, 250, 0, 160, 289])
    running = F.empty_state(12)
    merged = F.empty_state(12)
    for p in parts:
        running = F.accumulate_(running, F.batch_moments(p))
        merged = F.merge(merged, F.batch_state(p))
    ref = x.double().numpy()
    assert int(running.n) == len(ref)
    scale = float(np.cov(ref.T, bias=True).max())
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(running.mean.numpy(), ref.mean(0), rtol=1e-12, atol=tol * 300)
    np.testing.assert_allclose(
        F.covariance(running).numpy(), np.cov(ref.T, bias=True), rtol=0, atol=tol * scale
    )
    torch.testing.assert_close(running.m2, merged.m2, rtol=0, atol=tol * scale * len(ref))


def test_accumulate_falls_back_for_inference_tensors() -> None:
    x = torch.randn(40, 5, dtype=torch.float64)
    with torch.inference_mode():
        state = F.batch_state(x[:20])
    out = F.accumulate_(state, F.batch_moments(x[20:]))  # outside inference mode: no in-place
    assert not out.m2.is_inference()
    np.testing.assert_allclose(
        F.covariance(out).numpy(), np.cov(x.numpy().T, bias=True), rtol=0, atol=1e-12
    )
