"""advisor.analyze: the training-free analysis, a trained one, the JSON schema, and its errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from satadvisor import data as data_mod
from satadvisor import spec as spec_mod
from satadvisor._flags import set_args
from satadvisor.advisor import Analysis, analyze
from satadvisor.config import TrainConfig
from satadvisor.cost import count_macs
from satadvisor.errors import ModelBuildError, UsageError
from satadvisor.report import LAYER_COLUMNS, SCHEMA

# The keys documented for schema satadvisor.analysis/2 in satadvisor/report/__init__.py.
TOP_KEYS = {
    "schema",
    "name",
    "command",
    "seed",
    "model",
    "knobs",
    "dataset",
    "resolution",
    "training",
    "cost",
    "layers",
    "receptive_field",
    "findings",
    "recommendations",
    "verdict",
    "lead",
    "advice_basis",
    "environment",
}
TRAINING_KEYS = {
    "status",
    "reason",
    "epochs",
    "auto_epochs",
    "max_epochs",
    "learned",
    "settled",
    "settled_epoch",
    "learning",
    "settling",
    "eval_name",
    "accuracy",
    "params",
    "macs",
    "wall_time",
    "images_per_second",
    "device",
    "history",
    "saturation_history",
}
HISTORY_KEYS = {
    "epoch",
    "train_loss",
    "train_accuracy",
    "eval_loss",
    "eval_accuracy",
    "lr",
    "seconds",
}
RF_KEYS = {"supported", "reason", "feasible_range", "border_layer"}
FINDING_KEYS = {
    "kind",
    "layers",
    "message",
    "evidence",
    "predicted",
    "basis",
    "provisional",
    "provisional_reason",
}
RECOMMENDATION_KEYS = {
    "kind",
    "title",
    "changes",
    "knobs",
    "resolution",
    "rationale",
    "cost",
    "unproductive_after",
    "set_args",
    "model",
    "pins",
}
COST_KEYS = {"macs", "params", "macs_ratio", "params_ratio"}
ENVIRONMENT_KEYS = {"versions", "device", "device_name", "platform", "time"}

TINY_MODEL = """
    from torch import nn

    DATASET = "digits"
    RESOLUTION = 8


    def build_model(width: int = 8, *, num_classes: int, in_channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, num_classes),
        )
