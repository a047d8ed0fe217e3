"""The training loop: learning, bookkeeping, schedules, saturation per epoch, divergence, seeds.

Every run is a tiny CNN on scikit-learn's 8×8 digits on the CPU (a few seconds in all).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from satadvisor import _env
from satadvisor import data as data_mod
from satadvisor.config import TrainConfig
from satadvisor.errors import UsageError
from satadvisor.saturation import SaturationTracker
from satadvisor.train import EpochRecord, Progress, RunResult, run, seed_everything

# subset=161 with batch 32: five full batches and a trailing batch of one image, skipped.
SUBSET, BATCH, STEPS = 161, 32, 5
pytestmark = pytest.mark.usefixtures("one_thread")

EVAL_IMAGES = 144  # digits: 1797 images − 359 test − 1294 train


class TinyNet(nn.Module):
    """conv1 (8×8, 1→8) → BN → conv2 (stride 2: 4×4, 8→16) → dropout → head (256→10).

    ``head`` is registered first, so its registration order differs from the forward order.
    ``blow_up`` ("train", "eval" or "" ) multiplies the logits by inf in that mode.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.head = nn.Linear(16 * 4 * 4, 10)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.drop = nn.Dropout(dropout)
        self.blow_up = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv1(x)))
        x = F.relu(self.conv2(x))
        out: torch.Tensor = self.head(self.drop(torch.flatten(x, 1)))
        if self.blow_up == ("train" if self.training else "eval"):
            out = out * math.inf
        return out


# Forward order, and MACs / parameters of TinyNet on a 1×8×8 image, by hand.
FORWARD_ORDER = ["conv1", "conv2", "head"]
POSITIONS = {"conv1": 64, "conv2": 16, "head": 1}
TINY_MACS = 8 * 1 * 9 * 64 + 16 * 8 * 9 * 16 + 256 * 10
TINY_PARAMS = (8 * 9 + 8) + (8 + 8) + (16 * 8 * 9 + 16) + (256 * 10 + 10)


def tiny(seed: int = 0, dropout: float = 0.0) -> TinyNet:
    seed_everything(seed)
    return TinyNet(dropout)


def cfg(**changes: Any) -> TrainConfig:
    base = TrainConfig(epochs=2, batch_size=BATCH, device="cpu", optimizer="adam", lr=0.01)
    return base.replace(**changes)


@pytest.fixture(scope="module")
def small() -> data_mod.DataBundle:
    return data_mod.load("digits", subset=SUBSET, device="cpu")


@pytest.fixture(scope="module")
def digits() -> data_mod.DataBundle:
    return data_mod.load("digits", device="cpu")


