"""The records the rules produce: :class:`Finding`, :class:`Recommendation` and its :class:`Cost`.

Frozen and typed; each has one ``to_dict`` (JSON-ready, the shape ``analysis.json`` stores) and
one ``from_dict`` that reads it back (``X.from_dict(x.to_dict()) == x``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from satadvisor import _flags

FindingKind = Literal["tail", "early_underuse", "too_narrow", "too_wide", "even"]
RecommendationKind = Literal["efficiency", "performance", "width", "resolution", "none"]


@dataclass(frozen=True)
class Cost:
    """MACs (one image) and trainable parameters of a changed model, and their ratios to the
    baseline (1.0 = unchanged, below 1 = cheaper)."""

    macs: int
    params: int
    macs_ratio: float
    params_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cost:
        return cls(
            int(d["macs"]), int(d["params"]), float(d["macs_ratio"]), float(d["params_ratio"])
        )


@dataclass(frozen=True)
class Recommendation:
    """One concrete change, as data: what to change, what it costs and why.

    ``changes`` holds only the changed knobs (and ``resolution`` when it changes; empty for a
    change to make by hand), ``knobs`` the full resulting knobs, ``resolution`` the resulting
    input resolution in px, ``unproductive_after`` the number of unproductive layers of the
    changed model (None when not analysed). ``model`` names the model the change applies to when
    it is not the analysed one: the built-in family of a preset or library model whose own knobs
    cannot make the change (None: the analysed model). ``pins`` then holds every knob setting
    that builds the changed model from that family's defaults (empty otherwise);
    :attr:`settings` is what a caller applies either way.
    """

    kind: RecommendationKind
    title: str
    changes: dict[str, Any]
    knobs: dict[str, Any]
    resolution: int
    rationale: str
    cost: Cost | None = None
    unproductive_after: int | None = None
    model: str | None = None
    pins: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """The knob settings that make this change: ``pins`` on ``model`` when the change is
        made on another model, else ``changes`` on the analysed one."""
        return dict(self.pins) if self.model is not None else dict(self.changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``set_args`` (the settings as ``--set`` arguments) is for readers of
        ``analysis.json`` and is ignored by :meth:`from_dict`."""
        return {
            "kind": self.kind,
            "title": self.title,
            "changes": dict(self.changes),
            "knobs": dict(self.knobs),
            "resolution": self.resolution,
            "rationale": self.rationale,
            "cost": self.cost.to_dict() if self.cost is not None else None,
            "unproductive_after": self.unproductive_after,
            "model": self.model,
            "pins": dict(self.pins),
            "set_args": _flags.set_args(self.settings),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recommendation:
        cost = d.get("cost")
        return cls(
            kind=d["kind"],
            title=d["title"],
            changes=dict(d["changes"]),
            knobs=dict(d["knobs"]),
            resolution=int(d["resolution"]),
            rationale=d["rationale"],
            cost=Cost.from_dict(cost) if cost is not None else None,
            unproductive_after=d.get("unproductive_after"),
            model=d.get("model"),
            pins=dict(d.get("pins") or {}),
        )


@dataclass(frozen=True)
class Finding:
    """One observation about the model: its kind, the layers (qualified names), one sentence.

    ``evidence`` holds the numbers behind the sentence (JSON-serialisable); ``predicted`` is True
    when the finding comes from the receptive-field analysis alone (training-free), not from the
    measured profile. ``provisional`` gives the reason a measured finding may still change (its
    profile had not settled); None when it rests on a settled profile or on no profile.
    """

    kind: FindingKind
    layers: tuple[str, ...]
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    predicted: bool = False
    provisional: str | None = None

    @property
    def basis(self) -> str:
        """What the finding rests on: ``"receptive_field"`` or ``"measured"``."""
        return "receptive_field" if self.predicted else "measured"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layers": list(self.layers),
            "message": self.message,
            "evidence": dict(self.evidence),
            "predicted": self.predicted,
            "basis": self.basis,
            "provisional": self.provisional is not None,
            "provisional_reason": self.provisional,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """The finding :meth:`to_dict` wrote (``basis`` and ``provisional`` are derived)."""
        return cls(
            kind=d["kind"],
            layers=tuple(d["layers"]),
            message=d["message"],
            evidence=dict(d.get("evidence") or {}),
            predicted=bool(d.get("predicted", False)),
            provisional=d.get("provisional_reason"),
        )