"""

FRAGILE_MODEL = """
    import torch
    from torch import nn


    class Fragile(nn.Module):
        def __init__(self, num_classes: int, in_channels: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:  # the dry forward (eval mode) passes, training does not
                raise RuntimeError("boom in training\\nsecond line of the message")
            return self.fc(torch.flatten(self.conv(x), 1))


    def build_model(*, num_classes: int, in_channels: int) -> nn.Module:
        return Fragile(num_classes, in_channels)
"""

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = TrainConfig(epochs=2, batch_size=32, device="cpu", optimizer="adam", lr=0.01)


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def forward_order(model: nn.Module) -> list[str]:
    """Names of the Conv/Linear modules in the order one forward pass calls them."""
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: order.append(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 16, 16))
    for handle in handles:
        handle.remove()
    return order


def check_schema(d: dict[str, Any], *, trained: bool) -> None:
    """The documented keys are there (extra keys are allowed) and it is strict JSON."""
    json.dumps(d, allow_nan=False)
    assert d["schema"] == SCHEMA == "satadvisor.analysis/2"
    assert set(d) >= TOP_KEYS
    assert set(d["model"]) == {"name", "source"} and set(d["cost"]) == {"macs", "params"}
    assert all(set(row) == set(LAYER_COLUMNS) for row in d["layers"])
    assert set(d["receptive_field"]) == RF_KEYS
    assert d["findings"] and all(set(f) == FINDING_KEYS for f in d["findings"])
    for rec in d["recommendations"]:
        assert set(rec) == RECOMMENDATION_KEYS
        assert rec["cost"] is None or set(rec["cost"]) == COST_KEYS
    assert set(d["environment"]) >= ENVIRONMENT_KEYS
    if not trained:
        assert d["training"] is None
        return
    training = d["training"]
    assert set(training) >= TRAINING_KEYS
    assert all(set(h) == HISTORY_KEYS for h in training["history"])
    assert all(set(h) == {"epoch", "layers"} for h in training["saturation_history"])


# ------------------------------------------------------------------------------- no training


def test_the_embedded_default_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./model.py here: the embedded default is used
    analysis = analyze(train=False)
    assert isinstance(analysis, Analysis) and analysis.run is None
    assert (analysis.source, analysis.dataset, analysis.resolution) == ("builtin:vgg", "digits", 16)
    net = spec_mod.load().create(num_classes=10, in_channels=1)
    rows = analysis.layers()
    assert [row.name for row in rows] == forward_order(net)
    # By hand for vgg(depth=8, downsamplings=3): stages of 2, 3, 3 convs (3×3), each followed
    # by a 2×2 pool: r += 2·j per conv, r += j and j *= 2 per pool.
    convs = rows[:-1]
    assert [row.r_min for row in convs] == [3, 5, 10, 14, 18, 28, 36, 44]
    assert rows[-1].r_min is None  # the classifier has no receptive field of its own
    # conv6 reads r_min 20 > 16 px: conv6–conv8 are unproductive; conv5 (18 > 16) is critical.
    assert [row.unproductive for row in convs] == [False] * 5 + [True] * 3
    assert [row.critical for row in convs] == [False] * 4 + [True] + [False] * 3
    assert all(row.saturation is None for row in rows)
    d = analysis.to_dict()
    check_schema(d, trained=False)
    assert d["layers"] == [row.to_dict() for row in rows]
    assert analysis.verdict and analysis.findings[0].predicted


def test_vgg16_at_32px_flags_conv8_to_conv13() -> None:
    analysis = analyze("vgg16", train=False, dataset="synthetic", resolution=32)
    unproductive = [row.name for row in analysis.layers() if row.unproductive]
    assert unproductive == [f"features.conv{i}" for i in range(8, 14)]
    tail = [f for f in analysis.findings if f.kind == "tail"]
    assert len(tail) == 1 and tail[0].predicted and list(tail[0].layers) == unproductive
    # vgg16 is a preset without a depth knob, and its code is not the user's: the efficiency
    # move is the vgg family's depth knob (the family builds VGG16's conv stack), not an edit.
    efficiency = [r for r in analysis.recommendations if r.kind == "efficiency"]
    assert len(efficiency) == 1 and efficiency[0].model == "vgg"
    move = efficiency[0]
    assert move.changes == {"depth": 7}
    assert (
        set_args(move.settings)
        == "--set depth=7 --set width=64 --set downsamplings=5 --set stages=5"
    )
    assert not any("in its code" in r.rationale for r in analysis.recommendations)
    # its cost: the changed family model, built and counted here, against the preset's MACs
    changed = spec_mod.load("vgg").create(num_classes=10, in_channels=3, **move.knobs)
    convs = [m for m in changed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 - len(unproductive)
    assert move.cost is not None
    assert move.cost.macs == count_macs(changed, in_channels=3, resolution=32)
    assert move.cost.macs_ratio == pytest.approx(move.cost.macs / analysis.macs)
    check_schema(analysis.to_dict(), trained=False)


def test_a_vgg16_shaped_family_member_gets_a_cheaper_efficiency_move() -> None:
    # vgg(depth=13, downsamplings=5) has VGG16's conv stack (2, 2, 3, 3, 3) and a depth knob.
    analysis = analyze(
        "vgg",
        knobs={"depth": 13, "downsamplings": 5},
        train=False,
        dataset="synthetic",
        resolution=32,
    )
    unproductive = [row.name for row in analysis.layers() if row.unproductive]
    assert unproductive == [f"features.conv{i}" for i in range(8, 14)]
    move = next(r for r in analysis.recommendations if r.kind == "efficiency")
    assert move.changes == {"depth": 7}
    assert move.unproductive_after is not None and move.unproductive_after < len(unproductive)
    assert move.cost is not None and move.cost.macs < analysis.macs
    # The cost is measured: rebuild the changed model and count it independently.
    changed = spec_mod.load("vgg").create(num_classes=10, in_channels=3, **move.knobs)
    assert move.cost.macs == count_macs(changed, in_channels=3, resolution=32)
    assert move.cost.macs_ratio == pytest.approx(move.cost.macs / analysis.macs)


# ------------------------------------------------------------------------------- training


def test_a_trained_analysis_of_a_model_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tiny_model.py", TINY_MODEL)
    analysis = analyze(str(path), config=QUICK, subset=161)
    run = analysis.run
    assert run is not None and run.status == "completed" and len(run.epochs) == 2
    assert (analysis.dataset, analysis.resolution) == ("digits", 8)  # the file's defaults
    assert [s.name for s in analysis.profile] == ["0", "3", "7"]  # forward order
    assert analysis.profile == run.saturation[-1]["train"]
    assert analysis.findings and analysis.verdict
    rows = analysis.layers()
    assert [row.saturation for row in rows] == [s.saturation for s in analysis.profile]
    assert all(row.r_min is not None for row in rows[:2])
    d = analysis.to_dict()
    check_schema(d, trained=True)
    training = d["training"]
    assert training["epochs"] == len(training["history"]) == 2
    assert [h["epoch"] for h in training["saturation_history"]] == [1, 2]
    assert training["macs"] == d["cost"]["macs"]  # the tracker's work is not counted
    assert training["accuracy"] == run.epochs[-1].eval_accuracy


def test_a_model_whose_forward_fails_in_training_is_a_one_line_build_error(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "fragile_model.py", FRAGILE_MODEL)
    with pytest.raises(ModelBuildError) as info:
        analyze(str(path), dataset="digits", config=QUICK, subset=40)
    message = str(info.value)
    assert "\n" not in message
    assert "fragile_model.py" in message and "boom in training" in message
    assert "second line" not in message


# ------------------------------------------------------------------------------- usage errors


def test_a_resolution_given_twice_must_agree(tmp_path: Path) -> None:
    path = write(tmp_path, "tiny_model.py", TINY_MODEL)
    with pytest.raises(UsageError, match="resolution given twice"):
        analyze(str(path), knobs={"resolution": 8}, resolution=12, train=False)
    same = analyze(str(path), knobs={"resolution": 12}, resolution=12, train=False)
    assert same.resolution == 12


def test_track_last_is_refused_with_auto_epochs_before_any_work(tmp_path: Path) -> None:
    path = write(tmp_path, "tiny_model.py", TINY_MODEL)
    with pytest.raises(UsageError, match="fixed number of epochs"):
        analyze(str(path), config=QUICK.replace(auto_epochs=True), track="last")
    with pytest.raises(UsageError, match="track must be"):
        analyze(str(path), train=False, track="sometimes")  # type: ignore[arg-type]


def test_reused_data_must_match_the_request(tmp_path: Path) -> None:
    path = write(tmp_path, "tiny_model.py", TINY_MODEL)
    loaded = data_mod.load("digits", resolution=12, subset=40, device="cpu")
    with pytest.raises(UsageError, match="12 px"):
        analyze(str(path), data=loaded, resolution=8, train=False)
    with pytest.raises(UsageError, match="synthetic"):
        analyze(str(path), data=loaded, dataset="synthetic", train=False)
    with pytest.raises(UsageError, match="full"):
        analyze(str(path), data=loaded, config=QUICK.replace(full=True), train=False)
    # Without a resolution of its own the analysis takes the data's, not the file's 8 px.
    analysis = analyze(str(path), data=loaded, config=QUICK.replace(epochs=1))
    assert analysis.resolution == 12
    assert analysis.run is not None and analysis.run.resolution == 12
