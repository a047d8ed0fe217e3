"""Findings -> concrete knob changes with their measured cost (re-exported by satadvisor.rules).

Every candidate is *built* with ``spec.create`` and measured (``cost.count_macs`` /
``count_parameters`` at its resolution, ``receptive.analyze`` for its unproductive layers):
knob semantics differ between models, so nothing here guesses what a value does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import nn

from satadvisor import receptive
from satadvisor.cost import count_macs, count_parameters, macs_by_module
from satadvisor.errors import SatAdvisorError
from satadvisor.receptive import ReceptiveFieldAnalysis

if TYPE_CHECKING:
    from satadvisor.rules import Finding

RecommendationKind = Literal["efficiency", "performance", "width", "resolution", "none"]

# Knobs that slow the receptive-field growth, in the order they are tried: mildest change first.
_RF_KNOBS = ("kernel_size", "stem_kernel", "downsamplings", "stem_stride", "stem_pool")


class SpecLike(Protocol):
    """What the rules need of a :class:`satadvisor.spec.ModelSpec`."""

    @property
    def knobs(self) -> Mapping[str, Any]: ...

    @property
    def search_space(self) -> Mapping[str, Sequence[Any]] | None: ...

    @property
    def optimisable(self) -> bool: ...

    def create(self, *, num_classes: int, in_channels: int, **knobs: Any) -> nn.Module: ...


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


@dataclass(frozen=True)
class Recommendation:
    """One concrete change. ``changes`` holds only the changed knobs (and ``resolution`` when it
    changes; empty for a change to make by hand), ``knobs`` the full resulting knobs,
    ``resolution`` the resulting input resolution in px, ``unproductive_after`` the number of
    unproductive layers of the changed model (None when not analysed), ``set_args`` the CLI
    arguments that apply the change. ``model`` names the model those arguments apply to when it
    is not the analysed one: the built-in family of a preset or library model whose own knobs
    cannot make the change (``satadvisor analyze MODEL SET_ARGS``; None: the analysed model)."""

    kind: RecommendationKind
    title: str
    changes: dict[str, Any]
    knobs: dict[str, Any]
    resolution: int
    rationale: str
    cost: Cost | None = None
    unproductive_after: int | None = None
    set_args: str = ""
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["changes"] = dict(self.changes)
        out["knobs"] = dict(self.knobs)
        out["cost"] = self.cost.to_dict() if self.cost is not None else None
        return out


# --------------------------------------------------------------------------- naming helpers


def is_conv(module_type: str) -> bool:
    """True for Conv1d/2d/3d (and transposed) layers, by their type name."""
    return "conv" in module_type.lower()


def short_names(
    names: Sequence[str], types: Mapping[str, str] | Sequence[str] | None = None
) -> dict[str, str]:
    """Qualified name -> the label a person reads (verdicts, terminal, report).

    A named layer keeps its name: the last component where that is unique (``conv8`` for
    ``features.conv8``), else the qualified name (``layer1.0.conv1``). An unnamed layer — one
    whose name ends in a bare index, as the children of an ``nn.Sequential`` do — gets its type
    and its number among the layers of that type in ``names`` (forward order), with the
    qualified name: ``Conv2d #5 (features.17)``. ``types`` gives each layer's module type (by
    name, or in the order of ``names``); without it an unnamed layer keeps its qualified name.
    """
    if types is not None and not isinstance(types, Mapping):
        types = dict(zip(names, types, strict=True))
    last = [name.rsplit(".", 1)[-1] for name in names]
    counts = Counter(last)
    seen: Counter[str] = Counter()
    labels = {}
    for name, tail in zip(names, last, strict=True):
        kind = types.get(name) if types is not None else None
        if kind:
            seen[kind] += 1
        if not tail.isdigit():
            labels[name] = tail if counts[tail] == 1 else name
        elif kind:
            labels[name] = f"{kind} #{seen[kind]} ({name})"
        else:
            labels[name] = name
    return labels


def span_label(names: Sequence[str], labels: Mapping[str, str]) -> str:
    """'conv8–conv13' for a contiguous run (first and last), 'conv8' for one layer."""
    first, last = labels.get(names[0], names[0]), labels.get(names[-1], names[-1])
    return first if len(names) == 1 else f"{first}–{last}"


def names_label(names: Sequence[str], order: Sequence[str], labels: Mapping[str, str]) -> str:
    """Layers as contiguous runs of ``order``: 'conv2–conv4 and conv7'."""
    position = {name: i for i, name in enumerate(order)}
    runs: list[list[str]] = []
    for name in names:
        if runs and position.get(name, -2) == position.get(runs[-1][-1], -9) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    parts = [span_label(run, labels) for run in runs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def layer_labels(findings: Sequence[Finding], rf: ReceptiveFieldAnalysis | None) -> dict[str, str]:
    """The labels of the layers ``findings`` name, numbered as :func:`short_names` numbers the
    whole model (every layer of ``rf`` in forward order, when there is one)."""
    layers = list(rf.layers) if rf is not None else []
    names = [x.name for x in layers]
    names += [n for f in findings for n in f.layers if n not in set(names)]
    types = {x.name: x.module_type for x in layers}
    return short_names(list(dict.fromkeys(names)), types)


def format_set_args(changes: Mapping[str, Any]) -> str:
    """``--set k=v`` per change; bools as true/false, numbers and strings as written."""

    def value(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return json.dumps(v)
        return str(v) if isinstance(v, (int, float, str)) else json.dumps(v)

    return " ".join(f"--set {k}={value(v)}" for k, v in changes.items())


def _count(n: int) -> str:
    """12,345,678 -> '12.3 M'; small counts as written."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _conv_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


