"""SaturationTracker on real modules: numbers against NumPy, hooks, phases, state handling."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from satadvisor.errors import UsageError
from satadvisor.saturation import LayerSaturation, SaturationTracker
from satadvisor.saturation import functional as F


def _reference(rows: list[np.ndarray], threshold: float = 0.99) -> tuple[np.ndarray, int]:
    """Population covariance of all rows (float64 NumPy), descending eigenvalues and smallest k."""
    x = np.concatenate(rows).astype(np.float64)
    cov = np.cov(x, rowvar=False, bias=True)
    lam = np.linalg.eigvalsh(cov)[::-1]
    share = np.cumsum(np.clip(lam, 0, None)) / np.clip(lam, 0, None).sum()
    return lam, int(np.argmax(share >= threshold)) + 1


class _Net(nn.Module):
    """Modules registered in another order than they run; the head sees low-rank features."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(12, 5)
        self.bn = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.conv2(x)
        return self.head(x.mean(dim=(2, 3)))


def _batches(sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 6, 6, generator=g) * 2 + 1 for b in sizes]


def test_tracker_matches_numpy_reference_and_forward_order() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    batches = _batches([5, 17, 2, 9])
    seen: dict[str, list[np.ndarray]] = {"conv1": [], "conv2": [], "head": []}
    with torch.no_grad():  # the reference: raw outputs computed by hand, no hooks
        for x in batches:
            a = net.conv1(x)
            b = net.conv2(torch.relu(net.bn(a)))
            c = net.head(b.mean(dim=(2, 3)))
            seen["conv1"].append(a.permute(0, 2, 3, 1).reshape(-1, 12).numpy())
            seen["conv2"].append(b.permute(0, 2, 3, 1).reshape(-1, 12).numpy())
            seen["head"].append(c.numpy())
    with SaturationTracker(net) as tracker, torch.no_grad():
        assert tracker.layer_names == ["head", "conv2", "conv1"]  # registration order
        for x in batches:
            net(x)
    results = tracker.compute("eval")
    assert [r.name for r in results] == ["conv1", "conv2", "head"]  # execution order
    assert tracker.compute("train") == []
    for r in results:
        assert isinstance(r, LayerSaturation)
        lam, k = _reference(seen[r.name])
        assert r.samples == sum(len(a) for a in seen[r.name])
        assert r.width == len(lam)
        assert r.module_type == ("Linear" if r.name == "head" else "Conv2d")
        np.testing.assert_allclose(r.eigenvalues, lam, rtol=0, atol=1e-6 * lam[0])
        assert r.intrinsic_dimension == k
        assert r.saturation == k / r.width
    assert results[2].samples == 33  # one row per image for the linear head
    assert results[0].samples == 33 * 36  # one row per position for a conv


def _model_outputs(module: nn.Module, inp: object) -> object:
    with torch.no_grad():
        return module(inp)


REDUCTION_CASES = [
    ("conv1d", nn.Conv1d(2, 4, 3), (3, 2, 11)),
    ("conv2d", nn.Conv2d(2, 4, 3), (3, 2, 7, 5)),
    ("conv3d", nn.Conv3d(2, 4, 2), (3, 2, 4, 3, 5)),
    ("convT1d", nn.ConvTranspose1d(2, 4, 3, stride=2), (3, 2, 5)),
    ("convT2d", nn.ConvTranspose2d(2, 4, 3, stride=2), (3, 2, 4, 3)),
    ("convT3d", nn.ConvTranspose3d(2, 4, 2), (3, 2, 2, 3, 2)),
    ("linear", nn.Linear(5, 4), (2, 3, 7, 5)),
    ("lstm", nn.LSTM(5, 4), (6, 3, 5)),
    ("lstm_bf", nn.LSTM(5, 4, batch_first=True), (3, 6, 5)),
    ("gru", nn.GRU(5, 4, num_layers=2), (6, 3, 5)),
    ("gru_bf", nn.GRU(5, 4, batch_first=True, bidirectional=True), (3, 6, 5)),
]


