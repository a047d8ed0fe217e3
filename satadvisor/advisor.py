"""``analyze(spec, …) -> Analysis``: profile one architecture, explain it, recommend changes.

Shared by the CLI, the search and library users::

    from satadvisor import analyze
    result = analyze("examples/digits_cnn.py", config=TrainConfig(epochs=3))
    print(result.verdict)

:func:`analyze` returns an :class:`Analysis`, which holds live objects (the training run, the
receptive-field analysis) for library users. What crosses to the report and to
``analysis.json`` is its frozen, typed :class:`~satadvisor.analysis_record.AnalysisRecord`
(:meth:`Analysis.record`), which a loaded ``analysis.json`` becomes again with ``from_dict``.
"""

from __future__ import annotations

import copy
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from satadvisor import caveats, receptive, rules, trust
from satadvisor import spec as spec_mod
from satadvisor._env import environment, resolve_device
from satadvisor._flags import flag
from satadvisor.analysis_record import (
    SCHEMA,
    AnalysisRecord,
    LayerRow,
    ReceptiveFieldSummary,
    layer_rows,
    training_summary,
)
from satadvisor.config import TrainConfig
from satadvisor.cost import count_macs, count_parameters
from satadvisor.errors import ModelBuildError, SatAdvisorError, UsageError
from satadvisor.saturation import SaturationTracker
from satadvisor.train import EpochRecord, Progress, RunResult, Track, run, seeded

if TYPE_CHECKING:
    from satadvisor.data import DataBundle
    from satadvisor.spec import ModelSpec

__all__ = ["SCHEMA", "Analysis", "AnalysisRecord", "analyze", "build_model", "command_line"]

DEFAULT_DATASET = "digits"


@dataclass
class Analysis:
    """The result of :func:`analyze`: what was measured, what it means, what to change."""

    name: str
    model_name: str
    source: str
    knobs: dict[str, Any]
    dataset: str
    resolution: int
    num_classes: int
    in_channels: int
    macs: int
    params: int
    run: RunResult | None
    receptive_field: receptive.ReceptiveFieldAnalysis
    findings: list[rules.Finding]
    recommendations: list[rules.Recommendation]
    verdict: str
    seed: int
    command: str
    profile_phase: str = "train"
    environment: dict[str, Any] = field(default_factory=dict)
    settling: trust.Settling | None = None
    lead: tuple[str, ...] = ()

    @property
    def basis(self) -> str:
        """What the findings rest on: ``measured``, ``receptive_field``, or ``none``."""
        if not self.findings:
            return "none"
        return "receptive_field" if all(f.predicted for f in self.findings) else "measured"

    @property
    def learned(self) -> bool | None:
        """Whether the proxy learned (None: no training)."""
        return self.run.learned if self.run is not None else None

    @property
    def settled(self) -> bool | None:
        """Whether the measured profile settled (None: no training)."""
        return self.settling.settled if self.settling is not None else None

    @property
    def profile(self) -> list[Any]:
        """The per-layer saturation the rules read (last epoch, ``profile_phase``)."""
        return self.run.profile(self.profile_phase) if self.run is not None else []

    @property
    def tail(self) -> list[str]:
        for f in self.findings:
            if f.kind == "tail" and not f.predicted:
                return list(f.layers)
        return []

    def layers(self) -> tuple[LayerRow, ...]:
        """One row per tracked layer: the measured layers in forward order, then any the tracker
        did not see (e.g. never called), with the receptive field merged in."""
        return layer_rows(self.profile, self.receptive_field, set(self.tail))

    def record(self) -> AnalysisRecord:
        """The frozen, typed form of this analysis (what the report reads and
        ``analysis.json`` holds)."""
        rf = self.receptive_field
        return AnalysisRecord(
            name=self.name,
            command=self.command,
            seed=self.seed,
            model_name=self.model_name,
            model_source=self.source,
            knobs=dict(self.knobs),
            dataset=self.dataset,
            resolution=self.resolution,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            profile_phase=self.profile_phase,
            training=training_summary(self.run, self.settling),
            advice_basis=self.basis,
            macs=self.macs,
            params=self.params,
            layers=self.layers(),
            receptive_field=ReceptiveFieldSummary(
                supported=rf.supported,
                reason=rf.reason,
                feasible_range=rf.feasible_range,
                border_layer=rf.border_layer,
            ),
            findings=tuple(self.findings),
            recommendations=tuple(self.recommendations),
            verdict=self.verdict,
            lead=tuple(self.lead),
            environment=dict(self.environment),
        )

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable result: :meth:`record`'s dict (schema :data:`SCHEMA`)."""
        return self.record().to_dict()


