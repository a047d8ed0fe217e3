"""Trustworthy advice: a proxy that learned (binomial margin, loss trend), a profile that
settled, and advice gated on both — checked against independent computations and real runs."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from satadvisor import data as data_mod
from satadvisor import rules
from satadvisor.advisor import Analysis, analyze
from satadvisor.cli import format_summary
from satadvisor.config import TrainConfig
from satadvisor.data.split import TensorSplit
from satadvisor.receptive import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.report import write_analysis
from satadvisor.saturation._result import LayerSaturation
from satadvisor.train import run
from satadvisor.trust import learning, required_accuracy, settling

# ------------------------------------------------------------------- the significance margin


def smallest_significant(n: int, p: float, alpha: float = 0.01) -> int | None:
    """The smallest number of correct answers k with P(X >= k) <= alpha, X ~ Binomial(n, p):
    the probabilities from log-gamma (no scipy), summed from the top."""

    def pmf(i: int) -> float:
        log = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        return math.exp(log + i * math.log(p) + (n - i) * math.log1p(-p))

    tail, best = 0.0, None
    for k in range(n, -1, -1):
        tail += pmf(k)
        if tail > alpha:
            break
        best = k
    return best


@pytest.mark.parametrize(
    ("n", "p"), [(20, 0.1), (144, 0.104), (360, 0.5), (1000, 0.1), (6000, 0.1), (50, 0.9)]
)
def test_required_accuracy_is_the_exact_binomial_margin(n: int, p: float) -> None:
    k = smallest_significant(n, p)
    expected = 1.0 if k is None else k / n
    assert required_accuracy(n, p) == pytest.approx(expected, abs=1e-12)


def test_the_margin_shrinks_with_the_size_of_the_validation_split() -> None:
    # Chance 10 %: 20 images need 35 % (7 of 20: P(X >= 6) = 1.1 %), 6,000 about 11 %.
    small, large = required_accuracy(20, 0.1), required_accuracy(6000, 0.1)
    assert small == pytest.approx(0.35)
    assert 0.10 < large < 0.115 < small
    # 12.7 % on 1,000 Fashion-MNIST-like images (chance 10 %) is significant; on 200 it is not.
    assert learning(
        accuracy=0.127, eval_images=1000, majority_rate=0.1, initial_loss=2.3, final_loss=2.0
    ).learned
    assert not learning(
        accuracy=0.127, eval_images=200, majority_rate=0.1, initial_loss=2.3, final_loss=2.0
    ).learned


def test_a_loss_that_did_not_fall_is_not_learning_whatever_the_accuracy() -> None:
    result = learning(
        accuracy=0.9, eval_images=500, majority_rate=0.1, initial_loss=2.3, final_loss=2.4
    )
    assert not result.learned and not result.loss_fell
    assert result.reason is not None and "did not fall" in result.reason
    # a one-class validation split cannot show learning at all
    assert not learning(
        accuracy=1.0, eval_images=50, majority_rate=1.0, initial_loss=2.3, final_loss=0.1
    ).learned


# ------------------------------------------------------------------------------ real runs


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


def _shuffled(bundle: data_mod.DataBundle, seed: int) -> data_mod.DataBundle:
    """The same images with labels permuted at random: nothing generalises to validation."""
    g = torch.Generator().manual_seed(seed)

    def shuffle(split: Any) -> TensorSplit:
        labels = split.labels[torch.randperm(split.labels.numel(), generator=g)]
        return TensorSplit(
            split.images,
            labels,
            indices=split.indices,
            resolution=split.resolution,
            flip=False,
            mean=torch.zeros(1),
            std=torch.ones(1),
            device=torch.device("cpu"),
            prepared=True,
        )

    return dataclasses.replace(bundle, train=shuffle(bundle.train), eval=shuffle(bundle.eval))


def test_random_labels_cannot_be_learned_and_a_learnable_set_is() -> None:
    config = TrainConfig(epochs=3, device="cpu", batch_size=32, seed=0, augment=False)
    real = data_mod.load("digits", device="cpu")
    torch.manual_seed(0)
    learned = run(Small(), real, config=config)
    assert learned.status == "completed" and learned.learned
    assert learned.learning is not None and learned.learning.p_value < 1e-10

    noise = _shuffled(data_mod.load("digits", device="cpu"), seed=1)
    labels_seen = [y for _, y in noise.eval.batches(500, shuffle=False, augment=False, seed=0)]
    assert torch.equal(torch.cat(labels_seen), noise.eval.labels)  # the permutation is what runs
    torch.manual_seed(0)
    random_labels = run(Small(), noise, config=config)
    assert random_labels.status == "not_learned" and not random_labels.learned
    assert random_labels.reason is not None and "majority-class rate" in random_labels.reason


# ----------------------------------------------------------------------------- settling


def layers(values: Sequence[float], width: int = 64) -> list[LayerSaturation]:
    return [
        LayerSaturation(f"conv{i}", "Conv2d", width, 1000, v, max(1, round(v * width)))
        for i, v in enumerate(values, 1)
    ]


def test_settling_finds_the_first_epoch_of_the_stretch_that_reaches_the_end() -> None:
    history = [
        layers([0.9, 0.9, 0.9]),
        layers([0.6, 0.7, 0.8]),  # moved by 0.3
        layers([0.5, 0.6, 0.7]),  # moved by 0.1
        layers([0.49, 0.59, 0.69]),  # within 0.03: settled from here
        layers([0.48, 0.60, 0.70]),
    ]
    s = settling(history)
    assert s.settled and s.epoch == 4 and s.reason is None
    assert s.max_change == pytest.approx(0.01)
    moving = settling(history[:3])
    assert not moving.settled and moving.epoch is None
    assert moving.moving_layer in {"conv1", "conv2", "conv3"}
    assert moving.reason is not None and "0.10" in moving.reason


def test_one_epoch_cannot_settle_and_a_relapse_restarts_the_stretch() -> None:
    assert not settling([layers([0.5, 0.5])]).settled
    assert "compares two" in (settling([layers([0.5, 0.5])]).reason or "")
    history = [layers([0.5, 0.5]), layers([0.5, 0.5]), layers([0.8, 0.5]), layers([0.8, 0.5])]
    assert settling(history).epoch == 4  # epoch 2 settled, epoch 3 moved again


def test_a_changed_pattern_is_not_settled_even_when_values_barely_move() -> None:
    before = layers([0.50, 0.50, 0.24, 0.24])  # conv3-4 at 0.48× the median: a tail
    after = layers([0.50, 0.50, 0.26, 0.26])  # 0.52×: no tail; every value moved 0.02
    s = settling([before, after], pattern=rules.pattern)
    assert rules.pattern(before)[0] == ("conv3", "conv4") and rules.pattern(after)[0] == ()
    assert not s.settled and s.pattern_changed and "pattern" in (s.reason or "")


def test_a_narrow_layer_may_move_by_one_eigen_direction() -> None:
    # width 4: one direction is 0.25, the finest step the measurement has
    assert settling([layers([0.5], width=4), layers([0.75], width=4)]).settled
    assert not settling([layers([0.25], width=4), layers([0.75], width=4)]).settled


# ----------------------------------------------------------------------- gated advice


def test_an_unsettled_profile_gives_provisional_findings_and_no_capacity_rules() -> None:
    prof = layers([0.40, 0.98, 0.45, 0.50, 0.10, 0.08])  # conv2 near 1; conv5-6 a tail
    settled = rules.evaluate(prof, None)
    assert {"tail", "too_narrow"} <= {f.kind for f in settled}
    assert all(f.provisional is None for f in settled)
    unsettled = rules.evaluate(prof, None, unsettled="saturation still moved")
    assert [f.kind for f in unsettled] == ["tail"]
    assert unsettled[0].provisional == "saturation still moved"
    assert unsettled[0].to_dict()["provisional"] is True
    text = rules.verdict(unsettled, [])
    assert text.startswith("Provisional:")


def _conv(name: str, *, kernel: int, stride: int, unproductive: bool) -> LayerReceptiveField:
    return LayerReceptiveField(
        name, "Conv2d", kernel, stride, 40, 40, 1, 40, 8, unproductive, False, kernel
    )


def test_a_shortcut_conv_does_not_shift_the_agreement_check() -> None:
    # main path a1 a2 b1 [b.downsample] b2 c1 c2; the measured tail starts at c1, the
    # receptive field's first unproductive layer is c1 too: zero main-path layers apart.
    names = ["a1", "a2", "b1", "b.downsample", "b2", "c1", "c2"]
    rf_layers = tuple(
        _conv(
            n,
            kernel=1 if "downsample" in n else 3,
            stride=2 if "downsample" in n else 1,
            unproductive=n in ("c1", "c2"),
        )
        for n in names
    )
    rf = ReceptiveFieldAnalysis(32, True, rf_layers, feasible_range=(8, 40))
    values = [0.5, 0.55, 0.5, 0.45, 0.5, 0.1, 0.08]
    prof = [
        LayerSaturation(n, "Conv2d", 64, 1000, v, max(1, round(v * 64)))
        for n, v in zip(names, values, strict=True)
    ]
    tail = next(f for f in rules.evaluate(prof, rf) if f.kind == "tail")
    assert tail.layers == ("c1", "c2")
    assert tail.evidence["rf_offset"] == 0 and tail.evidence["rf_agrees"] is True
    # A tail from b2 against a border at b1: one main-path layer apart (agree within one),
    # although b.downsample sits between them in forward order (counting it: two apart).
    shifted = tuple(
        dataclasses.replace(x, unproductive=x.name in ("b1", "b2", "c1", "c2")) for x in rf_layers
    )
    rf2 = dataclasses.replace(rf, layers=shifted)
    values2 = [0.5, 0.55, 0.5, 0.45, 0.1, 0.08, 0.07]
    prof2 = [dataclasses.replace(x, saturation=v) for x, v in zip(prof, values2, strict=True)]
    tail2 = next(f for f in rules.evaluate(prof2, rf2) if f.kind == "tail")
    assert tail2.layers == ("b2", "c1", "c2")
    assert tail2.evidence["rf_offset"] == -1 and tail2.evidence["rf_agrees"] is True


@pytest.fixture(scope="module")
def not_learned() -> Analysis:
    """The embedded default trained at a learning rate too small to learn anything."""
    return analyze("vgg", dataset="digits", config=TrainConfig(epochs=1, lr=1e-6, device="cpu"))


def test_a_proxy_that_did_not_learn_gives_only_training_free_advice(
    not_learned: Analysis,
) -> None:
    a = not_learned
    assert a.run is not None and a.run.status == "not_learned" and a.learned is False
    assert a.findings and all(f.predicted for f in a.findings)
    assert a.tail == []
    assert a.verdict.startswith("The proxy did not learn")
    assert "learning rate" in a.verdict and "epochs" in a.verdict
    d = a.to_dict()
    assert d["training"]["learned"] is False and d["training"]["status"] == "not_learned"
    assert d["advice_basis"] in ("receptive_field", "none")
    assert all(f["basis"] == "receptive_field" for f in d["findings"])
    # the layer table still shows what was measured, but nothing is marked as a tail
    assert not any(row["tail"] for row in d["layers"])
    # the flat loss at lr 1e-6 asks for a higher rate, never a lower one
    assert "another learning rate" in a.verdict and "lower learning rate" not in a.verdict


def test_the_report_and_terminal_lead_with_did_not_learn(
    not_learned: Analysis, tmp_path: Path
) -> None:
    payload = not_learned.to_dict()
    index = write_analysis(payload, tmp_path / "r")
    page = index.read_text()
    banner = page.index("<strong>Did not learn.</strong>")
    assert banner < page.index('class="card verdict"')  # before the verdict card
    verdict_card = page[page.index('class="card verdict"') : page.index("</section>")]
    assert '<span class="badge measured">' not in verdict_card
    assert "not read: the proxy did not learn" in page
    text = format_summary(not_learned.record(), index)
    lines = text.splitlines()
    assert lines[1].startswith("DID NOT LEARN: The proxy did not learn")
    assert text.count("The proxy did not learn") == 1  # said once, first


def test_epochs_auto_stops_once_learned_and_settled() -> None:
    config = TrainConfig(epochs=12, auto_epochs=True, device="cpu", seed=0)
    a = analyze("vgg", dataset="digits", config=config, subset=400)
    assert a.run is not None and a.learned and a.settled
    assert 2 <= len(a.run.epochs) < 12
    d = a.to_dict()["training"]
    assert d["auto_epochs"] is True and d["max_epochs"] == 12
    assert d["settled"] is True and d["settled_epoch"] <= d["epochs"]


def test_the_cli_analyzes_until_learned_and_settled_by_default(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from satadvisor.cli import main

    args = ["analyze", "vgg", "--max-epochs", "3", "--device", "cpu", "--subset", "300"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    training = json.loads(result.stdout)["training"]
    assert training["auto_epochs"] is True and training["max_epochs"] == 3
    assert 1 <= training["epochs"] <= 3
    # stopped early only when both held; else it ran to the cap
    if training["epochs"] < 3:
        assert training["learned"] and training["settled"]
