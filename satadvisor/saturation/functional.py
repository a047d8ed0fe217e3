"""Pure functions behind the saturation tracker: streaming covariance, reductions, k rules.

The running statistics of one layer are a :class:`CovarianceState` ``(n, mean, m2)``: the sample
count, the mean and the centered second moment ``M2 = Σ (x − mean)(x − mean)ᵀ`` of the rows seen
so far. Each batch is reduced to its own state by :func:`batch_state` (centered scatter in
float32 with autocast off, or in float64 where the process allows TF32: :func:`compute_dtype`)
and folded in with :func:`merge` (Chan et al.'s parallel formula, float64). The same
:func:`merge` combines batches, torch.distributed ranks and whole runs, so there is one code
path for all three. Nothing here synchronises with the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

KRule = Literal["smallest", "delve"]
K_RULES: tuple[str, ...] = ("smallest", "delve")


class CovarianceState(NamedTuple):
    """Streaming statistics of observation rows with ``F`` features.

    ``n``: 0-dim int64 tensor on the CPU, number of rows (row counts come from shapes, so they
    are known on the host: reading ``n`` never waits for an accelerator); ``mean``: float64
    ``(F,)``; ``m2``: float64 ``(F, F)``, the centered second moment (``m2 / n`` is the
    population covariance). ``mean`` and ``m2`` live on the same device.
    """

    n: Tensor
    mean: Tensor
    m2: Tensor


class BatchMoments(NamedTuple):
    """One batch's rows summarised around a rough ``shift``, before the float64 fold-in.

    ``rows``: number of rows; ``shift``: ``(F,)`` in the compute dtype; ``colsum``: ``Σ (x −
    shift)``, ``(F,)``; ``scatter``: ``Σ (x − shift)(x − shift)ᵀ``, ``(F, F)`` (compute dtype).
    :func:`to_state` turns it into a :class:`CovarianceState`; :func:`accumulate_` folds it
    straight into a running one.
    """

    rows: int
    shift: Tensor
    colsum: Tensor
    scatter: Tensor


def empty_state(width: int, *, device: torch.device | str | None = None) -> CovarianceState:
    """The state of zero rows with ``width`` features (the identity of :func:`merge`)."""
    return CovarianceState(
        n=torch.zeros((), dtype=torch.int64),
        mean=torch.zeros(width, dtype=torch.float64, device=device),
        m2=torch.zeros(width, width, dtype=torch.float64, device=device),
    )


def batch_state(x: Tensor, *, scratch: Tensor | None = None) -> CovarianceState:
    """Statistics of the rows of ``x`` (shape ``(rows, F)``, any float dtype, not modified).

    ``to_state(batch_moments(x))``; see :func:`batch_moments`.
    """
    return to_state(batch_moments(x, scratch=scratch), device=x.device)


def batch_moments(x: Tensor, *, scratch: Tensor | None = None) -> BatchMoments:
    """The :class:`BatchMoments` of the rows of ``x`` (shape ``(rows, F)``, not modified).

    Reduced in :func:`compute_dtype` (float32, or float64 where float32 matmuls may round),
    autocast off. The rows are centered on a rough mean (of a spread-out subset of rows) before the scatter
    ``xcᵀ xc`` is formed, so large offsets cost no precision; the column sums of ``xc`` correct
    the rough mean exactly in float64 later. On a CPU the rows go through in cache-sized chunks
    (see :func:`scratch_numel`). ``scratch``: optional flat tensor of the compute dtype with at
    least :func:`scratch_numel` elements, reused as the centered buffer instead of a fresh
    allocation.
    """
    if x.dim() != 2:
        raise ValueError(
            f"batch_state expects a (rows, features) matrix, got shape {tuple(x.shape)}"
        )
    rows, width = x.shape
    dtype = compute_dtype(x)
    if rows == 0:
        return _no_rows(width, dtype, x.device)
    with _no_autocast(x.device):
        x = x.detach()
        shift = x[:: max(1, rows // _SHIFT_SAMPLES)].mean(dim=0, dtype=dtype)

        def centered(start: int, stop: int, flat: Tensor) -> Tensor:
            out = flat.view(stop - start, width)
            torch.sub(x[start:stop], shift, out=out)
            return out.T

        colsum, scatter = _chunked_scatter(rows, 1, width, centered, dtype, x.device, scratch)
        return BatchMoments(rows, shift, colsum, scatter)


def channels_first_batch_state(y: Tensor, *, scratch: Tensor | None = None) -> CovarianceState:
    """:func:`batch_state` of a ``(B, C, *spatial)`` map seen as ``(B·∏spatial, C)`` rows."""
    return to_state(channels_first_batch_moments(y, scratch=scratch), device=y.device)


def channels_first_batch_moments(y: Tensor, *, scratch: Tensor | None = None) -> BatchMoments:
    """:func:`batch_moments` of a ``(B, C, *spatial)`` map seen as ``(B·∏spatial, C)`` rows.

    Equal to ``batch_moments(y.movedim(1, -1).reshape(-1, C))`` but never transposes the whole
    map into a rows-by-channels copy: a few examples at a time (one chunk, see
    :func:`scratch_numel`) are centered into a channels-first ``(C, examples·∏spatial)`` buffer
    for one matmul, so the extra memory is one chunk whatever the batch and map size. ``y`` is
    not modified; ``scratch`` as in :func:`batch_moments` (with ``unit_rows = ∏spatial``).
    """
    if y.dim() < 2:
        raise ValueError(f"expected a (B, C, *spatial) tensor, got shape {tuple(y.shape)}")
    channels = y.shape[1]
    rows = y.numel() // channels if channels else 0
    dtype = compute_dtype(y)
    if rows == 0:
        return _no_rows(channels, dtype, y.device)
    with _no_autocast(y.device):
        y = y.detach()
        other_dims = [d for d in range(y.dim()) if d != 1]
        examples = y[:: max(1, y.shape[0] // _SHIFT_EXAMPLES)]
        shift = examples.mean(dim=other_dims, dtype=dtype)
        shift_view = shift.view(channels, *[1] * (y.dim() - 1))  # over (C, B, *spatial)

        def centered(start: int, stop: int, flat: Tensor) -> Tensor:
            out = flat.view(channels, stop - start, *y.shape[2:])
            torch.sub(y[start:stop].transpose(0, 1), shift_view, out=out)
            return flat.view(channels, -1)

        colsum, scatter = _chunked_scatter(
            y.shape[0], rows // y.shape[0], channels, centered, dtype, y.device, scratch
        )
        return BatchMoments(rows, shift, colsum, scatter)


def sampled_map_moments(
    y: Tensor, positions: int, *, generator: torch.Generator | None = None
) -> BatchMoments:
    """:func:`batch_moments` of ``positions`` rows per example of a ``(B, C, *spatial)`` map.

    Each example contributes ``positions`` of its positions drawn uniformly with replacement
    (from ``generator``, on ``y``'s device; no host synchronisation), so the rows are an
    unbiased sample of the map's rows, weighted equally per example. The drawn rows are
    gathered straight into a channels-first ``(C, B·positions)`` buffer, centered in place and
    reduced by one matmul: a few kernels per batch whatever the map size, and extra memory of
    ``C·B·positions`` values.
    """
    if y.dim() < 3:
        raise ValueError(f"expected a (B, C, *spatial) tensor, got shape {tuple(y.shape)}")
    batch, channels = y.shape[:2]
    maps = y.detach().flatten(2)  # (B, C, P): a view of a contiguous NCHW map
    total = maps.shape[2]
    dtype = compute_dtype(y)
    if batch == 0 or channels == 0 or total == 0 or positions < 1:
        return _no_rows(channels, dtype, y.device)
    index = torch.randint(
        total, (batch, 1, positions), generator=generator, device=y.device
    ).expand(batch, channels, positions)
    with _no_autocast(y.device):
        picked = torch.gather(maps, 2, index)  # (B, C, p), contiguous
        shift = picked[:: max(1, batch // _SHIFT_EXAMPLES)].mean(dim=(0, 2), dtype=dtype)
        features = torch.empty((channels, batch, positions), dtype=dtype, device=y.device)
        torch.sub(picked.transpose(0, 1), shift[:, None, None], out=features)  # channels first
        features = features.view(channels, batch * positions)
        return BatchMoments(batch * positions, shift, features.sum(dim=1), _gram(features))


# Rows (examples) averaged for the rough centering shift: any shift within about one standard
# deviation of the mean keeps the float32 scatter accurate, and reading a subset is cheap.
_SHIFT_SAMPLES = 256
_SHIFT_EXAMPLES = 8

# Rows centered and multiplied per chunk on a CPU, per thread, when every position is read: the
# centered copy is one chunk, not the whole activation, and a chunk of a 64-channel map (2 MiB)
# is still in cache when the matmul reads it (benchmarks/RESULTS.md, "Tracker overhead").
_CHUNK_ROWS_PER_THREAD = 8192


def scratch_numel(units: int, unit_rows: int, width: int) -> int:
    """Elements of the CPU centering buffer that :func:`batch_moments` (``unit_rows = 1``) or
    :func:`channels_first_batch_moments` (``units`` examples of ``unit_rows`` positions) uses:
    one chunk of rows (``8192 × threads`` rows, whole units). Other devices take no scratch.
    """
    return _chunk_units(units, unit_rows, torch.device("cpu")) * unit_rows * width


def _chunk_units(units: int, unit_rows: int, device: torch.device) -> int:
    if device.type != "cpu":
        return units  # an accelerator wants one large matmul, not many small launches
    per_chunk = _CHUNK_ROWS_PER_THREAD * torch.get_num_threads()
    return max(1, min(units, per_chunk // max(unit_rows, 1)))


def _chunked_scatter(
    units: int,
    unit_rows: int,
    width: int,
    centered: Callable[[int, int, Tensor], Tensor],
    dtype: torch.dtype,
    device: torch.device,
    scratch: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``(Σ xc, Σ xc xcᵀ)`` over chunks of units: ``centered(start, stop, flat)`` writes the
    centered rows of units ``start:stop`` into the flat buffer and returns them as a
    ``(width, rows)`` view."""
    step = _chunk_units(units, unit_rows, device)
    flat = _buffer(scratch, step * unit_rows * width, dtype, device)
    colsum = scatter = None
    for start in range(0, units, step):
        stop = min(start + step, units)
        features = centered(start, stop, flat[: (stop - start) * unit_rows * width])
        sums = features.sum(dim=1)
        if scatter is None or colsum is None:
            colsum, scatter = sums, _gram(features)
        else:
            colsum.add_(sums)
            scatter.add_(_gram(features))
    assert colsum is not None and scatter is not None  # units >= 1
    return colsum, scatter


def _gram(a: Tensor) -> Tensor:
    """``a @ a.T``: one matmul. (A blocked symmetric product that skips one triangle was
    measured and dropped: benchmarks/RESULTS.md, "Tracker overhead".)"""
    return a @ a.T


def _buffer(scratch: Tensor | None, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A flat tensor of ``size`` elements backed by ``scratch`` when it fits, else fresh."""
    if (
        scratch is not None
        and scratch.numel() >= size
        and scratch.dtype == dtype
        and scratch.device == device
    ):
        return scratch[:size]
    return torch.empty(size, dtype=dtype, device=device)


def _no_rows(width: int, dtype: torch.dtype, device: torch.device) -> BatchMoments:
    zeros = torch.zeros(width, dtype=dtype, device=device)
    return BatchMoments(0, zeros, zeros, torch.zeros(width, width, dtype=dtype, device=device))


def to_state(moments: BatchMoments, *, device: torch.device | str | None = None) -> CovarianceState:
    """The float64 :class:`CovarianceState` of one batch's moments (``device``: of an empty one)."""
    rows, shift, colsum, scatter = moments
    if rows == 0:
        return empty_state(shift.shape[0], device=device or shift.device)
    offset = colsum.double() / rows  # the true mean minus the shift
    mean = shift.double() + offset
    m2 = scatter.to(torch.float64, memory_format=torch.contiguous_format, copy=True)
    m2.addr_(offset, offset, alpha=-rows)  # Σ xc xcᵀ − n·o·oᵀ
    return CovarianceState(n=_count(rows), mean=mean, m2=m2)


def _count(rows: int) -> Tensor:
    return torch.tensor(rows, dtype=torch.int64)


def accumulate_(state: CovarianceState, moments: BatchMoments) -> CovarianceState:
    """``merge(state, to_state(moments))``, with ``state.m2`` updated in place.

    The per-batch path of the tracker, written for few kernel launches and no temporaries of
    F×F: the float32 scatter is added straight into the float64 running ``M2``, then the
    batch's own offset from its shift and Chan's δδᵀ term go in as two rank-1 updates whose
    weights are computed on the host from the row counts. Same formula as :func:`merge`:
    ``M2 += S − n_b·o·oᵀ + δδᵀ·n_a·n_b/n`` with ``o = colsum/n_b`` and ``δ = (shift + o) −
    mean_a``. The returned state shares ``m2`` with ``state``; ``n`` and ``mean`` are new.
    No host sync.
    """
    rows, shift, colsum, scatter = moments
    if rows == 0:
        return state
    if state.m2.is_inference() and not torch.is_inference_mode_enabled():
        return merge(state, to_state(moments))  # inference tensors admit no in-place update
    m2 = state.m2
    na = int(state.n)
    n = na + rows
    offset = colsum.to(m2.device, torch.float64).div_(rows)
    delta = (offset + shift.to(m2.device)).sub_(state.mean)  # float64: the promoted type
    m2.add_(scatter.to(m2.device))
    m2.addr_(offset, offset, alpha=-rows)
    m2.addr_(delta, delta, alpha=na * rows / n)
    mean = torch.add(state.mean, delta, alpha=rows / n)
    return CovarianceState(n=state.n + rows, mean=mean, m2=m2)


def merge(a: CovarianceState, b: CovarianceState) -> CovarianceState:
    """Statistics of the union of the rows behind ``a`` and ``b`` (Chan's parallel formula).

    ``mean = mean_a + δ·n_b/n``, ``M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n`` with ``δ = mean_b − mean_a``.
    Either side may be empty (``n = 0``). Computed in float64 on ``a``'s device (autocast never
    touches float64 ops); the inputs are not modified. The counts are read on the host, which
    waits for nothing when ``n`` is on the CPU, as every state made here has it.
    """
    na, nb = int(a.n), int(b.n)
    n = na + nb
    total = max(n, 1)  # n = 0 only when both sides are empty; then the δ terms vanish
    delta = b.mean.to(a.mean.device, torch.float64) - a.mean
    mean = torch.add(a.mean, delta, alpha=nb / total)
    m2 = a.m2 + b.m2.to(a.m2.device, torch.float64)
    m2.addr_(delta, delta, alpha=na * nb / total)  # the δδᵀ term in place: one F×F pass
    return CovarianceState(n=_count(n), mean=mean, m2=m2)


def covariance(state: CovarianceState) -> Tensor:
    """Population covariance ``m2 / n`` (float64, ``(F, F)``); zeros when ``n = 0``."""
    return state.m2 / max(int(state.n), 1)


def eigenvalues(cov: Tensor) -> Tensor:
    """Eigenvalues of symmetric matrices ``(..., F, F)``, descending, via ``torch.linalg.eigvalsh``."""
    return torch.linalg.eigvalsh(cov).flip(-1)


def output_tensor(module: nn.Module, output: object) -> Tensor:
    """The activation tensor inside a module's forward output.

    LSTM/GRU/RNN return ``(output, h)``: the output sequence is used (``.data`` for a
    PackedSequence); every other module must return a tensor.
    """
    if isinstance(module, nn.RNNBase) and isinstance(output, tuple):
        output = output[0]
    if isinstance(output, PackedSequence):
        output = output.data
    if not isinstance(output, Tensor):
        raise TypeError(
            f"{type(module).__name__} returned {type(output).__name__}, not a tensor; "
            "exclude it from saturation tracking"
        )
    return output


def flatten_output(module: nn.Module, output: object) -> Tensor:
    """A module's output as an observation matrix ``(rows, F)`` (a view where possible).

    Conv / ConvTranspose (any dimensionality): ``(B, C, *spatial)`` → ``(B·∏spatial, C)``, every
    position of every example a row, the channels the features (unbatched ``(C, *spatial)`` is one
    example). Linear and recurrent outputs: features last, ``(..., F)`` → ``(∏..., F)``, so the
    time steps of a sequence are rows, whether batch_first or not.
    """
    y = output_tensor(module, output)
    if isinstance(module, nn.modules.conv._ConvNd):
        if y.dim() == len(module.kernel_size) + 1:  # unbatched input
            y = y.unsqueeze(0)
        return y.movedim(1, -1).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def take_rows(module: nn.Module, output: object, index: Tensor) -> Tensor:
    """``flatten_output(module, output)[index]`` without materialising the whole matrix first."""
    y = output_tensor(module, output)
    if isinstance(module, nn.modules.conv._ConvNd):
        if y.dim() == len(module.kernel_size) + 1:
            y = y.unsqueeze(0)
        per_example = y.flatten(2) if y.dim() > 2 else y.unsqueeze(-1)  # (B, C, positions)
        positions = per_example.shape[2]
        index = index.to(y.device)
        return per_example[index // positions, :, index % positions]
    return y.reshape(-1, y.shape[-1])[index.to(y.device)]


def intrinsic_dimension(
    eigenvalues: Tensor, *, threshold: float = 0.99, k_rule: KRule = "smallest"
) -> Tensor:
    """Number of eigen-directions needed for a ``threshold`` share of the variance.

    ``eigenvalues``: ``(..., F)``, one spectrum per row, any order (sorted here, descending);
    negative round-off values count as 0. Returns an int64 tensor of shape ``(...)``.

    ``k_rule="smallest"``: the smallest k whose cumulative share ``Σ_{i≤k} λ_i / Σ λ`` is
    ``≥ threshold``; a spectrum with zero total variance gives k = 0.

    ``k_rule="delve"``: delve 0.1.50's rule (``delve/metrics.py``,
    ``compute_intrinsic_dimensionality``), reproduced exactly for comparisons: with the shares
    ``p = cumsum / sum``, k = the number of shares ``< threshold``. (Its source has branches
    meant to return at least 1, and one more direction when ``threshold − p_k > 0.02``, but
    both slice the already-truncated eigenvector matrix and never change k.) Hence delve's k
    is the correct k minus one for every layer with variance (0 when the largest eigenvalue
    alone reaches the threshold), and 0 for a zero-variance layer (its shares are NaN).
    """
    lam = eigenvalues.sort(dim=-1, descending=True).values.clamp(min=0)
    width = lam.shape[-1]
    cum = lam.cumsum(dim=-1)
    if k_rule == "smallest":
        total = cum[..., -1:]
        # Dividing by the last cumsum (not by a separate sum) makes the final share exactly 1,
        # so some k <= F always qualifies for a threshold <= 1.
        below = (cum / total < threshold).sum(dim=-1)
        k = (below + 1).clamp(max=width)
        return torch.where(total[..., 0] > 0, k, torch.zeros_like(k))
    if k_rule == "delve":
        share = cum / lam.sum(dim=-1, keepdim=True)
        return (share < threshold).sum(dim=-1)
    raise ValueError(f"unknown k_rule {k_rule!r}; use one of {', '.join(K_RULES)}")


def fractional_dimension(eigenvalues: Tensor, *, threshold: float = 0.99) -> Tensor:
    """The ``"smallest"`` intrinsic dimension made continuous (float64, shape ``(...)``).

    With ``c_j`` the cumulative variance share of the ``j`` largest directions (``c_0 = 0``)
    and ``k`` the smallest k with ``c_k ≥ threshold``: ``k − 1 + (threshold − c_{k−1}) / (c_k −
    c_{k−1})``, so its ceiling is ``k``. A smooth function of the spectrum, which a resampling
    estimate of uncertainty (the tracker's jackknife over batch groups) needs: the integer ``k``
    of a subsample jumps or does not. 0 for a spectrum with zero total variance.
    """
    lam = eigenvalues.to(torch.float64).sort(dim=-1, descending=True).values.clamp(min=0)
    cum = lam.cumsum(dim=-1)
    total = cum[..., -1:]
    share = torch.cat([torch.zeros_like(total), cum / total.clamp(min=1e-300)], dim=-1)
    k = intrinsic_dimension(eigenvalues, threshold=threshold)
    upper = share.gather(-1, k.unsqueeze(-1)).squeeze(-1)
    lower = share.gather(-1, (k - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    step = (upper - lower).clamp(min=1e-300)
    frac = ((threshold - lower) / step).clamp(0.0, 1.0)
    value = (k - 1).double() + frac
    return torch.where(total[..., 0] > 0, value, torch.zeros_like(value))


def saturation_from_eigenvalues(
    eigenvalues: Tensor, *, threshold: float = 0.99, k_rule: KRule = "smallest"
) -> Tensor:
    """Saturation ``k / F`` per spectrum (float64, shape ``(...)``), a fraction in [0, 1].

    k from :func:`intrinsic_dimension`; a layer with zero variance has saturation 0.0 (under
    both rules).
    """
    k = intrinsic_dimension(eigenvalues, threshold=threshold, k_rule=k_rule)
    return k.double() / eigenvalues.shape[-1]


@contextlib.contextmanager
def _no_autocast(device: torch.device) -> Iterator[None]:
    """Autocast off for the block (thread-local state). Precision settings that are global to
    the process (TF32) are only read, never set: see :func:`compute_dtype`."""
    kind = device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        with torch.autocast(kind, enabled=False):
            yield
    else:
        yield


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the statistics of ``x`` are reduced in.

    Float64 for float64 input, and for float32 input on a device whose float32 matmuls the
    process lets round their inputs (TF32 or bfloat16, e.g. after
    ``torch.set_float32_matmul_precision("high")``): the statistics are then exact whatever
    that global setting is, without changing it. Float32 otherwise.
    """
    if x.dtype == torch.float64 or _reduced_float32_matmul(x.device):
        return torch.float64
    return torch.float32


def _reduced_float32_matmul(device: torch.device) -> bool:
    """Whether the process's settings let float32 matmuls on ``device`` round their inputs."""
    if device.type == "cuda":
        backend: Any = torch.backends.cuda.matmul
    elif device.type == "cpu":
        backend = getattr(torch.backends.mkldnn, "matmul", None)  # set at import, not typed
    else:
        return False
    precision = getattr(backend, "fp32_precision", None)
    if precision is None:  # torch < 2.9: one process-wide setting
        return torch.get_float32_matmul_precision() != "highest"
    if precision == "none":  # inherited from the generic setting
        precision = getattr(torch.backends, "fp32_precision", "ieee")
    return precision not in ("ieee", "none")
