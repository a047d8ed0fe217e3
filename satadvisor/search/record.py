"""What a trial is in a satadvisor study: one typed record, stored as one user attribute.

Every trial carries exactly one Optuna user attribute, :data:`KEY` (``"satadvisor"``): the
:class:`TrialRecord` as JSON-ready data with its schema (:data:`SCHEMA`). The worker writes it
when the trial starts (with its owner, so a killed worker is detectable), after every epoch
(what the pruner reads) and at the end (the owner dropped: nothing but results is left on a
finished trial). The summary, the validation and the report read records through
:meth:`TrialRecord.of`, never loose attributes.

Budget rule (:attr:`TrialRecord.counts`): a trial uses up budget when it ran or runs — it
completed, was pruned, did not learn, diverged or failed for a reason of its own. Trials
stopped from outside (Ctrl-C, a killed or stale worker, a dataset that cannot be read) do not
count, and the sampler proposes their configuration again, so rerunning the command resumes to
the same total. A draw that repeats a configuration another worker drew at the same moment
(``duplicate``), or that came after the budget was spent (``over_budget``), is told as pruned
and does not count either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from optuna.trial import FrozenTrial, TrialState

#: The one user attribute of a trial.
KEY = "satadvisor"
SCHEMA = "satadvisor.trial/1"

Status = Literal[
    "running",
    "completed",
    "pruned",
    "not_learned",
    "diverged",
    "failed",
    "interrupted",
    "duplicate",
    "over_budget",
]
#: Statuses of trials that used up budget.
COUNTED: frozenset[str] = frozenset(
    {"running", "completed", "pruned", "not_learned", "diverged", "failed"}
)
#: Where a trial's configuration came from: the baseline, the sampler (``tpe``/``random``
#: draws), a rule move (``rule:<kind>``), or a retry of an interrupted trial.
RULE_PREFIX = "rule:"


def config_key(params: Mapping[str, Any]) -> str:
    """A canonical text key of a configuration, for deduplication."""
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)


@dataclass(frozen=True)
class Candidate:
    """A configuration a rule proposed from a trial; ``macs`` per image (None: unknown)."""

    params: dict[str, Any]
    kind: str
    macs: int | None = None

    @property
    def source(self) -> str:
        return f"{RULE_PREFIX}{self.kind}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(dict(d["params"]), str(d["kind"]), d.get("macs"))


@dataclass(frozen=True)
class Prior:
    """What is known of a configuration before it is trained (built on the meta device).

    ``buildable`` False: the model cannot be built or run at this resolution (``reason``);
    ``unproductive``: layers the receptive-field analysis flags at this resolution (their
    inputs already see the whole image, or their map is too small): they add MACs but cannot
    add accuracy; ``feasible``: the architecture's productive input range (None: unknown).
    """

    buildable: bool
    macs: int | None = None
    params: int | None = None
    unproductive: tuple[str, ...] = ()
    feasible: tuple[int | None, int | None] | None = None
    reason: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prior:
        feasible = d.get("feasible")
        return cls(
            buildable=bool(d["buildable"]),
            macs=d.get("macs"),
            params=d.get("params"),
            unproductive=tuple(d.get("unproductive") or ()),
            feasible=None if feasible is None else (feasible[0], feasible[1]),
            reason=d.get("reason"),
        )


@dataclass(frozen=True)
class EpochPoint:
    """One proxy epoch as the pruner reads it: validation accuracy, whether the proxy has
    learned so far, whether the profile settled, and its tail (layer names)."""

    epoch: int
    accuracy: float
    learned: bool
    settled: bool
    tail: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochPoint:
        return cls(
            int(d["epoch"]),
            float(d["accuracy"]),
            bool(d["learned"]),
            bool(d["settled"]),
            tuple(d.get("tail") or ()),
        )


@dataclass(frozen=True)
class Owner:
    """The process running a trial (only while it runs)."""

    host: str
    pid: int


@dataclass(frozen=True)
class TrialRecord:
    """Everything satadvisor knows of one trial (see the module docstring)."""

    knobs: dict[str, Any]
    source: str = "sampler"
    status: Status = "running"
    parent: int | None = None
    retry_of: int | None = None
    reason: str | None = None
    prior: Prior | None = None
    accuracy: float | None = None
    macs: int | None = None
    params: int | None = None
    epochs: int = 0
    progress: tuple[EpochPoint, ...] = ()
    saturation: dict[str, float] = field(default_factory=dict)
    tail: tuple[str, ...] = ()
    unproductive: tuple[str, ...] = ()
    evenness: float | None = None
    findings: tuple[str, ...] = ()
    learned: bool | None = None
    learning: dict[str, Any] | None = None
    candidates: tuple[Candidate, ...] = ()
    wall_time: float | None = None
    device: str | None = None
    owner: Owner | None = None
    schema: str = SCHEMA

    # ------------------------------------------------------------------ reading
    @property
    def counts(self) -> bool:
        return self.status in COUNTED

    @property
    def is_rule(self) -> bool:
        return self.source.startswith(RULE_PREFIX)

    def with_(self, **changes: Any) -> TrialRecord:
        return replace(self, **changes)

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["progress"] = [asdict(p) for p in self.progress]
        d["candidates"] = [asdict(c) for c in self.candidates]
        for name in ("tail", "unproductive", "findings"):
            d[name] = list(d[name])
        if self.prior is not None:
            d["prior"]["unproductive"] = list(self.prior.unproductive)
            d["prior"]["feasible"] = (
                None if self.prior.feasible is None else list(self.prior.feasible)
            )
        if self.owner is None:
            d.pop("owner")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"trial record schema {d.get('schema')!r}, expected {SCHEMA!r}")
        owner = d.get("owner")
        prior = d.get("prior")
        return cls(
            knobs=dict(d.get("knobs") or {}),
            source=str(d.get("source") or "sampler"),
            status=d.get("status", "running"),
            parent=d.get("parent"),
            retry_of=d.get("retry_of"),
            reason=d.get("reason"),
            prior=None if prior is None else Prior.from_dict(prior),
            accuracy=d.get("accuracy"),
            macs=d.get("macs"),
            params=d.get("params"),
            epochs=int(d.get("epochs") or 0),
            progress=tuple(EpochPoint.from_dict(p) for p in d.get("progress") or ()),
            saturation=dict(d.get("saturation") or {}),
            tail=tuple(d.get("tail") or ()),
            unproductive=tuple(d.get("unproductive") or ()),
            evenness=d.get("evenness"),
            findings=tuple(d.get("findings") or ()),
            learned=d.get("learned"),
            learning=d.get("learning"),
            candidates=tuple(Candidate.from_dict(c) for c in d.get("candidates") or ()),
            wall_time=d.get("wall_time"),
            device=d.get("device"),
            owner=None if owner is None else Owner(str(owner["host"]), int(owner["pid"])),
        )

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """The record of ``trial``; a trial without one (drawn, then its worker died before
        writing it) is an interrupted draw of its parameters."""
        stored = trial.user_attrs.get(KEY)
        if isinstance(stored, Mapping) and stored.get("schema") == SCHEMA:
            rec = cls.from_dict(stored)
        else:
            rec = cls(knobs=dict(trial.params), status="running")
        if trial.state == TrialState.FAIL and rec.status == "running":
            # Its worker died (reaped, or failed stale by Optuna's heartbeat): it never finished.
            rec = rec.with_(status="interrupted", reason=rec.reason or "its worker stopped")
        return rec


def records(trials: Iterable[FrozenTrial]) -> list[tuple[FrozenTrial, TrialRecord]]:
    return [(t, TrialRecord.of(t)) for t in trials]


def counts(trial: FrozenTrial) -> bool:
    """Whether ``trial`` uses up budget (see the module docstring)."""
    if trial.state == TrialState.WAITING:
        return False
    return TrialRecord.of(trial).counts


def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if counts(t)]


def searched_key(knobs: Mapping[str, Any], names: Iterable[str]) -> str:
    """The key of a configuration over the searched knobs ``names`` only."""
    return config_key({n: knobs.get(n) for n in names})


def known_keys(trials: Sequence[FrozenTrial], names: Iterable[str]) -> set[str]:
    """Searched configurations that ran or run (counted trials): not proposed again."""
    names = list(names)
    out = set()
    for t in trials:
        rec = TrialRecord.of(t)
        if rec.counts and rec.knobs:
            out.add(searched_key(rec.knobs, names))
    return out
