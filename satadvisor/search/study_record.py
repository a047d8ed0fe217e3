"""What a study is as data: typed, frozen records of ``study.json`` (schema :data:`SCHEMA`).

:class:`ValidationRun` is one full run of a configuration with one seed, as
:mod:`satadvisor.search.validate` stores it (one study user attribute per run);
:class:`ValidatedConfig` joins a configuration's runs (means, spread, the paired comparison
with the baseline); :class:`Recommendation` adds the judgement of its claim; :class:`TrialRow`
is one trial of the summary; :class:`StudySummary` is the whole of ``study.json``. Each has one
``to_dict`` (JSON-ready, the keys ``study.json`` has) and one ``from_dict``, and
``X.from_dict(x.to_dict()) == x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from satadvisor.errors import UsageError

#: The schema of ``study.json`` (the one place it is named).
SCHEMA = "satadvisor.study/2"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class SeedRun:
    """What one seed's full run scored (kept per seed in :attr:`ValidatedConfig.runs`)."""

    seed: int | None
    status: str = "completed"
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    epochs: int | None = None
    wall_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SeedRun:
        return cls(
            seed=_opt_int(d.get("seed")),
            status=str(d.get("status") or "completed"),
            val_accuracy=_opt_float(d.get("val_accuracy")),
            test_accuracy=_opt_float(d.get("test_accuracy")),
            epochs=_opt_int(d.get("epochs")),
            wall_time=_opt_float(d.get("wall_time")),
        )


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """What a validated configuration and each of its runs share: which trial, its knobs,
    cost, the data sizes and the first run's saturation profile."""

    trial: int | None = None
    baseline: bool = False
    source: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    proxy_accuracy: float | None = None
    macs: int | None = None
    params: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    saturation: dict[str, float] = field(default_factory=dict)
    tail: tuple[str, ...] = ()
    evenness: float | None = None
    history: tuple[dict[str, Any], ...] = ()

    @staticmethod
    def _shared(d: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "trial": _opt_int(d.get("trial")),
            "baseline": bool(d.get("baseline", False)),
            "source": d.get("source"),
            "knobs": dict(d.get("knobs") or {}),
            "proxy_accuracy": _opt_float(d.get("proxy_accuracy")),
            "macs": _opt_int(d.get("macs")),
            "params": _opt_int(d.get("params")),
            "train_images": _opt_int(d.get("train_images")),
            "val_images": _opt_int(d.get("val_images")),
            "test_images": _opt_int(d.get("test_images")),
            "saturation": dict(d.get("saturation") or {}),
            "tail": tuple(d.get("tail") or ()),
            "evenness": _opt_float(d.get("evenness")),
            "history": tuple(dict(h) for h in d.get("history") or ()),
        }

    def _plain(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["knobs"] = dict(self.knobs)
        d["saturation"] = dict(self.saturation)
        d["tail"] = list(self.tail)
        d["history"] = [dict(h) for h in self.history]
        return d


@dataclass(frozen=True, kw_only=True)
class ValidationRun(Configuration):
    """One full run of a configuration with one seed (one study user attribute)."""

    seed: int | None = None
    status: str = "completed"
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    epochs: int | None = None
    wall_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self._plain()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidationRun:
        run = SeedRun.from_dict(d)
        return cls(**cls._shared(d), **run.to_dict())

    @property
    def seed_run(self) -> SeedRun:
        return SeedRun(
            self.seed, self.status, self.val_accuracy, self.test_accuracy, self.epochs,
            self.wall_time,
        )  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """Validation accuracy of a configuration minus the baseline's, paired by seed.

    ``seeds`` both finished, their ``deltas``, ``n``, the ``mean`` difference and its ``level``
    t-interval (``low``, ``high``; None with fewer than two pairs); ``accuracy``: "more
    accurate", "less accurate", "tie" or None (no interval); ``missing``: seeds either side ran
    that have no pair.
    """

    seeds: tuple[int | None, ...] = ()
    deltas: tuple[float, ...] = ()
    n: int = 0
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = 0.95
    accuracy: str | None = None
    missing: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["seeds"], d["deltas"] = list(self.seeds), list(self.deltas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        return cls(
            seeds=tuple(_opt_int(s) for s in d.get("seeds") or ()),
            deltas=tuple(float(x) for x in d.get("deltas") or ()),
            n=int(d.get("n") or 0),
            mean=_opt_float(d.get("mean")),
            low=_opt_float(d.get("low")),
            high=_opt_float(d.get("high")),
            level=float(d.get("level") or 0.95),
            accuracy=d.get("accuracy"),
            missing=int(d.get("missing") or 0),
        )


@dataclass(frozen=True, kw_only=True)
class ValidatedConfig(Configuration):
    """A configuration's full runs joined: means over the seeds that finished (validation
    accuracy chooses, test accuracy is reported only), their sample standard deviations (None
    below two seeds), the summed wall time, the most epochs of a run, the worst status, and
    (all but the baseline) the paired :class:`Comparison` with the baseline."""

    seeds: tuple[int | None, ...] = ()
    runs: tuple[SeedRun, ...] = ()
    status: str = "completed"
    val_accuracy: float | None = None
    val_std: float | None = None
    test_accuracy: float | None = None
    test_std: float | None = None
    wall_time: float = 0.0
    epochs: int = 0
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        d = self._plain()
        d["seeds"] = list(self.seeds)
        d["runs"] = [r.to_dict() for r in self.runs]
        if self.comparison is None:
            d.pop("comparison")
        else:
            d["comparison"] = self.comparison.to_dict()
        return d

    @classmethod
    def _own(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        comparison = d.get("comparison")
        return {
            **cls._shared(d),
            "seeds": tuple(_opt_int(s) for s in d.get("seeds") or ()),
            "runs": tuple(SeedRun.from_dict(r) for r in d.get("runs") or ()),
            "status": str(d.get("status") or "completed"),
            "val_accuracy": _opt_float(d.get("val_accuracy")),
            "val_std": _opt_float(d.get("val_std")),
            "test_accuracy": _opt_float(d.get("test_accuracy")),
            "test_std": _opt_float(d.get("test_std")),
            "wall_time": float(d.get("wall_time") or 0.0),
            "epochs": int(d.get("epochs") or 0),
            "comparison": None if comparison is None else Comparison.from_dict(comparison),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidatedConfig:
        return cls(**cls._own(d))


@dataclass(frozen=True, kw_only=True)
class Recommendation(ValidatedConfig):
    """A validated configuration worth adopting, with the judgement of its claim.

    ``claim``: "cheaper" or "more accurate"; ``verdict``: "confirmed", "tie" or "not
    confirmed"; ``basis``: "interval", "one seed" or "missing runs"; ``accuracy_delta``: the
    mean paired validation difference; ``test_delta`` (reported only) and the MACs and
    parameter ratios to the baseline. It is data: the report renders it as command lines.
    """

    claim: str = "cheaper"
    verdict: str = "not confirmed"
    basis: str = "interval"
    confirmed: bool = False
    accuracy_delta: float = 0.0
    test_delta: float | None = None
    macs_ratio: float | None = None
    params_ratio: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recommendation:
        return cls(
            **cls._own(d),
            claim=str(d.get("claim") or "cheaper"),
            verdict=str(d.get("verdict") or "not confirmed"),
            basis=str(d.get("basis") or "interval"),
            confirmed=bool(d.get("confirmed", False)),
            accuracy_delta=float(d.get("accuracy_delta") or 0.0),
            test_delta=_opt_float(d.get("test_delta")),
            macs_ratio=_opt_float(d.get("macs_ratio")),
            params_ratio=_opt_float(d.get("params_ratio")),
        )


@dataclass(frozen=True)
class TrialRow:
    """One trial of the summary: its Optuna state and what its trial record holds."""

    number: int
    state: str
    source: str = "sampler"
    knobs: dict[str, Any] = field(default_factory=dict)
    params_searched: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    macs: int | None = None
    params: int | None = None
    epochs: int = 0
    tail_length: int | None = None
    evenness: float | None = None
    saturation: dict[str, float] = field(default_factory=dict)
    findings: tuple[str, ...] = ()
    status: str = "completed"
    counted: bool = True
    reason: str | None = None
    parent: int | None = None
    retry_of: int | None = None
    unproductive_before_training: int | None = None
    wall_time: float | None = None
    progress: tuple[float, ...] = ()
    values: tuple[float | None, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("knobs", "params_searched", "saturation"):
            d[name] = dict(d[name])
        d["findings"], d["progress"] = list(self.findings), list(self.progress)
        d["values"] = None if self.values is None else list(self.values)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRow:
        values = d.get("values")
        return cls(
            number=int(d["number"]),
            state=str(d.get("state") or ""),
            source=str(d.get("source") or "sampler"),
            knobs=dict(d.get("knobs") or {}),
            params_searched=dict(d.get("params_searched") or {}),
            accuracy=_opt_float(d.get("accuracy")),
            macs=_opt_int(d.get("macs")),
            params=_opt_int(d.get("params")),
            epochs=int(d.get("epochs") or 0),
            tail_length=_opt_int(d.get("tail_length")),
            evenness=_opt_float(d.get("evenness")),
            saturation=dict(d.get("saturation") or {}),
            findings=tuple(d.get("findings") or ()),
            status=str(d.get("status") or d.get("state") or ""),
            counted=bool(d.get("counted", True)),
            reason=d.get("reason"),
            parent=_opt_int(d.get("parent")),
            retry_of=_opt_int(d.get("retry_of")),
            unproductive_before_training=_opt_int(d.get("unproductive_before_training")),
            wall_time=_opt_float(d.get("wall_time")),
            progress=tuple(float(p) for p in d.get("progress") or ()),
            values=None if values is None else tuple(_opt_float(v) for v in values),
        )


@dataclass(frozen=True)
class StudySettings:
    """The settings a study was created with (its ``settings`` user attribute): the model
    argument, the dataset, the search strategy and the proxy training (``train``); ``other``
    keeps what else was stored, so a round trip loses nothing."""

    model: str | None = None
    dataset: str | None = None
    strategy: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "train": dict(self.train),
            **self.other,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudySettings:
        known = ("model", "dataset", "strategy", "train")
        return cls(
            model=d.get("model"),
            dataset=d.get("dataset"),
            strategy=d.get("strategy"),
            train=dict(d.get("train") or {}),
            other={k: v for k, v in d.items() if k not in known},
        )


@dataclass(frozen=True)
class StudySummary:
    """Everything the study report shows (``study.json``).

    ``settings_used``: the run's full settings (data folder, download, timeout, pinned knobs;
    only when the summary was made by the run itself); ``storage``: the storage URL with any
    password shown as ``***``.
    """

    study_name: str
    settings: StudySettings = field(default_factory=StudySettings)
    space: dict[str, list[Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    objectives: tuple[str, ...] = ()
    budget: int | None = None
    counted_trials: int = 0
    trials: tuple[TrialRow, ...] = ()
    pareto: tuple[int, ...] = ()
    validation: tuple[ValidatedConfig, ...] = ()
    recommended: tuple[Recommendation, ...] = ()
    tolerance: float = 0.005
    validate_seeds: int | None = None
    not_learned: int = 0
    rank_agreement: float | None = None
    storage: str | None = None
    settings_used: dict[str, Any] | None = None
    schema: str = SCHEMA

    @property
    def baseline(self) -> ValidatedConfig | None:
        """The baseline's validated configuration (None: not validated)."""
        return next((r for r in self.validation if r.baseline), None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": self.schema,
            "study_name": self.study_name,
            "settings": self.settings.to_dict(),
            "space": {k: list(v) for k, v in self.space.items()},
            "fixed": dict(self.fixed),
            "command": self.command,
            "objectives": list(self.objectives),
            "budget": self.budget,
            "counted_trials": self.counted_trials,
            "trials": [t.to_dict() for t in self.trials],
            "pareto": list(self.pareto),
            "validation": [r.to_dict() for r in self.validation],
            "recommended": [r.to_dict() for r in self.recommended],
            "tolerance": self.tolerance,
            "validate_seeds": self.validate_seeds,
            "not_learned": self.not_learned,
            "rank_agreement": self.rank_agreement,
        }
        if self.storage is not None:
            d["storage"] = self.storage
        if self.settings_used is not None:
            d["settings_used"] = self.settings_used
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudySummary:
        """The record of a ``study.json`` dict; another schema is a one-line UsageError."""
        check_schema(d)
        used = d.get("settings_used")
        trials = tuple(TrialRow.from_dict(t) for t in d.get("trials") or ())
        counted, missed = d.get("counted_trials"), d.get("not_learned")
        return cls(
            study_name=str(d.get("study_name") or "study"),
            settings=StudySettings.from_dict(d.get("settings") or {}),
            space={k: list(v) for k, v in (d.get("space") or {}).items()},
            fixed=dict(d.get("fixed") or {}),
            command=d.get("command"),
            objectives=tuple(d.get("objectives") or ()),
            budget=_opt_int(d.get("budget")),
            counted_trials=len(trials) if counted is None else int(counted),
            trials=trials,
            pareto=tuple(int(n) for n in d.get("pareto") or ()),
            validation=tuple(ValidatedConfig.from_dict(r) for r in d.get("validation") or ()),
            recommended=tuple(Recommendation.from_dict(r) for r in d.get("recommended") or ()),
            tolerance=float(d.get("tolerance") or 0.005),
            validate_seeds=_opt_int(d.get("validate_seeds")),
            not_learned=(
                sum(1 for t in trials if t.status == "not_learned")
                if missed is None
                else int(missed)
            ),
            rank_agreement=_opt_float(d.get("rank_agreement")),
            storage=d.get("storage"),
            settings_used=None if used is None else dict(used),
        )


def check_schema(d: Mapping[str, Any]) -> None:
    """UsageError (one line, naming the schema and the fix) unless ``d`` is of :data:`SCHEMA`."""
    schema = d.get("schema")
    if schema != SCHEMA:
        raise UsageError(
            f"study schema {schema!r} is not supported (expected {SCHEMA!r}); "
            "re-render it with `satadvisor report STUDY` of this version"
        )
