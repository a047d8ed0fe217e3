"""Findings -> concrete changes with their measured cost (:func:`recommend`).

The model's own knobs first (the moves of :mod:`.moves`); for a preset or library model that
a built-in family builds, the family's moves on the knobs the model lacks (``model`` names the
family, ``pins`` the family knobs that build the changed model); for a model without the knob
that would make a change, the change to make by hand in its code (empty ``changes``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from satadvisor import _flags, models
from satadvisor import spec as spec_mod
from satadvisor.receptive import ReceptiveFieldAnalysis
from satadvisor.rules.labels import names_label, short_names
from satadvisor.rules.moves import (
    efficiency,
    lower_resolution,
    performance,
    width_move,
)
from satadvisor.rules.records import Cost, Finding, Recommendation, RecommendationKind
from satadvisor.rules.workbench import SpecLike, Workbench, count_label, source_of
from satadvisor.spec import DATA_KNOB


def layer_labels(findings: Sequence[Finding], rf: ReceptiveFieldAnalysis | None) -> dict[str, str]:
    """The labels of the layers ``findings`` name, numbered as :func:`short_names` numbers the
    whole model (every layer of ``rf`` in forward order, when there is one)."""
    layers = list(rf.layers) if rf is not None else []
    names = [x.name for x in layers]
    names += [n for f in findings for n in f.layers if n not in set(names)]
    types = {x.name: x.module_type for x in layers}
    return short_names(list(dict.fromkeys(names)), types)


def _by_hand(
    kind: RecommendationKind, title: str, rationale: str, bench: Workbench
) -> Recommendation:
    return Recommendation(kind, title, {}, dict(bench.knobs), bench.resolution, rationale)


def _owned(spec: SpecLike) -> bool:
    """Whether the model's code is the user's (a model file), not satadvisor's built-in models
    or a library's (``builtin:``, ``torchvision:``, ``timm:``)."""
    return not source_of(spec).startswith(("builtin:", "torchvision:", "timm:"))


def _family_moves(
    findings: Mapping[str, Finding], bench: Workbench, rf: ReceptiveFieldAnalysis | None
) -> list[Recommendation]:
    """The moves of the built-in family that builds a preset or library model, for the knobs
    the model itself lacks (a preset has no depth knob; the family has).

    Each move is built and measured with the family's knobs and its cost given against the
    analysed model; ``model`` names the family and ``pins`` set every family knob that
    differs from the family's defaults, so the command builds the changed model from scratch.
    """
    source = source_of(bench.spec)
    member = models.family_member(source, bench.knobs)
    if member is None or _owned(bench.spec):
        return []
    family_spec = spec_mod.load(member.family)
    fam = Workbench(
        family_spec,
        dict(member.knobs),
        bench.resolution,
        bench.num_classes,
        bench.in_channels,
        bench.source_resolution,
    )
    moves: list[Recommendation | None] = []
    if "tail" in findings:
        if fam.has(fam.roles.depth):
            moves.append(efficiency(fam, findings["tail"]))
        moves += performance(fam, findings["tail"], rf)
    capacity = [findings[k] for k in ("too_narrow", "too_wide") if k in findings]
    if capacity and fam.has(fam.roles.width):
        moves.append(width_move(fam, max(capacity, key=lambda f: len(f.layers))))
    name = source.removeprefix("builtin:")
    same = ", ".join(f"{k}={_flags.format_value(v)}" for k, v in member.knobs.items())
    note = f" ({member.note})" if member.note else ""
    out = []
    for move in moves:
        if move is None:
            continue
        missing = sorted(k for k in move.changes if k != DATA_KNOB and k not in bench.knobs)
        if not missing:
            continue  # the model's own knobs make this move (offered as such)
        knobs = {**member.knobs, **{k: v for k, v in move.changes.items() if k != DATA_KNOB}}
        pins = {k: v for k, v in knobs.items() if family_spec.knobs.get(k) != v}
        if DATA_KNOB in move.changes:
            pins[DATA_KNOB] = move.changes[DATA_KNOB]
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
                member.family,
                pins,
            )
        )
    return out


def _textual(
    findings: Sequence[Finding], bench: Workbench, rf: ReceptiveFieldAnalysis | None
) -> list[Recommendation]:
    """Changes to make in the model's code, for models without the knob that would make them."""
    out = []
    labels = layer_labels(findings, rf)
    for f in findings:
        span = names_label(f.layers, list(f.layers), labels) if f.layers else ""
        if f.kind == "tail" and not bench.has(bench.roles.depth):
            saved = bench.layer_cost(f.layers)
            title, predicted = f"Remove {span} by hand", ""
            if saved is not None and bench.baseline is not None:
                base = bench.baseline
                ratio = (base.macs - saved[0]) / max(base.macs, 1)
                title += f" (about {ratio:.2f}× MACs)"
                macs, params = count_label(saved[0]), count_label(saved[1])
                predicted = (
                    f" Predicted from those layers' own measured cost: about {macs} "
                    f"of the {count_label(base.macs)} MACs per input ({ratio:.2f}× left) and "
                    f"{params} of the {count_label(base.params)} parameters go; the "
                    "layers around them may need their channels matched."
                )
            if _owned(bench.spec):
                how = (
                    f"The model has no depth knob: delete those {len(f.layers)} layers in its code."
                )
            else:
                how = (
                    f"{source_of(bench.spec)} has no depth knob and its code is not part of your "
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
        if f.kind in ("too_narrow", "too_wide") and not bench.has(bench.roles.width):
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
    bench = Workbench(
        spec, dict(knobs), int(resolution), num_classes, in_channels, source_resolution
    )
    first: dict[str, Finding] = {}
    for f in findings:
        first.setdefault(f.kind, f)
    family = _family_moves(first, bench, rf) if spec.optimisable else []
    textual = _textual(findings, bench, rf)
    if any(r.kind == "efficiency" and r.changes for r in family):
        # the family's depth replaces cutting the layers out of code the user does not own
        textual = [r for r in textual if not (r.kind == "efficiency" and not r.changes)]
    recs: list[Recommendation | None] = [*textual, *family]
    if spec.optimisable:
        if "tail" in first:
            if bench.has(bench.roles.depth):
                recs.append(efficiency(bench, first["tail"]))
            recs += performance(bench, first["tail"], rf)
        if "early_underuse" in first:
            recs.append(lower_resolution(bench, first["early_underuse"], rf))
        capacity = [first[k] for k in ("too_narrow", "too_wide") if k in first]
        if capacity and bench.has(bench.roles.width):
            # One width knob cannot widen some layers and narrow others: follow the majority.
            recs.append(width_move(bench, max(capacity, key=lambda f: len(f.layers))))
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
