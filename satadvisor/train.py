"""One plain training loop for proxy and full runs (nanoGPT style: no framework, no callbacks maze).

``run(model, data, config=…, tracker=…)`` trains, evaluates the validation split after every
epoch, reads the saturation tracker at every epoch end, tests whether the run learned (see
:mod:`satadvisor.trust`), evaluates a full run's test split once at the end, and returns a
:class:`RunResult` — also when the loss diverges (status ``"diverged"``), the run learned
nothing (``"not_learned"``) or the epoch callback asks to stop (``"pruned"``).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from satadvisor._env import device_name, resolve_device, versions
from satadvisor.config import TrainConfig
from satadvisor.cost import count_macs, count_parameters
from satadvisor.errors import UsageError
from satadvisor.saturation._result import LayerSaturation
from satadvisor.trust import Learning, learning

if TYPE_CHECKING:
    from satadvisor.data import DataBundle, Split
    from satadvisor.saturation import SaturationTracker

Status = Literal["completed", "not_learned", "diverged", "pruned", "failed"]
#: Which epochs' saturation a run measures: every epoch, or the last one only (a full run
#: whose profile is all that is read; the tracker's hooks then record nothing before it).
Track = Literal["every", "last"]
TRACKS: tuple[Track, ...] = ("every", "last")
PHASES = ("train", "eval")


@dataclass(frozen=True)
class EpochRecord:
    """Losses (mean cross-entropy) and accuracies (fractions in [0, 1]) of one epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    eval_loss: float
    eval_accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class Progress:
    """Passed to the progress callback after every training step."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None


@dataclass
class RunResult:
    """Everything one training run measured. ``saturation[e][phase]`` is epoch e's profile."""

    status: Status
    dataset: str
    resolution: int
    eval_name: str
    seed: int
    config: dict[str, Any]
    params: int
    macs: int
    epochs: list[EpochRecord] = field(default_factory=list)
    saturation: list[dict[str, list[LayerSaturation]]] = field(default_factory=list)
    test_accuracy: float | None = None
    wall_time: float = 0.0
    images_per_second: float = 0.0
    device: str = "cpu"
    device_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    initial_loss: float | None = None  # mean loss of the first steps (see run)
    learning: Learning | None = None

    @property
    def accuracy(self) -> float | None:
        """Final validation accuracy (the split held out of the training set; never the test set)."""
        return self.epochs[-1].eval_accuracy if self.epochs else None

    @property
    def learned(self) -> bool:
        """True when the run's accuracy is significantly above the majority-class rate and its
        training loss fell (see :mod:`satadvisor.trust`)."""
        return self.learning is not None and self.learning.learned

    def profile(self, phase: str = "train", epoch: int = -1) -> list[LayerSaturation]:
        """The per-layer saturation of one epoch (default: the last measured one)."""
        if not self.saturation:
            return []
        return self.saturation[epoch].get(phase, [])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epochs"] = [asdict(e) for e in self.epochs]
        d["learning"] = self.learning.to_dict() if self.learning is not None else None
        d["saturation"] = [
            {phase: [layer.to_dict() for layer in layers] for phase, layers in ep.items()}
            for ep in self.saturation
        ]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        d = dict(d)
        d["epochs"] = [EpochRecord(**e) for e in d.get("epochs", [])]
        d["learning"] = Learning.from_dict(d["learning"]) if d.get("learning") else None
        d["saturation"] = [
            {phase: [LayerSaturation.from_dict(x) for x in layers] for phase, layers in ep.items()}
            for ep in d.get("saturation", [])
        ]
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls.from_dict(json.loads(text))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a rerun reproduces the run.

    This changes the process's global RNG states on purpose (for scripts and benchmarks);
    the library itself uses :func:`seeded`, which puts the caller's states back.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def rng_scope(device: torch.device | str = "cpu") -> Iterator[None]:
    """Draws from the global RNGs inside the block leave the caller's streams undisturbed.

    Python's, NumPy's and torch's CPU generator states, and the generator of ``device`` when
    it is an accelerator, are saved on entry and restored on exit (``torch.random.fork_rng``
    for torch), so weight initialisation and dropout of our own runs do not move a user's
    ``torch.manual_seed`` stream.
    """
    device = torch.device(device)
    py_state, np_state = random.getstate(), np.random.get_state()
    accelerator = device.type not in ("cpu", "meta")
    try:
        # (device_type only for an accelerator: older torch has "cuda" as its default, not None)
        forked: dict[str, Any] = (
            {"devices": [device], "device_type": device.type} if accelerator else {"devices": []}
        )
        with torch.random.fork_rng(**forked):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _seed_globals(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy, torch's CPU generator and ``device``'s generator (only those)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type not in ("cpu", "meta"):
        module = torch.get_device_module(device.type)
        module.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with the global RNGs seeded with ``seed`` (weight initialisation,
    dropout: a rerun reproduces it) inside a :func:`rng_scope`: the caller's RNG states are
    what they were once the block ends."""
    device = torch.device(device)
    with rng_scope(device):
        _seed_globals(seed, device)
        yield


def _make_optimizer(
    model: nn.Module, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda _: 1.0
        )
    else:
        opt = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
        # Cosine decay per step to zero over the run: short proxy runs still end converged.
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
    return opt, sched


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _evaluate(
    model: nn.Module, split: Split, *, config: TrainConfig, device: torch.device
) -> tuple[float, float]:
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    with torch.no_grad():
        for x, y in split.batches(config.batch_size, shuffle=False, augment=False, seed=0):
            x, y = _to_device(x, y, config, device)
            with _autocast(device, config.amp):
                out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            n += y.numel()
    # One host synchronisation per evaluation, not per batch.
    return float(loss_sum) / max(n, 1), float(correct) / max(n, 1)


def _to_device(
    x: torch.Tensor, y: torch.Tensor, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the model's device (a no-op when the data already lives there), NHWC on CUDA."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if config.channels_last and device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _train_steps(images: int, batch_size: int) -> int:
    """Optimizer steps of one epoch: every batch but a trailing batch of a single image.

    A last batch of one image breaks BatchNorm's batch statistics, so it is skipped; with
    ``batch_size == 1`` every batch has one image and none is skipped.
    """
    steps = math.ceil(images / batch_size)
    if batch_size > 1 and images % batch_size == 1:
        steps -= 1
    return steps


def _check_split(data: DataBundle, config: TrainConfig) -> None:
    if data.full != config.full:
        kind = "full" if config.full else "proxy"
        holds = "holds a test split" if data.full else "holds no test split"
        raise UsageError(
            f"a {kind} run (full={config.full}) needs data loaded with full={config.full}, "
            f"but the data {holds}; load the data with full={config.full}"
        )


def majority_rate(split: Split) -> float:
    """The share of the most frequent class in ``split``: what a constant guess scores."""
    labels = split.labels
    if labels.numel() == 0:
        return 1.0
    return float(torch.bincount(labels).max()) / labels.numel()


def _read_saturation(
    tracker: SaturationTracker | None, epoch: int
) -> tuple[dict[str, list[LayerSaturation]] | None, str | None]:
    """The epoch's saturation of both phases (then the tracker is reset), or why it cannot be
    measured: activations so large or non-finite that the eigen-solver fails on their
    covariance (or yields no finite saturation) while the loss stayed finite — the run
    diverged; the model's forward pass is not at fault."""
    if tracker is None:
        return None, None
    try:
        saturation = {phase: tracker.compute(phase) for phase in PHASES}
    except torch.linalg.LinAlgError:
        return None, (
            f"layer activations diverged in epoch {epoch} (too large or not finite: the "
            "saturation's eigen-solver failed on their covariance)"
        )
    tracker.reset()
    bad = [s.name for ss in saturation.values() for s in ss if not math.isfinite(s.saturation)]
    if bad:
        return None, (
            f"layer activations diverged in epoch {epoch} (too large or not finite: no finite "
            f"saturation for {bad[0]})"
        )
    return saturation, None


def run(
    model: nn.Module,
    data: DataBundle,
    *,
    config: TrainConfig | None = None,
    tracker: SaturationTracker | None = None,
    on_epoch: Callable[[EpochRecord], bool | None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    until: Callable[[RunResult], bool] | None = None,
    stop: Callable[[RunResult], str | None] | None = None,
    track: Track = "every",
) -> RunResult:
    """Train ``model`` on ``data`` and return what was measured.

    ``tracker`` (already attached to ``model``) is read with ``compute("train")`` and
    ``compute("eval")`` and reset at the end of every epoch. ``on_epoch`` is called after each
    epoch's evaluation; returning True stops the run with status ``"pruned"``. ``progress`` is
    called after every optimizer step (the CLI draws a bar with it; the library prints
    nothing). A non-finite training or evaluation loss ends the run with status
    ``"diverged"``; the epochs measured before are kept. ``until`` is called with the result
    so far after every epoch (``config.auto_epochs``: ``config.epochs`` is then a cap);
    returning True ends the run early as finished. ``stop`` is called with the result so far
    after every epoch too; a reason (a string) ends the run with status ``"pruned"`` and that
    reason (the search's pruner reads the saturation history this way). A run that finishes
    without learning (see :mod:`satadvisor.trust`) ends with status ``"not_learned"``. The
    global RNGs are seeded with ``config.seed`` first (dropout), so the same seed and model
    reproduce a run on one device, and the caller's RNG states are put back afterwards
    (:func:`rng_scope`). ``config.full`` must match the data (full runs carry a test split,
    evaluated once at the end into ``test_accuracy``; every run's ``accuracy`` is validation
    accuracy). ``track="last"`` measures saturation in the last epoch only (the tracker records
    nothing before it: a fraction of the cost when only the final profile is read; it needs a
    fixed number of epochs, so not with ``until``); training itself is the same either way.
    """
    config = config or TrainConfig()
    if track not in TRACKS:
        raise UsageError(f"track={track!r} must be one of {', '.join(TRACKS)}")
    if track == "last" and until is not None:
        raise UsageError(
            "track='last' needs a fixed number of epochs; pass track='every' with until"
        )
    with rng_scope(resolve_device(config.device)):
        return _train(
            model,
            data,
            config=config,
            tracker=tracker,
            on_epoch=on_epoch,
            progress=progress,
            until=until,
            stop=stop,
            track=track,
        )


def _train(
    model: nn.Module,
    data: DataBundle,
    *,
    config: TrainConfig,
    tracker: SaturationTracker | None = None,
    on_epoch: Callable[[EpochRecord], bool | None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    until: Callable[[RunResult], bool] | None = None,
    stop: Callable[[RunResult], str | None] | None = None,
    track: Track = "every",
) -> RunResult:
    """The body of :func:`run`, inside its RNG scope."""
    try:
        return _train_epochs(
            model,
            data,
            config=config,
            tracker=tracker,
            on_epoch=on_epoch,
            progress=progress,
            until=until,
            stop=stop,
            track=track,
        )
    finally:
        if tracker is not None:
            tracker.enabled = True


def _train_epochs(
    model: nn.Module,
    data: DataBundle,
    *,
    config: TrainConfig,
    tracker: SaturationTracker | None,
    on_epoch: Callable[[EpochRecord], bool | None] | None,
    progress: Callable[[Progress], None] | None,
    until: Callable[[RunResult], bool] | None,
    stop: Callable[[RunResult], str | None] | None,
    track: Track,
) -> RunResult:
    """The epochs of :func:`run` (``tracker.enabled`` is put back by the caller)."""
    _check_split(data, config)
    device = resolve_device(config.device)
    model.to(device)
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    result = RunResult(
        status="completed",
        dataset=data.name,
        resolution=data.resolution,
        eval_name=data.eval_name,
        seed=config.seed,
        config=config.to_dict(),
        params=count_parameters(model),
        macs=count_macs(model, in_channels=data.in_channels, resolution=data.resolution),
        device=str(device),
        device_name=device_name(device),
        versions=versions(),
    )
    if tracker is not None:
        tracker.reset()  # the cost measurement's dry forward is not data

    steps_per_epoch = _train_steps(len(data.train), config.batch_size)
    optimizer, scheduler = _make_optimizer(model, config, max(1, config.epochs * steps_per_epoch))
    _seed_globals(config.seed, device)  # dropout and other global-RNG draws of the model
    # The initial loss is the mean over the first 5 % of the first epoch's steps (1 to 20):
    # one batch alone is too noisy to tell a flat loss from a falling one.
    first_steps = max(1, min(20, steps_per_epoch // 20))
    first_loss = torch.zeros((), device=device, dtype=torch.float64)
    majority, eval_images = majority_rate(data.eval), len(data.eval)
    started = time.perf_counter()
    train_seconds = 0.0
    images = 0
    for epoch in range(config.epochs):
        measured = tracker if track == "every" or epoch == config.epochs - 1 else None
        if tracker is not None:
            tracker.enabled = measured is not None
        epoch_start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        n = 0
        lr = optimizer.param_groups[0]["lr"]
        batches = data.train.batches(
            config.batch_size,
            shuffle=True,
            augment=config.augment,
            seed=config.seed * 100_003 + epoch,
        )
        for step, (x, y) in enumerate(batches):
            if step >= steps_per_epoch:
                break  # the trailing single image (see _train_steps)
            x, y = _to_device(x, y, config, device)
            with _autocast(device, config.amp):
                out = model(x)
                loss = F.cross_entropy(out.float(), y)
            if epoch == 0 and step < first_steps:  # the untrained network's loss
                first_loss += loss.detach().double()
                if step == first_steps - 1:  # one host synchronisation per run
                    result.initial_loss = float(first_loss) / first_steps
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().double() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            n += y.numel()
            if progress is not None:
                progress(Progress(epoch + 1, config.epochs, step + 1, steps_per_epoch))
        train_loss = float(loss_sum) / max(n, 1)
        train_seconds += time.perf_counter() - epoch_start
        images += n
        if not math.isfinite(train_loss):
            result.status = "diverged"
            result.reason = f"training loss became {train_loss} in epoch {epoch + 1}"
            break
        eval_loss, eval_acc = _evaluate(model, data.eval, config=config, device=device)
        if not math.isfinite(eval_loss):
            result.status = "diverged"
            result.reason = f"{data.eval_name} loss became {eval_loss} in epoch {epoch + 1}"
            break
        saturation, unmeasurable = _read_saturation(measured, epoch + 1)
        if unmeasurable is not None:
            result.status = "diverged"
            result.reason = unmeasurable
            break
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_accuracy=float(correct) / max(n, 1),
            eval_loss=eval_loss,
            eval_accuracy=eval_acc,
            lr=lr,
            seconds=time.perf_counter() - epoch_start,
        )
        result.epochs.append(record)
        # The learned test of the run so far: what --epochs auto's stop rule and the final
        # status read (a binomial tail and two comparisons; no device work).
        result.learning = learning(
            accuracy=eval_acc,
            eval_images=eval_images,
            majority_rate=majority,
            initial_loss=result.initial_loss,
            final_loss=train_loss,
        )
        if saturation is not None:
            result.saturation.append(saturation)
        if on_epoch is not None and on_epoch(record):
            result.status = "pruned"
            result.reason = f"stopped by the epoch callback after epoch {epoch + 1}"
            break
        why = stop(result) if stop is not None else None
        if why is not None:
            result.status = "pruned"
            result.reason = why
            break
        if until is not None and until(result):
            break

    if result.status == "completed" and result.learning is not None and not result.learned:
        result.status = "not_learned"
        result.reason = result.learning.reason
    if data.test is not None and result.status in ("completed", "not_learned"):
        # The test split is evaluated once, for reporting; nothing is chosen by it.
        result.test_accuracy = _evaluate(model, data.test, config=config, device=device)[1]
    result.wall_time = time.perf_counter() - started
    result.images_per_second = images / train_seconds if train_seconds > 0 else 0.0
    return result