@pytest.mark.parametrize(
    ("label", "module", "shape"), REDUCTION_CASES, ids=[c[0] for c in REDUCTION_CASES]
)
def test_tracked_reduction_equals_manual_reshape(
    label: str, module: nn.Module, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(1)
    inputs = [torch.randn(shape) + 3 for _ in range(3)]
    manual = []
    for inp in inputs:
        out = _model_outputs(module, inp)
        y = out[0] if isinstance(out, tuple) else out
        assert isinstance(y, torch.Tensor)
        if label.startswith("conv"):
            y = y.permute(0, *range(2, y.dim()), 1)  # channels last by hand
        manual.append(y.reshape(-1, y.shape[-1]).numpy())
    with SaturationTracker(module) as tracker:
        for inp in inputs:
            _model_outputs(module, inp)
    (result,) = tracker.compute("train")
    state = tracker.state(result.name)
    assert state is not None
    x = np.concatenate(manual)
    assert result.samples == int(state.n) == x.shape[0]
    np.testing.assert_allclose(state.mean.numpy(), x.mean(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        F.covariance(state).numpy(), np.cov(x, rowvar=False, bias=True), rtol=0, atol=1e-5
    )


def test_packed_sequence_uses_data_rows() -> None:
    torch.manual_seed(2)
    lstm = nn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    packed = pack_padded_sequence(x, torch.tensor([5, 2]))
    with SaturationTracker(lstm) as tracker:
        out, _ = lstm(packed)
    state = tracker.state("")
    assert state is not None
    assert int(state.n) == 7
    torch.testing.assert_close(state.mean, out.data.detach().double().mean(0), rtol=0, atol=1e-6)


def test_channels_last_and_unbatched_conv() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 6, 3)
    x = torch.randn(4, 3, 8, 8)
    want = F.batch_state(F.flatten_output(conv, conv(x).detach()))
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    with SaturationTracker(conv_cl) as tracker:
        conv_cl(x.to(memory_format=torch.channels_last))
        conv_cl(x[0])  # unbatched: one more image
    state = tracker.state("")
    assert state is not None
    assert int(state.n) == 5 * 36
    one = F.merge(want, F.batch_state(F.flatten_output(conv, conv(x[0]).detach())))
    torch.testing.assert_close(state.m2, one.m2, rtol=1e-5, atol=1e-4)


def test_train_and_eval_statistics_stay_apart() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(6, 6)
    train_x, eval_x = torch.randn(50, 6), torch.randn(30, 6) * 5 + 2
    with SaturationTracker(lin) as tracker:
        lin.train()
        lin(train_x)
        lin.eval()
        with torch.inference_mode():
            lin(eval_x[:10])
        with torch.no_grad():
            lin(eval_x[10:])
        lin.train()
        lin(train_x[:0])  # an empty batch changes nothing
    for phase, x in (("train", train_x), ("eval", eval_x)):
        state = tracker.state("", phase=phase)
        assert state is not None
        ref = lin(x).detach().double()
        assert int(state.n) == len(x)
        torch.testing.assert_close(state.mean, ref.mean(0), rtol=0, atol=1e-5)
        torch.testing.assert_close(
            F.covariance(state), ref.T.cov(correction=0), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(UsageError, match="phase"):
        tracker.compute("test")


def test_close_leaves_no_hooks_and_no_attributes() -> None:
    net = _Net()
    before = {name: set(vars(m)) for name, m in net.named_modules()}
    params = {k: v.clone() for k, v in net.state_dict().items()}
    with SaturationTracker(net) as tracker:
        assert sum(len(m._forward_hooks) for m in net.modules()) == 3
        net(_batches([2])[0]).sum().backward()
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    assert {name: set(vars(m)) for name, m in net.named_modules()} == before
    assert net.state_dict().keys() == params.keys()
    net(_batches([2])[0])  # no longer observed
    assert tracker.compute("train")[0].samples == 2 * 36
    tracker.close()  # idempotent


def test_outputs_and_gradients_unchanged_by_tracking() -> None:
    torch.manual_seed(5)
    plain = _Net()
    tracked = copy.deepcopy(plain)
    x = _batches([4])[0]
    out_plain = plain(x)
    out_plain.sum().backward()
    with SaturationTracker(tracked, rows=7):
        out_tracked = tracked(x)
        out_tracked.sum().backward()
    assert torch.equal(out_plain, out_tracked)
    for p, q in zip(plain.parameters(), tracked.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert torch.equal(p.grad, q.grad)


def test_autocast_pass_is_tracked_in_float32() -> None:
    torch.manual_seed(6)
    net = _Net()
    x = _batches([3])[0]
    with SaturationTracker(net) as tracker, torch.autocast("cpu", dtype=torch.bfloat16):
        net(x).float().sum().backward()
    state = tracker.state("conv1")
    assert state is not None
    assert state.m2.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net.conv1(x).detach()
    assert ref.dtype == torch.bfloat16
    want = F.batch_state(F.flatten_output(net.conv1, ref.float()))
    torch.testing.assert_close(state.m2, want.m2, rtol=1e-5, atol=1e-4)


def test_float64_model() -> None:
    torch.manual_seed(7)
    lin = nn.Linear(5, 5).double()
    x = torch.randn(100, 5, dtype=torch.float64) * 1e-3 + 1e4
    with SaturationTracker(lin) as tracker:
        lin(x[:60])
        lin(x[60:])
    state = tracker.state("")
    assert state is not None
    ref = lin(x).detach()
    torch.testing.assert_close(F.covariance(state), ref.T.cov(correction=0), rtol=1e-9, atol=1e-15)


def test_subsampling_is_reproducible_under_a_seed() -> None:
    torch.manual_seed(8)
    net = _Net()
    batches = _batches([4, 6, 3])

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        with SaturationTracker(net, rows=50, seed=seed) as tracker:
            for x in batches:
                net(x)
        state = tracker.state("conv1")
        head = tracker.state("head")
        assert state is not None and head is not None
        # ceil(50 / examples) of the ≥ 108 positions of every example, per batch
        assert int(state.n) == 4 * 13 + 6 * 9 + 3 * 17
        assert int(head.n) == 13  # fewer rows than the cap: all of them
        return state.mean, state.m2

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # the sampled rows are rows of the real output: their mean lies within its range
    out = net.conv1(batches[0]).detach()
    assert float(a[0].min()) >= float(out.min()) and float(a[0].max()) <= float(out.max())


def test_include_exclude_patterns() -> None:
    net = _Net()

    def names(**kwargs: object) -> list[str]:
        with SaturationTracker(net, **kwargs) as tracker:  # type: ignore[arg-type]
            return tracker.layer_names

    assert names(include="conv*") == ["conv2", "conv1"]
    assert names(include=["Linear"]) == ["head"]
    assert names(exclude="Conv2d") == ["head"]
    assert names(include="*", exclude=["conv1", "head"]) == ["conv2"]
    assert "bn" not in names(include="*")  # unsupported type
    with pytest.raises(UsageError, match="widen the patterns"):
        SaturationTracker(net, include="nothing*")
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"k_rule": "largest"},
        {"rows": 0},
        {"rows": "some"},
        {"rows": True},
        {"groups": 0},
    ],
)
def test_bad_options_raise_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        SaturationTracker(nn.Linear(2, 2), **kwargs)  # type: ignore[arg-type]


