"""The moves: knob changes that answer a finding, each built and measured on the workbench.

What a knob does comes from the family's declaration (:class:`satadvisor.models.KnobRoles`,
on ``bench.roles``): the depth knob cuts a tail, the receptive-field knobs slow the growth of
the receptive field, the width knob doubles or halves the channels. No knob or family is named
here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from satadvisor.models import ReceptiveKnob
from satadvisor.receptive import ReceptiveFieldAnalysis
from satadvisor.rules.records import Finding, Recommendation
from satadvisor.rules.workbench import Workbench, conv_count
from satadvisor.spec import DATA_KNOB

#: Receptive-field kinds whose first step is offered on its own, and what that step does.
_STEPPED = {
    "downsampling_count": "removes the earliest downsampling and keeps every layer's channels",
    "downsampling_spacing": "spaces the downsamplings further apart",
}
#: How many values above the current one a ``downsampling_spacing`` knob tries (without a
#: search space or declared choices).
_SPACING_STEPS = 16


def _ordinal(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def efficiency(bench: Workbench, tail: Finding) -> Recommendation | None:
    """The value of the depth knob whose built model has the most conv layers, at most
    (current − tail length)."""
    knob = bench.roles.depth
    base = bench.build({})
    if knob is None or base is None:
        return None
    current = bench.knobs[knob]
    total = conv_count(base)
    target = total - len(tail.layers)
    if target < 1:
        return None

    def fits(values: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for value in values:
            model = bench.build({knob: value})
            if model is not None and conv_count(model) <= target:
                yield conv_count(model), value

    # The listed values first: the fit with the most conv layers is the mildest cut.
    found = max(fits(bench.values(knob)), key=lambda t: t[0], default=None)
    if found is None and _ordinal(current):
        # Descending, so the first fit is the mildest cut (conv count grows with depth).
        found = next(fits(range(current - 1, 0, -1)), None)
    if found is None:
        return None
    convs, value = found
    rationale = (
        f"{knob[:1].upper()}{knob[1:]} {value} builds {convs} conv layers instead of {total} "
        f"(at most {total} − {len(tail.layers)} = {target})."
    )
    title = f"Remove the tail: {knob} {current} → {value}"
    return bench.make("efficiency", title, {knob: value}, rationale)


def _rf_candidates(bench: Workbench, role: ReceptiveKnob) -> list[Any]:
    """Values of a receptive-field knob to try, mildest first."""
    current = bench.knobs[role.name]
    space = bench.values(role.name)
    if role.kind == "switch":
        if not current or str(current).lower() == "none":
            return []
        if space:
            return [v for v in space if not v or str(v).lower() == "none"]
        return [False] if isinstance(current, bool) else ([0] if _ordinal(current) else [])
    if not _ordinal(current):
        return []
    if role.kind == "downsampling_spacing":  # more layers between pools: higher is slower
        if space:
            return sorted(v for v in space if _ordinal(v) and v > current)
        return list(range(current + 1, current + 1 + _SPACING_STEPS))
    if space:
        return sorted((v for v in space if _ordinal(v) and v < current), reverse=True)
    if role.kind == "kernel":  # odd keeps 'same' padding; 1×1 would not grow
        return list(range(current - 2, 2, -2))
    if role.kind == "stride":
        return [1] if current > 1 else []
    return list(range(current - 1, -1, -1))  # a downsampling count


def _rf_changes(
    bench: Workbench, base: nn.Module, role: ReceptiveKnob, value: Any
) -> dict[str, Any]:
    """The knob change, plus the role's ``layout`` knob pinned when it is left at None.

    A layout knob at None (a ``stages`` knob: one stage per downsampling) would otherwise
    follow the change and lose stages, and with them channels; pinned to the built model's
    ``num_stages``, fewer downsamplings only remove the earliest pools or strides.
    """
    changes = {role.name: value}
    stages = getattr(base, "num_stages", None)
    layout = role.layout
    if layout is not None and bench.knobs.get(layout, 0) is None and isinstance(stages, int):
        changes[layout] = stages
    return changes


def _rf_rationale(tail: Finding, effect: str) -> str:
    return (
        f"Slower receptive-field growth keeps the deep layers' inputs smaller "
        f"than the image: {effect}."
    )


def performance(
    bench: Workbench, tail: Finding, rf: ReceptiveFieldAnalysis | None
) -> list[Recommendation]:
    """Slower receptive-field growth, or a higher resolution: per knob the mildest change whose
    built model has no unproductive layer (checked with receptive.analyze).

    The knobs are the family's receptive-field knobs (:attr:`KnobRoles.receptive`), in their
    order. For a count of downsamplings (or their spacing), when that fix takes more than one
    step, the single step (one downsampling fewer, at a fraction of the fix's compute) comes
    first when it leaves fewer unproductive layers. When the receptive field flags nothing at the
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
    for role in (k for k in bench.roles.receptive if bench.has(k.name)):
        knob, step = role.name, None
        for i, value in enumerate(_rf_candidates(bench, role)):
            changes = _rf_changes(bench, base, role, value)
            model = bench.build(changes)
            after = bench.analyze(model, px) if model is not None else None
            if after is None:
                continue
            title = f"Slow the receptive-field growth: {knob} {bench.knobs[knob]} → {value}"
            if verified and after.unproductive:
                if (
                    i == 0
                    and role.kind in _STEPPED
                    and len(after.unproductive) < len(rf.unproductive)
                ):
                    effect = (
                        f"{knob}={value} {_STEPPED[role.kind]}; {len(after.unproductive)} of the "
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
            rec = bench.make("performance", title, {DATA_KNOB: best}, rationale)
            out += [rec] if rec is not None else []
    return out


def lower_resolution(
    bench: Workbench, early: Finding, rf: ReceptiveFieldAnalysis | None
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
    space = [int(v) for v in bench.values(DATA_KNOB) if floor <= int(v) < bench.resolution]
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
    return bench.make("resolution", title, {DATA_KNOB: target}, rationale)


def width_move(bench: Workbench, finding: Finding) -> Recommendation | None:
    """Double the width knob for a layer that is too narrow, halve it for one too wide."""
    knob = bench.roles.width
    if knob is None:
        return None
    current = bench.knobs[knob]
    narrow = finding.kind == "too_narrow"
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        return None
    new: int | float = current * 2 if narrow else current / 2
    if isinstance(current, int):
        new = int(new) if narrow else max(1, current // 2)
    if new == current:
        return None
    title = f"{'Widen' if narrow else 'Narrow'} the network: {knob} {current} → {new}"
    rationale = (
        f"{'Doubling' if narrow else 'Halving'} the {knob} knob: those layers use almost "
        f"{'all' if narrow else 'none'} of their channels."
    )
    return bench.make("width", title, {knob: new}, rationale)