# --------------------------------------------------------------------------- building


@dataclass
class _Workbench:
    """Builds and measures candidate models relative to the baseline (cached per config)."""

    spec: SpecLike
    knobs: dict[str, Any]
    resolution: int
    num_classes: int
    in_channels: int
    #: Resolution of the dataset's own images; None when unknown (no cap on raising it).
    source_resolution: int | None = None
    _models: dict[str, nn.Module | None] = field(default_factory=dict)
    baseline: Cost | None = None
    # Built models kept for reuse; few, because a candidate may be a large network.
    _cache_size: int = 4

    def __post_init__(self) -> None:
        self.knobs.pop("resolution", None)  # the data knob travels separately
        model = self.build({})
        if model is not None:
            macs = self.macs(model, self.resolution)
            if macs is not None:
                self.baseline = Cost(macs, count_parameters(model), 1.0, 1.0)

    def build(self, changes: Mapping[str, Any]) -> nn.Module | None:
        knobs = {**self.knobs, **{k: v for k, v in changes.items() if k != "resolution"}}
        if "resolution" in self.spec.knobs:  # a build_model that sizes itself by resolution
            knobs["resolution"] = int(changes.get("resolution", self.resolution))
        key = json.dumps(knobs, sort_keys=True, default=repr)
        if key in self._models:
            self._models[key] = self._models.pop(key)  # most recently used last
            return self._models[key]
        # Building draws initial weights: keep the caller's RNG stream untouched.
        with torch.random.fork_rng(devices=[]):
            try:
                model: nn.Module | None = self.spec.create(
                    num_classes=self.num_classes, in_channels=self.in_channels, **knobs
                )
            except SatAdvisorError:
                model = None
        self._models[key] = model
        while len(self._models) > self._cache_size:
            del self._models[next(iter(self._models))]
        return model

    def macs(self, model: nn.Module, resolution: int) -> int | None:
        try:
            return count_macs(model, in_channels=self.in_channels, resolution=resolution)
        except (SatAdvisorError, RuntimeError, ValueError):  # e.g. a map shrinks below 1 px
            return None

    def layer_cost(self, names: Sequence[str]) -> tuple[int, int] | None:
        """MACs (one input at the resolution) and parameters of the baseline's layers ``names``."""
        model = self.build({})
        if model is None:
            return None
        modules = dict(model.named_modules())
        if not names or any(name not in modules for name in names):
            return None
        try:
            per_module = macs_by_module(
                model, in_channels=self.in_channels, resolution=self.resolution
            )
        except (SatAdvisorError, RuntimeError, ValueError):
            return None
        macs = sum(per_module.get(name, 0) for name in names)
        params = {id(p): p.numel() for n in names for p in modules[n].parameters()}
        return macs, sum(params.values())

    def analyze(self, model: nn.Module, resolution: int) -> ReceptiveFieldAnalysis | None:
        try:
            rf = receptive.analyze(model, resolution, in_channels=self.in_channels)
        except SatAdvisorError:
            return None
        return rf if rf.supported else None

    def smallest_productive(self, model: nn.Module) -> int | None:
        space = (self.spec.search_space or {}).get("resolution")
        tries: list[list[int] | None] = [sorted(int(v) for v in space)] if space else []
        for candidates in [*tries, None]:
            try:
                found = receptive.smallest_productive_resolution(
                    model, in_channels=self.in_channels, candidates=candidates
                )
            except SatAdvisorError:
                return None
            if found is not None:
                return int(found)
        return None

    def make(
        self, kind: RecommendationKind, title: str, changes: dict[str, Any], rationale: str
    ) -> Recommendation | None:
        """The recommendation for ``changes``, measured; None when the model fails to build/run."""
        resolution = int(changes.get("resolution", self.resolution))
        model = self.build(changes)
        if model is None:
            return None
        macs = self.macs(model, resolution)
        if macs is None:
            return None
        cost = None
        if self.baseline is not None:
            params = count_parameters(model)
            cost = Cost(
                macs,
                params,
                macs / max(self.baseline.macs, 1),
                params / max(self.baseline.params, 1),
            )
        rf = self.analyze(model, resolution)
        knobs = {**self.knobs, **{k: v for k, v in changes.items() if k != "resolution"}}
        return Recommendation(
            kind=kind,
            title=title,
            changes=dict(changes),
            knobs=knobs,
            resolution=resolution,
            rationale=rationale,
            cost=cost,
            unproductive_after=len(rf.unproductive) if rf is not None else None,
            set_args=format_set_args(changes),
        )