def command_line() -> str:
    """The command that started this process, quoted so it can be pasted back."""
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("satadvisor", "__main__.py"):
        argv[0] = "satadvisor"
    return " ".join(shlex.quote(a) for a in argv)


def build_model(
    spec: ModelSpec, knobs: Mapping[str, Any], *, num_classes: int, in_channels: int
) -> nn.Module:
    """A fresh model for ``knobs``. ``resolution`` is dropped unless the model's builder takes
    it (a ViT's ``torchvision:`` spec: its position embedding is sized for the input)."""
    takes = "resolution" in spec.knobs
    model_knobs = {k: v for k, v in knobs.items() if k != "resolution" or takes}
    if spec.model is not None:
        if model_knobs:
            raise UsageError(
                f"{spec.source} defines a fixed `model`, so knobs cannot be set "
                f"({', '.join(model_knobs)}); define build_model(...) to make them adjustable"
            )
        return copy.deepcopy(spec.model)
    return spec.create(num_classes=num_classes, in_channels=in_channels, **model_knobs)


def _check_data(
    data: DataBundle, *, dataset: str | None, resolution: int | None, full: bool
) -> None:
    """UsageError when a reused ``data`` bundle is not what the other arguments ask for."""
    from satadvisor import data as data_mod

    if dataset is not None and data_mod.dataset_info(dataset).name != data.name:
        raise UsageError(
            f"the loaded data is {data.name!r} but dataset {dataset!r} was asked for; "
            "pass one of them"
        )
    if resolution is not None and data.resolution != resolution:
        raise UsageError(
            f"the loaded data is at {data.resolution} px but {resolution} px was asked for; "
            "load the data at that resolution"
        )
    if data.full != full:
        holds = "holds a test split" if data.full else "holds no test split"
        raise UsageError(
            f"the loaded data {holds} but config.full={full}; load the data with full={full}"
        )