def test_shared_module_counts_every_call_and_reset_forgets() -> None:
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    with SaturationTracker(net) as tracker:
        net(torch.randn(4, 3))
        assert [r.samples for r in tracker.compute()] == [8]  # one name, two calls
        tracker.reset()
        assert tracker.compute() == []
        net(torch.randn(2, 3))
        assert tracker.compute()[0].samples == 4


def test_delve_rule_and_threshold_reach_compute() -> None:
    torch.manual_seed(9)
    lin = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4))
    x = torch.randn(4000, 4) * torch.tensor([10.0, 1.0, 0.3, 0.01])  # shares ≈ .99 .9999 …
    results = {}
    for rule in ("smallest", "delve"):
        for thresh in (0.9, 0.999):
            with SaturationTracker(lin, k_rule=rule, threshold=thresh) as tracker:
                lin(x)
            results[rule, thresh] = tracker.compute()[0].intrinsic_dimension
    lam, _ = _reference([lin(x).detach().numpy()])
    share = np.cumsum(lam) / lam.sum()
    want = {t: int(np.argmax(share >= t)) + 1 for t in (0.9, 0.999)}
    assert results["smallest", 0.9] == want[0.9] == 1
    assert results["smallest", 0.999] == want[0.999] == 2
    assert results["delve", 0.9] == 0 and results["delve", 0.999] == 1