# --------------------------------------------------------------------------- the moves


def _space(bench: _Workbench, knob: str) -> list[Any]:
    values = (bench.spec.search_space or {}).get(knob)
    return [v for v in values if v != bench.knobs.get(knob)] if values else []


def _efficiency(bench: _Workbench, tail: Finding) -> Recommendation | None:
    """The depth whose built model has the most conv layers, at most (current − tail length)."""
    base = bench.build({})
    current = bench.knobs["depth"]
    if base is None:
        return None
    total = _conv_count(base)
    target = total - len(tail.layers)
    if target < 1:
        return None

    def fits(values: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for value in values:
            model = bench.build({"depth": value})
            if model is not None and _conv_count(model) <= target:
                yield _conv_count(model), value

    # The search space's values first: the fit with the most conv layers is the mildest cut.
    found = max(fits(_space(bench, "depth")), key=lambda t: t[0], default=None)
    if found is None and isinstance(current, int) and not isinstance(current, bool):
        # Descending, so the first fit is the mildest cut (conv count grows with depth).
        found = next(fits(range(current - 1, 0, -1)), None)
    if found is None:
        return None
    convs, depth = found
    rationale = (
        f"Depth {depth} builds {convs} conv layers instead of {total} (at most "
        f"{total} − {len(tail.layers)} = {target})."
    )
    return bench.make(
        "efficiency", f"Remove the tail: depth {current} → {depth}", {"depth": depth}, rationale
    )


def _rf_candidates(bench: _Workbench, knob: str) -> list[Any]:
    """Values of an RF-slowing knob to try, mildest first."""
    current = bench.knobs[knob]
    space = _space(bench, knob)
    if knob == "stem_pool":
        if not current or str(current).lower() == "none":
            return []
        if space:
            return [v for v in space if not v or str(v).lower() == "none"]
        return [False] if isinstance(current, bool) else ([0] if isinstance(current, int) else [])
    if not isinstance(current, int) or isinstance(current, bool):
        return []
    if space:
        return sorted((v for v in space if isinstance(v, int) and v < current), reverse=True)
    if knob in ("kernel_size", "stem_kernel"):  # odd keeps 'same' padding; 1×1 would not grow
        return list(range(current - 2, 2, -2))
    if knob == "stem_stride":
        return [1] if current > 1 else []
    return list(range(current - 1, -1, -1))  # downsamplings


def _rf_changes(bench: _Workbench, base: nn.Module, knob: str, value: Any) -> dict[str, Any]:
    """The knob change, plus ``stages`` pinned when ``downsamplings`` drops.

    A model with a ``stages`` knob left at None (the built-in vgg / plain: one stage per
    downsampling) would otherwise lose stages, and with them channels; pinned to the built
    model's ``num_stages``, fewer downsamplings only remove the earliest pools or strides.
    """
    changes = {knob: value}
    stages = getattr(base, "num_stages", None)
    if knob == "downsamplings" and bench.knobs.get("stages", 0) is None and isinstance(stages, int):
        changes["stages"] = stages
    return changes


def _rf_rationale(tail: Finding, effect: str) -> str:
    return (
        f"Slower receptive-field growth keeps the deep layers' inputs smaller "
        f"than the image: {effect}."
    )


def _performance(
    bench: _Workbench, tail: Finding, rf: ReceptiveFieldAnalysis | None
) -> list[Recommendation]:
    """Slower receptive-field growth, or a higher resolution: per knob the mildest change whose
    built model has no unproductive layer (checked with receptive.analyze).

    For ``downsamplings``, when that fix removes more than one downsampling, the single step
    (one downsampling fewer: the earliest, at a fraction of the fix's compute) comes first
    when it leaves fewer unproductive layers. When the receptive field flags nothing at the
    current resolution (the tail is measured only), there is nothing to check against: the
    mildest change per knob is offered as such.
    """
    base = bench.build({})
    if base is None:
        return []
    rf = rf if rf is not None and rf.supported else bench.analyze(base, bench.resolution)
    if rf is None:
        return []
    verified = bool(rf.unproductive)
    px = bench.resolution
    out: list[Recommendation] = []
    for knob in (k for k in _RF_KNOBS if k in bench.knobs):
        step: Recommendation | None = None
        for i, value in enumerate(_rf_candidates(bench, knob)):
            changes = _rf_changes(bench, base, knob, value)
            model = bench.build(changes)
            after = bench.analyze(model, px) if model is not None else None
            if after is None:
                continue
            title = f"Slow the receptive-field growth: {knob} {bench.knobs[knob]} → {value}"
            if verified and after.unproductive:
                if (
                    i == 0
                    and knob == "downsamplings"
                    and len(after.unproductive) < len(rf.unproductive)
                ):
                    effect = (
                        f"{knob}={value} removes the earliest downsampling and keeps every "
                        f"layer's channels; {len(after.unproductive)} of the "
                        f"{len(rf.unproductive)} unproductive layers remain at {px} px"
                    )
                    step = bench.make("performance", title, changes, _rf_rationale(tail, effect))
                continue
            effect = (
                f"with {knob}={value} no layer is unproductive at {px} px"
                if verified
                else f"the receptive field flags no unproductive layer at {px} px, so "
                f"{knob}={value} is the mildest step to try, not a verified fix"
            )
            rec = bench.make("performance", title, changes, _rf_rationale(tail, effect))
            if rec is not None:
                out += [step] if step is not None else []
                out.append(rec)
                step = None
                break
        out += [step] if step is not None else []
    best = bench.smallest_productive(base) if verified else None
    # Upsampling past the images' own resolution adds pixels, not detail: no gain to expect.
    if best is not None and bench.source_resolution is not None and best > bench.source_resolution:
        best = None
    if best is not None and best > bench.resolution:
        check = bench.analyze(base, best)
        if check is not None and not check.unproductive:
            rationale = f"{best} px is the smallest resolution at which no layer is unproductive."
            title = f"Raise the resolution: {bench.resolution} → {best} px"
            rec = bench.make("performance", title, {"resolution": best}, rationale)
            out += [rec] if rec is not None else []
    return out


def _lower_resolution(
    bench: _Workbench, early: Finding, rf: ReceptiveFieldAnalysis | None
) -> Recommendation | None:
    """Halve the resolution, not below the feasible lower bound nor where layers turn
    unproductive. The best lower resolution is not computable without training."""
    floor, why = 1, ""
    if rf is not None and rf.supported and rf.feasible_range:
        floor, why = rf.feasible_range[0], " (the feasible range's lower bound)"
    base = bench.build({})
    productive = bench.smallest_productive(base) if base is not None else None
    if productive is not None and productive > floor:
        floor, why = productive, " (below it layers would turn unproductive)"
    target = max(bench.resolution // 2, floor)
    space = [int(v) for v in _space(bench, "resolution") if floor <= int(v) < bench.resolution]
    if space:
        target = min(space, key=lambda v: (abs(v - target), v))
    if target >= bench.resolution:
        return None
    rationale = (
        f"The resolution at which the early layers stop being under-used cannot "
        f"be computed without training: halving toward {floor} px{why} gives {target} px — "
        "profile again there."
    )
    title = f"Lower the resolution: {bench.resolution} → {target} px"
    return bench.make("resolution", title, {"resolution": target}, rationale)


def _width(bench: _Workbench, finding: Finding) -> Recommendation | None:
    current = bench.knobs["width"]
    narrow = finding.kind == "too_narrow"
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        return None
    new: int | float = current * 2 if narrow else current / 2
    if isinstance(current, int):
        new = int(new) if narrow else max(1, current // 2)
    if new == current:
        return None
    title = f"{'Widen' if narrow else 'Narrow'} the network: width {current} → {new}"
    rationale = (
        f"{'Doubling' if narrow else 'Halving'} the width knob: those layers use almost "
        f"{'all' if narrow else 'none'} of their channels."
    )
    return bench.make("width", title, {"width": new}, rationale)


# --------------------------------------------------------------------------- by hand


def _by_hand(
    kind: RecommendationKind, title: str, rationale: str, bench: _Workbench
) -> Recommendation:
    return Recommendation(kind, title, {}, dict(bench.knobs), bench.resolution, rationale)


def _source(spec: SpecLike) -> str:
    return str(getattr(spec, "source", "") or "the model")


def _owned(spec: SpecLike) -> bool:
    """Whether the model's code is the user's (a model file), not satadvisor's built-in models
    or a library's (``builtin:``, ``torchvision:``, ``timm:``)."""
    return not _source(spec).startswith(("builtin:", "torchvision:", "timm:"))


def _family_moves(
    findings: Mapping[str, Finding], bench: _Workbench, rf: ReceptiveFieldAnalysis | None
) -> list[Recommendation]:
    """The moves of the built-in family that builds a preset or library model, for the knobs
    the model itself lacks (a preset has no depth knob; the family has).

    Each move is built and measured with the family's knobs and its cost given against the
    analysed model; ``model`` names the family and ``set_args`` pin every family knob that
    differs from the family's defaults, so the command builds the changed model from scratch.
    """
    from satadvisor import models
    from satadvisor import spec as spec_mod

    source = _source(bench.spec)
    member = models.family_member(source, bench.knobs)
    if member is None or _owned(bench.spec):
        return []
    family_spec = spec_mod.load(member.family)
    fam = _Workbench(
        family_spec,
        dict(member.knobs),
        bench.resolution,
        bench.num_classes,
        bench.in_channels,
        bench.source_resolution,
    )
    moves: list[Recommendation | None] = []
    if "tail" in findings:
        if "depth" in fam.knobs:
            moves.append(_efficiency(fam, findings["tail"]))
        moves += _performance(fam, findings["tail"], rf)
    capacity = [findings[k] for k in ("too_narrow", "too_wide") if k in findings]
    if capacity and "width" in fam.knobs:
        moves.append(_width(fam, max(capacity, key=lambda f: len(f.layers))))
    name = source.removeprefix("builtin:")
    same = ", ".join(
        f"{k}={format_set_args({k: v}).split('=', 1)[1]}" for k, v in member.knobs.items()
    )
    note = f" ({member.note})" if member.note else ""
    out = []
    for move in moves:
        if move is None:
            continue
        missing = sorted(k for k in move.changes if k != "resolution" and k not in bench.knobs)
        if not missing:
            continue  # the model's own knobs make this move (offered as such)
        knobs = {**member.knobs, **{k: v for k, v in move.changes.items() if k != "resolution"}}
        pins = {k: v for k, v in knobs.items() if family_spec.knobs.get(k) != v}
        if "resolution" in move.changes:
            pins["resolution"] = move.changes["resolution"]
        cost = move.cost
        if cost is not None and bench.baseline is not None:
            base = bench.baseline
            cost = Cost(
                cost.macs,
                cost.params,
                cost.macs / max(base.macs, 1),
                cost.params / max(base.params, 1),
            )
        rationale = (
            f"{name} has no {' or '.join(missing)} knob; the built-in {member.family} family "
            f"builds its layers with {same}{note}. {move.rationale}"
        )
        out.append(
            Recommendation(
                move.kind,
                f"{move.title} in the {member.family} family",
                dict(move.changes),
                knobs,
                move.resolution,
                rationale,
                cost,
                move.unproductive_after,
                format_set_args(pins),
                member.family,
            )
        )
    return out


def _textual(
    findings: Sequence[Finding], bench: _Workbench, rf: ReceptiveFieldAnalysis | None
) -> list[Recommendation]:
    """Changes to make in the model's code, for models without the knob that would make them."""
    out = []
    labels = layer_labels(findings, rf)
    for f in findings:
        span = names_label(f.layers, list(f.layers), labels) if f.layers else ""
        if f.kind == "tail" and "depth" not in bench.knobs:
            saved = bench.layer_cost(f.layers)
            title, predicted = f"Remove {span} by hand", ""
            if saved is not None and bench.baseline is not None:
                base = bench.baseline
                ratio = (base.macs - saved[0]) / max(base.macs, 1)
                title += f" (about {ratio:.2f}× MACs)"
                predicted = (
                    f" Predicted from those layers' own measured cost: about {_count(saved[0])} "
                    f"of the {_count(base.macs)} MACs per input ({ratio:.2f}× left) and "
                    f"{_count(saved[1])} of the {_count(base.params)} parameters go; the "
                    "layers around them may need their channels matched."
                )
            if _owned(bench.spec):
                how = (
                    f"The model has no depth knob: delete those {len(f.layers)} layers in its code."
                )
            else:
                how = (
                    f"{_source(bench.spec)} has no depth knob and its code is not part of your "
                    f"project: take a shallower model of its family, or copy its definition into a "
                    f"model file and delete those {len(f.layers)} layers there."
                )
                title = title.replace(" by hand", " in a copy of its code")
            out.append(_by_hand("efficiency", title, f"{how}{predicted}", bench))
        if f.kind == "tail" and not bench.spec.optimisable:
            out.append(
                _by_hand(
                    "performance",
                    "Slow the receptive-field growth by hand",
                    "Remove an early downsampling (stride or pooling), use smaller "
                    "kernels, or train at a higher input resolution.",
                    bench,
                )
            )
        if f.kind == "early_underuse" and not bench.spec.optimisable:
            out.append(
                _by_hand(
                    "resolution",
                    "Lower the input resolution",
                    f"Train at about half the resolution ({bench.resolution // 2} "
                    "px) and profile again.",
                    bench,
                )
            )
        if f.kind in ("too_narrow", "too_wide") and "width" not in bench.knobs:
            change = "Widen" if f.kind == "too_narrow" else "Narrow"
            factor = "double" if f.kind == "too_narrow" else "halve"
            out.append(
                _by_hand(
                    "width",
                    f"{change} {span} by hand",
                    f"The model has no width knob: {factor} their channels in its "
                    + (
                        "code."
                        if _owned(bench.spec)
                        else "code (a copy of it: it is library code)."
                    ),
                    bench,
                )
            )
    return out


def recommend(
    findings: Sequence[Finding],
    *,
    spec: SpecLike,
    knobs: Mapping[str, Any],
    resolution: int,
    num_classes: int,
    in_channels: int,
    rf: ReceptiveFieldAnalysis | None,
    source_resolution: int | None = None,
) -> list[Recommendation]:
    """Concrete changes of the model's own knobs for ``findings``, each built and measured.

    ``source_resolution`` is the resolution of the dataset's own images: the resolution is never
    raised past it (upsampling adds no detail), so for small images the performance move is a
    slower receptive-field growth instead.

    ``knobs`` are the full current knobs (without ``resolution``), ``resolution`` the input
    resolution in px, ``rf`` the receptive-field analysis of the current model (None: not
    available). Order: efficiency (remove the tail), performance (slower receptive-field growth,
    higher resolution), resolution (early under-use), width; a ``none`` recommendation when
    the findings are even. Candidates that fail to build or run are skipped, no-ops dropped,
    duplicates merged. Models without knobs get changes to make by hand (empty ``changes``).
    """
    bench = _Workbench(
        spec, dict(knobs), int(resolution), num_classes, in_channels, source_resolution
    )
    first: dict[str, Finding] = {}
    for f in findings:
        first.setdefault(f.kind, f)
    family = _family_moves(first, bench, rf) if spec.optimisable else []
    textual = _textual(findings, bench, rf)
    if any(r.changes.get("depth") is not None for r in family):
        # the family's depth replaces cutting the layers out of code the user does not own
        textual = [r for r in textual if not (r.kind == "efficiency" and not r.changes)]
    recs: list[Recommendation | None] = [*textual, *family]
    if spec.optimisable:
        if "tail" in first:
            if "depth" in bench.knobs:
                recs.append(_efficiency(bench, first["tail"]))
            recs += _performance(bench, first["tail"], rf)
        if "early_underuse" in first:
            recs.append(_lower_resolution(bench, first["early_underuse"], rf))
        capacity = [first[k] for k in ("too_narrow", "too_wide") if k in first]
        if capacity and "width" in bench.knobs:
            # One width knob cannot widen some layers and narrow others: follow the majority.
            recs.append(_width(bench, max(capacity, key=lambda f: len(f.layers))))
    ordered = sorted(
        (r for r in recs if r is not None),
        key=lambda r: ("efficiency", "performance", "resolution", "width").index(r.kind),
    )
    if not ordered and "even" in first:
        unproductive = len(rf.unproductive) if rf is not None and rf.supported else None
        ordered.append(
            Recommendation(
                "none",
                "Keep the architecture",
                {},
                dict(bench.knobs),
                bench.resolution,
                "No finding calls for a change of the architecture (the verdict says why).",
                bench.baseline,
                unproductive,
            )
        )
    return _dedupe(ordered)


def _dedupe(recs: Sequence[Recommendation]) -> list[Recommendation]:
    seen: set[str] = set()
    out = []
    for rec in recs:
        key = json.dumps([rec.changes or rec.title, rec.resolution], sort_keys=True, default=repr)
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out
