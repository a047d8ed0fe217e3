"""The persisted, typed form of one analysis: what ``analysis.json`` holds, and what the report reads.

:func:`satadvisor.analyze` returns an :class:`~satadvisor.advisor.Analysis`: live objects (the
training run, the receptive-field analysis) for library users. What crosses to the report, and
to disk, is its :class:`AnalysisRecord` (``Analysis.record()``): frozen records that hold only
plain values, each with one ``to_dict`` (the JSON form) and one ``from_dict`` (its inverse:
``R.from_dict(r.to_dict()) == r``), under the one schema constant :data:`SCHEMA`. The keys are
documented in :mod:`satadvisor.report`'s docstring.

- :class:`LayerRow` — one tracked layer: measured saturation and receptive field, merged.
- :class:`TrainingSummary` — the proxy run (null with no training), with its
  :class:`SaturationEpoch` history and :class:`Tracking` (how the saturation was read).
- :class:`ReceptiveFieldSummary` — whether the receptive field could be traced, its range.
- :class:`AnalysisRecord` — the analysis, with its findings and recommendations as
  :class:`~satadvisor.rules.Finding` and :class:`~satadvisor.rules.Recommendation`.

:func:`layer_rows`, :func:`training_summary` and :func:`tracking_summary` build the records
from the live objects of an analysis (what ``Analysis.record()`` calls).

``analysis.json`` also holds, per recommendation, ``set_args`` and ``command``: the change
rendered as command-line arguments (by ``Recommendation.to_dict``) and as the whole command that
tries it (by the report, :func:`satadvisor.report.with_commands`). Both are derived from the
record, so :meth:`AnalysisRecord.from_dict` reads past them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from satadvisor import receptive, rules, trust
from satadvisor.errors import UsageError
from satadvisor.train import EpochRecord, RunResult

SCHEMA = "satadvisor.analysis/2"
"""The schema of :meth:`AnalysisRecord.to_dict` (``analysis.json``)."""

#: Keys of a recommendation in ``analysis.json`` that the report derives from the record.
RENDERED_KEYS = ("command",)


@dataclass(frozen=True)
class LayerRow:
    """One tracked layer in forward order: its saturation (None: not measured) and receptive
    field in px (None: none of its own, e.g. a Linear layer). ``label`` is what verdicts,
    terminal and page call it; ``tail`` marks the measured tail."""

    name: str
    label: str
    type: str
    width: int | None = None
    saturation: float | None = None
    saturation_se: float | None = None
    intrinsic_dimension: int | None = None
    samples: int | None = None
    r_min: int | None = None
    r_max: int | None = None
    unproductive: bool = False
    critical: bool = False
    tail: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerRow:
        # a row written before labels existed is called by its name
        return cls(**{**d, "label": str(d.get("label") or d["name"])})


@dataclass(frozen=True)
class SaturationEpoch:
    """The saturation of every measured layer (name -> fraction) after one epoch (1-based)."""

    epoch: int
    layers: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "layers": dict(self.layers)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SaturationEpoch:
        return cls(int(d["epoch"]), dict(d["layers"]))


@dataclass(frozen=True)
class Tracking:
    """How the saturation was read: the positions option, the rows per batch and layer, the
    batch groups behind each standard error, the rules' z, and (``auto`` only) the error
    against every position that the default sample was measured to stay within."""

    positions: str | int
    rows_per_batch: str
    groups: int
    z: float
    stated_error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stated_error"] = dict(self.stated_error) if self.stated_error is not None else None
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tracking:
        return cls(**d)


@dataclass(frozen=True)
class TrainingSummary:
    """The proxy run: status, whether it learned and settled, accuracy, cost, time, history."""

    status: str
    reason: str | None
    epochs: int
    auto_epochs: bool
    max_epochs: int | None
    learned: bool
    settled: bool
    settled_epoch: int | None
    learning: trust.Learning | None
    settling: trust.Settling | None
    eval_name: str
    accuracy: float | None
    test_accuracy: float | None
    params: int
    macs: int
    wall_time: float
    images_per_second: float
    device: str
    history: tuple[EpochRecord, ...]
    saturation_history: tuple[SaturationEpoch, ...]
    tracking: Tracking

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["learning"] = self.learning.to_dict() if self.learning is not None else None
        out["settling"] = self.settling.to_dict() if self.settling is not None else None
        out["history"] = [dataclasses.asdict(e) for e in self.history]
        out["saturation_history"] = [e.to_dict() for e in self.saturation_history]
        out["tracking"] = self.tracking.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingSummary:
        learning, settling = d.get("learning"), d.get("settling")
        return cls(
            **{
                **d,
                "learning": trust.Learning.from_dict(learning) if learning else None,
                "settling": trust.Settling.from_dict(settling) if settling else None,
                "history": tuple(EpochRecord(**e) for e in d["history"]),
                "saturation_history": tuple(
                    SaturationEpoch.from_dict(e) for e in d["saturation_history"]
                ),
                "tracking": Tracking.from_dict(d["tracking"]),
            }
        )


@dataclass(frozen=True)
class ReceptiveFieldSummary:
    """Whether the receptive field could be traced (``reason``: why not), the feasible input
    range in px (an inverted range: no size is both fully used and fully seen), and the first
    unproductive layer."""

    supported: bool
    reason: str | None = None
    feasible_range: tuple[int, int] | None = None
    border_layer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "supported": self.supported,
            "reason": self.reason,
            "feasible_range": list(self.feasible_range) if self.feasible_range else None,
            "border_layer": self.border_layer,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReceptiveFieldSummary:
        rng = d.get("feasible_range")
        return cls(
            supported=bool(d["supported"]),
            reason=d.get("reason"),
            feasible_range=(int(rng[0]), int(rng[1])) if rng else None,
            border_layer=d.get("border_layer"),
        )


@dataclass(frozen=True)
class AnalysisRecord:
    """One analysis as ``analysis.json`` holds it (schema :data:`SCHEMA`)."""

    name: str
    command: str
    seed: int
    model_name: str
    model_source: str
    knobs: dict[str, Any]
    dataset: str
    resolution: int
    num_classes: int
    in_channels: int
    profile_phase: str
    training: TrainingSummary | None
    advice_basis: str
    macs: int
    params: int
    layers: tuple[LayerRow, ...]
    receptive_field: ReceptiveFieldSummary
    findings: tuple[rules.Finding, ...]
    recommendations: tuple[rules.Recommendation, ...]
    verdict: str
    lead: tuple[str, ...] = ()
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def learned(self) -> bool | None:
        """Whether the proxy learned (None: no training)."""
        return self.training.learned if self.training is not None else None

    def row(self, name: str | None) -> LayerRow | None:
        """The row of layer ``name``, or None."""
        return next((r for r in self.layers if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``analysis.json`` without the report's rendered command lines)."""
        return {
            "schema": SCHEMA,
            "name": self.name,
            "command": self.command,
            "seed": self.seed,
            "model": {"name": self.model_name, "source": self.model_source},
            "knobs": dict(self.knobs),
            "dataset": self.dataset,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "profile_phase": self.profile_phase,
            "training": self.training.to_dict() if self.training is not None else None,
            "advice_basis": self.advice_basis,
            "cost": {"macs": self.macs, "params": self.params},
            "layers": [row.to_dict() for row in self.layers],
            "receptive_field": self.receptive_field.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "verdict": self.verdict,
            "lead": list(self.lead),
            "environment": dict(self.environment),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnalysisRecord:
        """The record of an ``analysis.json`` dict. A dict of another schema, or one that does
        not hold what the schema says, is a one-line :class:`~satadvisor.errors.UsageError`."""
        schema = d.get("schema") if isinstance(d, Mapping) else None
        if schema != SCHEMA:
            raise UsageError(
                f"analysis schema {schema!r} is not supported (expected {SCHEMA!r}); "
                "re-run satadvisor analyze with this version"
            )
        try:
            training = d["training"]
            return cls(
                name=str(d["name"]),
                command=str(d["command"]),
                seed=int(d["seed"]),
                model_name=str(d["model"]["name"]),
                model_source=str(d["model"]["source"]),
                knobs=dict(d["knobs"]),
                dataset=str(d["dataset"]),
                resolution=int(d["resolution"]),
                num_classes=int(d["num_classes"]),
                in_channels=int(d["in_channels"]),
                profile_phase=str(d["profile_phase"]),
                training=TrainingSummary.from_dict(training) if training is not None else None,
                advice_basis=str(d["advice_basis"]),
                macs=int(d["cost"]["macs"]),
                params=int(d["cost"]["params"]),
                layers=tuple(LayerRow.from_dict(row) for row in d["layers"]),
                receptive_field=ReceptiveFieldSummary.from_dict(d["receptive_field"]),
                findings=tuple(rules.Finding.from_dict(f) for f in d["findings"]),
                recommendations=tuple(
                    rules.Recommendation.from_dict(
                        {k: v for k, v in r.items() if k not in RENDERED_KEYS}
                    )
                    for r in d["recommendations"]
                ),
                verdict=str(d["verdict"]),
                lead=tuple(str(s) for s in d.get("lead") or ()),
                environment=dict(d.get("environment") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise UsageError(
                f"the analysis dict of schema {SCHEMA!r} is malformed ({what}); "
                "re-run satadvisor analyze to write it again"
            ) from exc


# ---------------------------------------------------------------- built from a live analysis
# What ``Analysis.record()`` assembles the record from: the proxy run, the measured profile and
# the receptive field (live objects of :mod:`satadvisor.train` and :mod:`satadvisor.receptive`).


def layer_rows(
    profile: Sequence[Any], rf: receptive.ReceptiveFieldAnalysis, tail: Collection[str]
) -> tuple[LayerRow, ...]:
    """One row per tracked layer: the measured layers (``profile``) in forward order, then any
    the tracker did not see (e.g. never called), with the receptive field merged in; ``tail``
    names the measured tail."""
    by_rf = rf.by_name()
    sat = {layer.name: layer for layer in profile}
    order = list(sat) + [name for name in by_rf if name not in sat]
    types = {name: r.module_type for name, r in by_rf.items()}
    types.update({name: s.module_type for name, s in sat.items()})
    labels = rules.short_names(order, types)  # as the verdict names them
    rows = []
    for name in order:
        s, r = sat.get(name), by_rf.get(name)
        rows.append(
            LayerRow(
                name=name,
                label=labels[name],
                type=s.module_type if s else (r.module_type if r else ""),
                width=s.width if s else None,
                saturation=s.saturation if s else None,
                saturation_se=s.saturation_se if s else None,
                intrinsic_dimension=s.intrinsic_dimension if s else None,
                samples=s.samples if s else None,
                r_min=r.r_min if r else None,
                r_max=r.r_max if r else None,
                unproductive=bool(r.unproductive) if r else False,
                critical=bool(r.critical) if r else False,
                tail=name in tail,
            )
        )
    return tuple(rows)


def training_summary(
    result: RunResult | None, settling: trust.Settling | None
) -> TrainingSummary | None:
    """The summary of a proxy run (None: no training) that ``analysis.json`` holds."""
    if result is None:
        return None
    history = tuple(
        SaturationEpoch(i + 1, {s.name: s.saturation for s in ep.get("train", [])})
        for i, ep in enumerate(result.saturation)
    )
    return TrainingSummary(
        status=result.status,
        reason=result.reason,
        epochs=len(result.epochs),
        auto_epochs=bool(result.config.get("auto_epochs")),
        max_epochs=result.config.get("epochs"),
        learned=result.learned,
        settled=settling.settled if settling is not None else False,
        settled_epoch=settling.epoch if settling is not None else None,
        learning=result.learning,
        settling=settling,
        eval_name=result.eval_name,
        accuracy=result.accuracy,
        test_accuracy=result.test_accuracy,
        params=result.params,
        macs=result.macs,
        wall_time=result.wall_time,
        images_per_second=result.images_per_second,
        device=result.device,
        history=tuple(result.epochs),
        saturation_history=history,
        tracking=tracking_summary(result.config.get("positions", "auto")),
    )


def tracking_summary(positions: Any) -> Tracking:
    """How the saturation was read (``analysis.json``'s ``training.tracking``): the rows per
    batch and layer, the batch groups behind each standard error, the rules' z, and the error
    against every position that the default sample was measured to stay within."""
    from satadvisor import saturation as tracking

    rows = (
        f"max({tracking.ROWS_PER_FEATURE} × width, {tracking.MIN_ROWS}) positions, drawn per example"
        if positions == "auto"
        else "every position"
        if positions == "all"
        else f"at most {positions}"
    )
    return Tracking(
        positions=positions,
        rows_per_batch=rows,
        groups=tracking.GROUPS,
        z=rules.Z,
        stated_error=dict(tracking.STATED_ERROR) if positions == "auto" else None,
    )