def analyze(
    model: ModelSpec | str | os.PathLike[str] | None = None,
    *,
    knobs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    resolution: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    config: TrainConfig | None = None,
    train: bool = True,
    thresholds: rules.RuleThresholds | None = None,
    profile_phase: str = "train",
    name: str | None = None,
    data: DataBundle | None = None,
    subset: int | None = None,
    on_epoch: Callable[[EpochRecord], bool | None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    stop: Callable[[RunResult], str | None] | None = None,
    track: Track = "every",
) -> Analysis:
    """Profile one architecture: proxy training with saturation tracking + receptive fields.

    ``model`` is a :class:`~satadvisor.spec.ModelSpec`, a model-file path, a built-in name, or
    None (``./model.py`` when present, else the embedded default). ``knobs`` override the
    model's defaults and may hold ``resolution``. ``train=False`` does the receptive-field
    analysis only (seconds). ``data`` reuses an already loaded dataset (the search does this):
    its name and resolution are used, and a different ``dataset`` or ``resolution`` (or a
    ``config.full`` that does not match its split) is a :class:`UsageError`. ``on_epoch``,
    ``progress`` and ``stop`` are passed to :func:`satadvisor.train.run`, and so is ``track``:
    ``"last"`` measures the saturation in the last epoch only (the profile is the same kind of
    measurement at a fraction of the tracking cost, but nothing tells whether it settled; the
    search's full runs use it); it needs a fixed number of epochs (not ``config.auto_epochs``).
    """
    from satadvisor import data as data_mod

    spec = model if isinstance(model, spec_mod.ModelSpec) else spec_mod.load(model)
    config = config or TrainConfig()
    if profile_phase not in ("train", "eval"):
        raise UsageError(f"profile_phase must be 'train' or 'eval', got {profile_phase!r}")
    if track not in ("every", "last"):
        raise UsageError(f"track must be 'every' or 'last', got {track!r}")
    if track == "last" and train and config.auto_epochs:
        raise UsageError(
            "track='last' needs a fixed number of epochs; pass epochs=N or track='every'"
        )
    knobs = dict(knobs or {})
    if "resolution" in knobs:
        if resolution is not None and int(knobs["resolution"]) != resolution:
            raise UsageError("resolution given twice with different values; pass it once")
        resolution = int(knobs.pop("resolution"))
    if data is not None:
        _check_data(data, dataset=dataset, resolution=resolution, full=config.full)
        dataset, resolution = data.name, resolution or data.resolution
    dataset = dataset or spec.dataset or DEFAULT_DATASET
    info = data.info if data is not None else data_mod.dataset_info(dataset, data_dir=data_dir)
    resolution = resolution or spec.resolution or info.native_resolution
    resolved = {k: v for k, v in spec.resolve(knobs).items() if k != "resolution"}

    with seeded(config.seed, resolve_device(config.device)):  # the caller's RNGs untouched
        net = build_model(
            spec,
            {**resolved, "resolution": resolution},
            num_classes=info.num_classes,
            in_channels=info.in_channels,
        )
        spec_mod.check_output(
            net,
            num_classes=info.num_classes,
            in_channels=info.in_channels,
            resolution=resolution,
            source=spec.source,
        )
        rf = receptive.analyze(net, resolution, in_channels=info.in_channels)
        macs = count_macs(net, in_channels=info.in_channels, resolution=resolution)
        params = count_parameters(net)

    th = thresholds or rules.RuleThresholds()
    result: RunResult | None = None
    if train:
        if data is None:
            device = resolve_device(config.device)
            data = data_mod.load(
                dataset,
                resolution=resolution,
                data_dir=data_dir,
                download=download,
                full=config.full,
                val_fraction=config.val_fraction,
                seed=config.seed,
                device=device,
                subset=subset,
            )
        tracker = SaturationTracker(
            net,
            threshold=config.threshold,
            rows=config.positions,
            seed=config.seed,
        )
        until = _learned_and_settled(th, profile_phase) if config.auto_epochs else None
        with tracker:
            try:
                result = run(
                    net,
                    data,
                    config=config,
                    tracker=tracker,
                    on_epoch=on_epoch,
                    progress=progress,
                    until=until,
                    stop=stop,
                    track=track,
                )
            except (SatAdvisorError, KeyboardInterrupt, torch.cuda.OutOfMemoryError):
                raise
            except Exception as exc:  # the user's forward pass failed mid-training
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                at = first.find("can't allocate memory")
                if at >= 0:  # the host's memory ran out, not the model's code
                    raise ModelBuildError(
                        f"{spec.source}: out of memory while training ({first[at:]}); "
                        f"pass a smaller {flag('batch_size')} or {flag('resolution')}, or smaller knob "
                        "values"
                    ) from exc
                raise ModelBuildError(
                    f"{spec.source}: training failed with {type(exc).__name__}: {first}; "
                    f"fix the model's forward pass (rerun with {flag('debug')} for the traceback)"
                ) from exc

    settling = None
    profile = None
    if result is not None and result.saturation:
        settling = trust.settling(
            _history(result, profile_phase), pattern=lambda p: rules.pattern(p, thresholds=th)
        )
        if result.learned:  # a proxy that learned nothing carries no advice
            profile = result.profile(profile_phase)
    findings = rules.evaluate(
        profile,
        rf,
        thresholds=th,
        unsettled=settling.reason if settling is not None and profile else None,
    )
    recommendations = rules.recommend(
        findings,
        spec=spec,
        knobs=resolved,
        resolution=resolution,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        rf=rf,
        source_resolution=info.native_resolution,
    )
    lead = caveats.lead(result, settling, findings, spec=spec, config=config, data=data)
    return Analysis(
        name=name or spec.name,
        model_name=spec.name,
        source=spec.source,
        knobs=resolved,
        dataset=dataset,
        resolution=resolution,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        macs=macs,
        params=params,
        run=result,
        receptive_field=rf,
        findings=findings,
        recommendations=recommendations,
        verdict=rules.verdict(findings, recommendations, lead=lead),
        seed=config.seed,
        command=command_line(),
        profile_phase=profile_phase,
        environment=environment(config.device),
        settling=settling,
        lead=tuple(lead),
    )


def _history(result: RunResult, phase: str) -> list[list[Any]]:
    return [ep.get(phase, []) for ep in result.saturation]


def _learned_and_settled(th: rules.RuleThresholds, phase: str) -> Callable[[RunResult], bool]:
    """``--epochs auto``'s stop rule: the proxy learned and its profile settled."""

    def done(result: RunResult) -> bool:
        if not result.learned or len(result.saturation) < 2:
            return False
        history = _history(result, phase)
        return trust.settling(history, pattern=lambda p: rules.pattern(p, thresholds=th)).settled

    return done