def evaluate(model: nn.Module, data: data_mod.DataBundle) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on data.eval, batched differently from the loop."""
    model.eval()
    losses, hits, n = [], 0, 0
    with torch.no_grad():
        for x, y in data.eval.batches(17, shuffle=False, augment=False, seed=0):
            out = model(x)
            losses.append(F.cross_entropy(out, y, reduction="none").double())
            hits += int((out.argmax(1) == y).sum())
            n += y.numel()
    return float(torch.cat(losses).mean()), hits / n


def measured(result: RunResult) -> dict[str, Any]:
    """Everything a run measured except the wall-clock timings."""
    d = result.to_dict()
    for key in ("wall_time", "images_per_second"):
        d.pop(key)
    for epoch in d["epochs"]:
        epoch.pop("seconds")
    return d


# ------------------------------------------------------------------------------- learning


def test_a_learnable_task_is_learned_and_the_final_evaluation_is_reproducible(
    digits: data_mod.DataBundle,
) -> None:
    model = tiny()
    result = run(model, digits, config=cfg(epochs=3, batch_size=64))
    assert result.status == "completed" and result.reason is None
    assert [e.epoch for e in result.epochs] == [1, 2, 3]
    assert result.epochs[-1].train_accuracy > 0.6
    assert result.accuracy == result.epochs[-1].eval_accuracy > 0.6  # chance: 0.1
    loss, accuracy = evaluate(model, digits)
    assert result.epochs[-1].eval_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert result.epochs[-1].eval_loss == pytest.approx(loss, rel=1e-5)
    assert result.eval_name == "val" and result.test_accuracy is None
    assert result.images_per_second > 0
    assert result.wall_time >= sum(e.seconds for e in result.epochs) > 0


def test_cost_and_environment_are_recorded(small: data_mod.DataBundle) -> None:
    result = run(tiny(), small, config=cfg(epochs=1, seed=7))
    assert (result.macs, result.params) == (TINY_MACS, TINY_PARAMS) == (25600, 3834)
    assert (result.dataset, result.resolution, result.seed) == ("digits", 8, 7)
    assert result.config == cfg(epochs=1, seed=7).to_dict()
    assert result.device == "cpu" and result.device_name
    assert result.versions["torch"] == torch.__version__


def test_full_runs_score_validation_and_test_the_final_model_once() -> None:
    full = data_mod.load("digits", subset=SUBSET, full=True, device="cpu")
    assert full.test is not None and full.eval_name == "val"
    # The validation split is carved from the training set: no image of it is in the test set
    # or in the training split (indices into the sources).
    assert not set(full.eval.indices.tolist()) & set(full.train.indices.tolist())
    model = tiny()
    result = run(model, full, config=cfg(epochs=2, full=True))
    assert result.eval_name == "val"
    # every epoch scored the validation split, the test split once at the end, by the final model
    _, val_accuracy = evaluate(model, data_mod.DataBundle(**{**full.__dict__, "test": None}))
    assert result.accuracy == pytest.approx(val_accuracy, abs=1e-12)
    test_view = data_mod.DataBundle(**{**full.__dict__, "eval": full.test, "test": None})
    assert result.test_accuracy == pytest.approx(evaluate(model, test_view)[1], abs=1e-12)


def test_a_run_whose_config_does_not_match_the_split_is_refused(
    small: data_mod.DataBundle,
) -> None:
    with pytest.raises(UsageError, match="full=True"):
        run(tiny(), small, config=cfg(full=True))
    full = data_mod.load("digits", subset=40, full=True, device="cpu")
    with pytest.raises(UsageError, match="full=False"):
        run(tiny(), full, config=cfg(full=False))


# ------------------------------------------------------------------------------- schedules


def test_cosine_schedule_per_epoch_and_constant_adam(small: data_mod.DataBundle) -> None:
    sgd = run(tiny(), small, config=cfg(epochs=4, optimizer="sgd", lr=0.1))
    # Per-step cosine to zero over 4 epochs of 5 steps: the rate at the start of epoch e.
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [r.lr for r in sgd.epochs] == pytest.approx(expected, rel=1e-12)
    lrs = [r.lr for r in sgd.epochs]
    assert all(a > b for a, b in itertools.pairwise(lrs))
    adam = run(tiny(), small, config=cfg(epochs=3, optimizer="adam", lr=0.003))
    assert [r.lr for r in adam.epochs] == [0.003] * 3


# ------------------------------------------------------------------------------- callbacks


def test_on_epoch_returning_true_prunes_after_that_epoch(small: data_mod.DataBundle) -> None:
    seen: list[EpochRecord] = []

    def on_epoch(record: EpochRecord) -> bool:
        seen.append(record)
        return record.epoch == 2

    model = tiny()
    with SaturationTracker(model) as tracker:
        result = run(model, small, config=cfg(epochs=4), tracker=tracker, on_epoch=on_epoch)
    assert result.status == "pruned" and "epoch 2" in (result.reason or "")
    assert [r.epoch for r in seen] == [1, 2]
    assert result.epochs == seen
    assert len(result.saturation) == 2


def test_progress_reports_every_step_of_every_epoch(small: data_mod.DataBundle) -> None:
    calls: list[Progress] = []
    run(tiny(), small, config=cfg(epochs=2), progress=calls.append)
    assert SUBSET // BATCH == STEPS  # the trailing image is no step
    assert [(p.epoch, p.step) for p in calls] == [(e, s) for e in (1, 2) for s in range(1, 6)]
    assert {(p.epochs, p.steps) for p in calls} == {(2, STEPS)}


# ------------------------------------------------------------------------------- saturation


def test_saturation_is_measured_per_epoch_and_phase_in_forward_order(
    small: data_mod.DataBundle,
) -> None:
    model = tiny()
    with SaturationTracker(model) as tracker:
        assert tracker.layer_names == ["head", "conv1", "conv2"]  # registration order
        result = run(model, small, config=cfg(epochs=3), tracker=tracker)
    assert len(result.saturation) == len(result.epochs) == 3
    trained_images = STEPS * BATCH  # 160: the trailing image of each epoch is skipped
    for epoch in result.saturation:
        assert set(epoch) == {"train", "eval"}
        for phase, images in (("train", trained_images), ("eval", EVAL_IMAGES)):
            layers = epoch[phase]
            assert [s.name for s in layers] == FORWARD_ORDER
            # Only this epoch's passes: no accumulation across epochs, no dry forward.
            assert [s.samples for s in layers] == [images * POSITIONS[n] for n in FORWARD_ORDER]
            assert all(0.0 < s.saturation <= 1.0 for s in layers)
    assert result.profile("eval") == result.saturation[-1]["eval"]
    assert result.macs == TINY_MACS  # the tracker's own work is not the model's cost


def test_the_last_eval_profile_matches_a_numpy_covariance_of_the_final_model(
    small: data_mod.DataBundle,
) -> None:
    model = tiny()
    with SaturationTracker(model, threshold=0.99) as tracker:
        result = run(model, small, config=cfg(epochs=2), tracker=tracker)
    rows: list[np.ndarray] = []
    hook = model.conv2.register_forward_hook(
        lambda m, i, o: rows.append(o.permute(0, 2, 3, 1).reshape(-1, 16).double().numpy())
    )
    evaluate(model, small)
    hook.remove()
    obs = np.concatenate(rows)
    eig = np.linalg.eigvalsh(np.cov(obs, rowvar=False, bias=True))[::-1]
    k = int(np.argmax(np.cumsum(eig) / eig.sum() >= 0.99)) + 1
    conv2 = result.profile("eval")[1]
    assert conv2.samples == obs.shape[0] == EVAL_IMAGES * 16
    np.testing.assert_allclose(conv2.eigenvalues, eig, rtol=1e-4, atol=1e-6 * eig[0])
    assert conv2.intrinsic_dimension == k and conv2.saturation == k / 16


def test_track_last_measures_only_the_last_epoch_and_trains_the_same(
    small: data_mod.DataBundle,
) -> None:
    """track="last": the hooks record nothing before the last epoch, so that epoch's samples
    are its own passes only; training (the tracker has its own generator) is bitwise the same,
    and with every row its profile equals the last epoch of a run tracked throughout."""
    runs = {}
    for track in ("every", "last"):
        model = tiny()
        with SaturationTracker(model, rows="all") as tracker:
            runs[track] = run(model, small, config=cfg(epochs=3), tracker=tracker, track=track)
            assert tracker.enabled  # put back for whoever reads the tracker next
    every, last = runs["every"], runs["last"]
    assert [measured(every)["epochs"], every.test_accuracy] == [
        measured(last)["epochs"],
        last.test_accuracy,
    ]
    assert len(every.saturation) == 3 and len(last.saturation) == 1
    for phase, images in (("train", STEPS * BATCH), ("eval", EVAL_IMAGES)):
        got, want = last.saturation[0][phase], every.saturation[-1][phase]
        assert [s.samples for s in got] == [images * POSITIONS[n] for n in FORWARD_ORDER]
        assert [s.intrinsic_dimension for s in got] == [s.intrinsic_dimension for s in want]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.eigenvalues, w.eigenvalues, rtol=1e-9, atol=1e-12)


def test_track_last_needs_a_fixed_number_of_epochs(small: data_mod.DataBundle) -> None:
    model = tiny()
    with SaturationTracker(model) as tracker:
        with pytest.raises(UsageError, match="fixed number of epochs"):
            run(model, small, config=cfg(), tracker=tracker, track="last", until=lambda r: False)
        with pytest.raises(UsageError, match="track="):
            run(model, small, config=cfg(), tracker=tracker, track="first")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- divergence


def test_a_huge_learning_rate_diverges_without_an_exception(small: data_mod.DataBundle) -> None:
    model = tiny()
    with SaturationTracker(model) as tracker:
        result = run(model, small, config=cfg(optimizer="sgd", lr=1e6), tracker=tracker)
    assert result.status == "diverged"
    assert "loss" in (result.reason or "") and "epoch 1" in (result.reason or "")
    assert result.epochs == [] and result.saturation == [] and result.accuracy is None
    assert result.macs == TINY_MACS


def test_divergence_keeps_the_epochs_measured_before(small: data_mod.DataBundle) -> None:
    model = tiny()

    def on_epoch(record: EpochRecord) -> None:
        model.blow_up = "train"  # from epoch 2 on the logits are ±inf/nan

    with SaturationTracker(model) as tracker:
        result = run(model, small, config=cfg(epochs=4), tracker=tracker, on_epoch=on_epoch)
    assert result.status == "diverged" and "training loss" in (result.reason or "")
    assert "epoch 2" in (result.reason or "")
    assert [e.epoch for e in result.epochs] == [1] and len(result.saturation) == 1
    assert math.isfinite(result.epochs[0].train_loss)
    assert RunResult.from_json(result.to_json()) == result


def test_a_non_finite_evaluation_loss_is_divergence_too(small: data_mod.DataBundle) -> None:
    model = tiny()
    model.blow_up = "eval"
    result = run(model, small, config=cfg(epochs=2))
    assert result.status == "diverged" and "val loss" in (result.reason or "")
    assert result.epochs == []


# ------------------------------------------------------------------------------- seeds, JSON


def test_same_seed_same_results_and_another_seed_differs(small: data_mod.DataBundle) -> None:
    def one(seed: int, draws: int = 0) -> RunResult:
        model = tiny(seed=seed, dropout=0.3)
        torch.rand(draws)  # dropout must not depend on the global RNG state run() starts with
        with SaturationTracker(model, rows=50, seed=seed) as tracker:
            return run(model, small, config=cfg(epochs=2, seed=seed), tracker=tracker)

    first, second, other = one(3), one(3, draws=7), one(4)
    assert measured(first) == measured(second)  # bitwise: losses, accuracies, eigenvalues
    assert [e.train_loss for e in first.epochs] != [e.train_loss for e in other.epochs]
    assert first.profile()[0].eigenvalues != other.profile()[0].eigenvalues


def test_seed_everything_makes_model_construction_reproducible() -> None:
    def draw() -> tuple[list[torch.Tensor], float, float]:
        seed_everything(11)
        weights = [p.detach().clone() for p in TinyNet().parameters()]
        return weights, random.random(), float(np.random.rand())

    (w1, r1, n1), (w2, r2, n2) = draw(), draw()
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert (r1, n1) == (r2, n2)
    seed_everything(12)
    assert not torch.equal(TinyNet().conv1.weight, w1[1])


def test_run_results_round_trip_through_json(small: data_mod.DataBundle) -> None:
    model = tiny()
    with SaturationTracker(model) as tracker:
        result = run(model, small, config=cfg(epochs=2), tracker=tracker)
    again = RunResult.from_json(result.to_json())
    assert again == result
    assert isinstance(again.epochs[0], EpochRecord)
    assert again.profile()[0].eigenvalues == result.profile()[0].eigenvalues


# ------------------------------------------------------------------------------- devices


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    mps = torch.backends.mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mps, "is_available", lambda: False)
    assert _env.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(mps, "is_available", lambda: True)
    assert _env.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _env.resolve_device("auto") == torch.device("cuda")
    assert _env.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_bf16_autocast_and_channels_last_learns(digits: data_mod.DataBundle) -> None:
    model = tiny()  # the data stays on the CPU: the loop moves each batch to the model
    with SaturationTracker(model) as tracker:
        result = run(
            model, digits, config=cfg(epochs=3, batch_size=64, device="cuda"), tracker=tracker
        )
    assert result.status == "completed" and result.device.startswith("cuda")
    assert result.accuracy is not None and result.accuracy > 0.6
    assert [s.name for s in result.profile()] == FORWARD_ORDER
