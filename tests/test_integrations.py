"""Saturation in a user's own loop: the Lightning callback and the TensorBoard writer, each with
the real library on a tiny model, against a NumPy computation from the layers' own outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from satadvisor.integrations import SaturationWatch
from satadvisor.saturation import LayerSaturation


def _numpy_saturation(rows: np.ndarray, threshold: float = 0.99) -> float:
    """Share of eigen-directions of the (population) covariance needed for ``threshold`` of the
    variance: the definition, computed directly."""
    cov = np.cov(rows, rowvar=False, bias=True)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    eig = np.clip(eig, 0, None)
    share = np.cumsum(eig) / eig.sum()
    k = int(np.searchsorted(share, threshold - 1e-12) + 1)
    return k / rows.shape[1]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(24, 5),
    )  # fmt: skip


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


class _Rows:
    """Every training-mode output of a module, as rows (N·H·W, C) — a plain forward hook."""

    def __init__(self, module: nn.Module) -> None:
        self.rows: list[np.ndarray] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, out: torch.Tensor) -> None:
        if module.training:
            y = out.detach().double()
            if y.dim() == 4:
                y = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
            self.rows.append(y.numpy())

    def take(self) -> np.ndarray:
        out, self.rows = np.concatenate(self.rows), []
        return out


def test_watch_reads_tail_and_settling_like_analyze() -> None:
    def profile(values: list[float]) -> list[LayerSaturation]:
        return [
            LayerSaturation(f"c{i}", "Conv2d", 64, 1000, v, int(v * 64))
            for i, v in enumerate(values, 1)
        ]

    watch = SaturationWatch()
    first = watch.update(profile([0.6, 0.5, 0.4, 0.05, 0.04]))
    assert first.epoch == 1 and first.settled is False and first.max_change is None
    assert first.tail == ("c4", "c5")
    second = watch.update(profile([0.61, 0.5, 0.41, 0.05, 0.04]))
    assert second.settled is True and second.max_change == pytest.approx(0.01)
    moved = watch.update(profile([0.7, 0.5, 0.41, 0.05, 0.04]))
    assert moved.settled is False  # 0.09 > the 0.03 tolerance
    assert moved.scalars()["saturation/tail_length"] == 2.0


def test_tensorboard_writer_logs_what_numpy_computes(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from satadvisor.integrations.tensorboard import SaturationWriter

    net = _net()
    x, y = _data()
    rows = _Rows(net[0])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    expected = []
    with SaturationWriter(net, str(tmp_path / "tb")) as sat:
        for epoch in range(3):
            for i in range(0, len(x), 32):
                loss = nn.functional.cross_entropy(net(x[i : i + 32]), y[i : i + 32])
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            net(x[:8])  # evaluation passes are not training statistics
            net.train()
            expected.append(_numpy_saturation(rows.take()))
            sat.log_epoch(epoch)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = [e.value for e in events.Scalars("saturation/0")]
    assert logged == pytest.approx(expected, abs=1e-6)
    assert [e.step for e in events.Scalars("saturation/0")] == [0, 1, 2]
    assert {"saturation/4", "saturation/tail_length", "saturation/settled"} <= set(
        events.Tags()["scalars"]
    )
    # the tracker's hook is gone afterwards: only the test's own is left
    assert len(net[0]._forward_hooks) == 1


def test_lightning_callback_logs_each_epoch_through_the_trainers_logger(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")
    import csv

    from satadvisor.integrations.lightning import SaturationCallback

    class Module(lightning.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, index: int) -> None:
            self(batch[0])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=32)
    module = Module()
    rows = _Rows(module.net[0])
    expected: list[float] = []

    class Collect(lightning.Callback):  # type: ignore[misc,name-defined]
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            expected.append(_numpy_saturation(rows.take()))

    callback = SaturationCallback()
    logger = lightning.pytorch.loggers.CSVLogger(str(tmp_path), name="run")
    trainer = lightning.Trainer(
        max_epochs=3,
        accelerator="cpu",
        callbacks=[Collect(), callback],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=2,
    )
    trainer.fit(module, loader, loader)
    assert [s.epoch for s in callback.states] == [1, 2, 3]
    assert [s.profile[0].saturation for s in callback.states] == pytest.approx(expected, abs=1e-6)
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        logged = [float(r["saturation/net.0"]) for r in csv.DictReader(f) if r["saturation/net.0"]]
    assert logged == pytest.approx(expected, abs=1e-6)
    assert callback.tracker is None  # closed at the end of fit: no hooks left on the module


def test_public_names_are_listed_and_a_report_is_one_call(tmp_path: Path) -> None:
    import satadvisor

    public = [n for n in dir(satadvisor) if not n.startswith("_")]
    assert public == sorted(n for n in satadvisor.__all__ if not n.startswith("_"))
    assert {"analyze", "optimize", "write_report", "SaturationTracker"} <= set(public)
    for name in public:  # every listed name resolves
        assert getattr(satadvisor, name) is not None
    analysis = satadvisor.analyze("vgg", train=False)  # receptive fields only: seconds
    index = satadvisor.write_report(analysis, tmp_path / "r")
    assert index == tmp_path / "r" / "index.html" and index.is_file()
    assert (tmp_path / "r" / "analysis.json").is_file()
    with pytest.raises(satadvisor.SatAdvisorError, match="cannot write a report of int"):
        satadvisor.write_report(3, tmp_path / "x")
    assert not (tmp_path / "x").exists()