def test_state_dict_round_trip_and_merge_of_two_runs() -> None:
    torch.manual_seed(10)
    net = _Net()
    batches = _batches([3, 5, 4, 2], seed=3)
    with SaturationTracker(net) as whole:
        for x in batches:
            net(x)
    with SaturationTracker(net) as first:
        for x in batches[:2]:
            net(x)
    with SaturationTracker(net) as second:
        for x in batches[2:]:
            net(x)
    merged = SaturationTracker(net)
    merged.close()
    merged.load_state_dict(first.state_dict())
    merged.merge_from(second)
    for got, want in zip(merged.compute(), whole.compute(), strict=True):
        assert (got.name, got.samples, got.intrinsic_dimension) == (
            want.name,
            want.samples,
            want.intrinsic_dimension,
        )
        np.testing.assert_allclose(got.eigenvalues, want.eigenvalues, rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="does not track"):
        SaturationTracker(nn.Linear(12, 5)).load_state_dict(first.state_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_hook_never_syncs_and_ignores_tf32() -> None:
    torch.manual_seed(11)
    lin = nn.Linear(32, 32).cuda()
    with torch.no_grad():
        lin.bias.fill_(50.0)  # a large offset: a TF32 scatter would be ~1e-3 off
    xs = [torch.randn(256, 32, device="cuda") for _ in range(4)]
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        with SaturationTracker(lin) as tracker, torch.no_grad():
            lin(xs[0])
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for x in xs[1:]:
                    lin(x)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert matmul.fp32_precision == "tf32"  # restored
        outs = [lin(x).detach().cpu().double() for x in xs]
    finally:
        matmul.fp32_precision = saved
    state = tracker.state("", phase="train")
    assert state is not None and state.m2.is_cuda
    ref = torch.cat(outs)
    assert int(state.n) == len(ref)
    torch.testing.assert_close(
        F.covariance(state).cpu(), ref.T.cov(correction=0), rtol=1e-5, atol=1e-5
    )


def test_inference_mode_passes_mix_with_plain_ones_on_conv_maps() -> None:
    # The first passes run under torch.inference_mode (as evaluation loops often do), later ones
    # do not: the scratch buffer and the in-place running statistics must stay usable.
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 8, 3).eval()
    xs = [torch.randn(4, 3, 9, 9) + 5 for _ in range(4)]
    with SaturationTracker(conv) as tracker:
        for i, x in enumerate(xs):
            ctx = torch.inference_mode() if i < 2 else torch.no_grad()
            with ctx:
                conv(x)
    state = tracker.state("", phase="eval")
    assert state is not None
    with torch.no_grad():
        rows = torch.cat([conv(x).movedim(1, -1).reshape(-1, 8) for x in xs]).double().numpy()
    assert int(state.n) == len(rows)
    np.testing.assert_allclose(state.mean.numpy(), rows.mean(0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        F.covariance(state).numpy(), np.cov(rows.T, bias=True), rtol=1e-5, atol=1e-5
    )


def test_state_is_a_snapshot_not_the_live_running_statistics() -> None:
    lin = nn.Linear(4, 3)
    with SaturationTracker(lin) as tracker, torch.no_grad():
        lin(torch.randn(10, 4))
        before = tracker.state("")
        assert before is not None
        kept = before.m2.clone()
        lin(torch.randn(10, 4) * 3)
    assert before is not None
    torch.testing.assert_close(before.m2, kept, rtol=0, atol=0)
