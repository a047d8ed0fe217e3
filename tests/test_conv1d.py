"""Conv1d models over (N, C, T) signals: receptive fields, saturation, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from satadvisor import receptive, spec
from satadvisor.saturation import SaturationTracker

pytestmark = pytest.mark.usefixtures("one_thread")


def net1d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2),  # r 5, j 1
        nn.ReLU(),
        nn.MaxPool1d(2),  # r 6, j 2
        nn.Conv1d(8, 8, 3, padding=2, dilation=2),  # k_eff 5: r 6 + 4·2 = 14, j 2
        nn.Conv1d(8, 8, 3, stride=2, padding=1),  # r 14 + 2·2 = 18, j 4
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def test_receptive_fields_of_a_conv1d_net_match_a_hand_count() -> None:
    rf = receptive.analyze(net1d(), 64, in_channels=2)
    assert rf.supported
    by = rf.by_name()
    assert [(by[n].r_min, by[n].jump) for n in ("0", "3", "4")] == [(5, 1), (14, 2), (18, 4)]
    assert [by[n].input_r_min for n in ("0", "3", "4")] == [1, 6, 14]
    assert [by[n].input_size for n in ("0", "3", "4")] == [64, 32, 32]
    assert not rf.unproductive
    # At 16 samples conv '4' reads r_min 14 (fine) but at 13 its inputs see more than the
    # signal: the r_min rule's bound is 14; the size rule: conv '3' reads I/2 samples, which
    # must exceed k_eff 5, so I/2 >= 6 -> I >= 12. Lower bound: 14.
    assert receptive.smallest_productive_resolution(net1d(), in_channels=2) == 14
    assert rf.feasible_range == (14, 18)
    at13 = receptive.analyze(net1d(), 13, in_channels=2, feasible_range=False)
    assert at13.unproductive == ["4"]


def test_spatial_dims_is_read_from_the_model_and_can_be_given() -> None:
    assert receptive.spatial_dims(net1d()) == 1
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(2 * 10, 3))
    rf = receptive.analyze(mlp, 10, in_channels=2, spatial_dims=1)
    assert rf.supported and [x.module_type for x in rf.layers] == ["Linear"]


def test_check_output_feeds_signals_to_a_conv1d_model() -> None:
    spec.check_output(net1d(), num_classes=3, in_channels=2, resolution=20, source="m.py")


def test_saturation_of_a_conv1d_layer_matches_numpy() -> None:
    torch.manual_seed(0)
    model = net1d()
    x = torch.randn(16, 2, 32)
    with SaturationTracker(model, threshold=0.99) as tracker:
        model(x)
    conv = model[3]
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    model(x)
    handle.remove()
    rows = captured[0].permute(0, 2, 1).reshape(-1, 8).double().numpy()  # (B·T, C)
    eig = np.sort(np.linalg.eigvalsh(np.cov(rows, rowvar=False, bias=True)))[::-1]
    k = int(np.searchsorted(np.cumsum(eig) / eig.sum(), 0.99) + 1)
    layer = next(s for s in tracker.compute("train") if s.name == "3")
    assert layer.width == 8 and layer.intrinsic_dimension == k
    assert layer.samples == rows.shape[0]


MODEL_1D = """
from torch import nn

def build_model(depth: int = 3, kernel_size: int = 5, width: int = 8, *, num_classes, in_channels):
    layers, c = [], in_channels
    for i in range(depth):
        layers += [nn.Conv1d(c, width, kernel_size, padding=kernel_size // 2, stride=2 if i else 1),
                   nn.BatchNorm1d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, num_classes))
"""


def test_analyze_a_conv1d_model_on_an_npz_signal_set(tmp_path: Path) -> None:
    from satadvisor import analyze
    from satadvisor.config import TrainConfig
    from satadvisor.data.sources import make_synthetic_1d

    raw = make_synthetic_1d()
    x, y = raw.images.numpy()[:400], raw.labels.numpy()[:400]
    np.savez(tmp_path / "sig.npz", x=x, y=y)
    (tmp_path / "model1d.py").write_text(MODEL_1D)
    result = analyze(
        str(tmp_path / "model1d.py"),
        dataset=f"npz:{tmp_path / 'sig.npz'}",
        config=TrainConfig(epochs=1, device="cpu", batch_size=64),
    )
    assert result.resolution == 64 and result.in_channels == 2
    names = [row.name for row in result.layers() if row.saturation is not None]
    assert names == ["0", "3", "6", "11"]
    r_min = {row.name: row.r_min for row in result.layers()}
    assert (r_min["0"], r_min["3"], r_min["6"]) == (5, 9, 17)  # k 5; +4·1; +4·2
