"""What a model file declares: ``build_model``'s knobs and the names it accepts, and the
module-level ``SEARCH_SPACE``, ``DATASET`` and ``RESOLUTION``, each checked with a one-line
:class:`~satadvisor.errors.ModelFileError` naming the file and the fix."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from satadvisor.config import RESOLUTION_RANGE
from satadvisor.errors import ModelFileError
from satadvisor.models.knobs import CONVENTIONAL, KnobRoles
from satadvisor.spec._knobs import DATA_KNOB, INJECTED, KnobType, in_resolution_range


def signature(build: Callable[..., Any], shown: str) -> tuple[dict[str, Any], frozenset[str]]:
    """Knobs (keyword parameters with defaults) and the injected names build_model accepts."""
    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        raise ModelFileError(
            f"{shown}: the signature of build_model cannot be read; define it with def"
        ) from None
    knobs: dict[str, Any] = {}
    accepts: set[str] = set()
    for param in params:
        if param.kind is param.VAR_KEYWORD:
            accepts.update(INJECTED)
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.name in INJECTED:
            if param.kind is param.POSITIONAL_ONLY:
                raise ModelFileError(
                    f"{shown}: build_model takes {param.name} positionally only; make it a "
                    f"keyword parameter (`*, {param.name}`)"
                )
            accepts.add(param.name)
        elif param.default is param.empty or param.kind is param.POSITIONAL_ONLY:
            raise ModelFileError(
                f"{shown}: build_model parameter {param.name!r} has no default; give every "
                f"knob a keyword default, e.g. `{param.name}=8`"
            )
        else:
            knobs[param.name] = param.default
    return knobs, frozenset(accepts)


def search_space(
    raw: Any,
    knobs: Mapping[str, Any],
    shown: str,
    types: Mapping[str, KnobType] | None = None,
) -> dict[str, tuple[Any, ...]] | None:
    """``SEARCH_SPACE`` checked: known knobs, lists of distinct values of each knob's type."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ModelFileError(
            f"{shown}: SEARCH_SPACE is a {type(raw).__name__}, not a dict; write e.g. "
            "SEARCH_SPACE = {'depth': [4, 6, 8]}"
        )
    space: dict[str, tuple[Any, ...]] = {}
    for key, values in raw.items():
        if not isinstance(key, str) or (key not in knobs and key != DATA_KNOB):
            known = ", ".join([*knobs, DATA_KNOB])
            raise ModelFileError(
                f"{shown}: SEARCH_SPACE names {key!r}, which build_model does not take; "
                f"use its knobs ({known})"
            )
        if isinstance(values, str) or not isinstance(values, list | tuple | range):
            raise ModelFileError(
                f"{shown}: SEARCH_SPACE[{key!r}] is a {type(values).__name__}; give a list of "
                "values, e.g. [3, 5]"
            )
        if len(values) == 0:
            raise ModelFileError(
                f"{shown}: SEARCH_SPACE[{key!r}] is empty; give at least one value"
            )
        knob = None
        if key in knobs:
            knob = (types or {}).get(key) or KnobType.of_default(knobs[key])
        checked: list[Any] = []
        seen: set[Any] = set()  # a long list (100k values) is checked in linear time
        for value in values:
            value = _space_value(key, value, knob, knobs, shown)
            try:
                twice = value in seen
                seen.add(value)
            except TypeError:  # unhashable: compared one by one
                twice = value in checked
            if twice:
                raise ModelFileError(
                    f"{shown}: SEARCH_SPACE[{key!r}] lists {value!r} twice; list each value once"
                )
            checked.append(value)
        space[key] = tuple(checked)
    return space


def _space_value(
    key: str, value: Any, knob: KnobType | None, knobs: Mapping[str, Any], shown: str
) -> Any:
    """One SEARCH_SPACE value, checked against the knob's type (None: the data knob)."""
    if knob is None:
        if in_resolution_range(value):
            return int(value)
        low, high = RESOLUTION_RANGE
        raise ModelFileError(
            f"{shown}: SEARCH_SPACE['resolution'] holds {value!r}; resolutions are ints from "
            f"{low} to {high} (pixels)"
        )
    if not knob.accepts(value):
        why = (
            f"build_model declares {key} as {knob.describe()}"
            if knob.declared
            else f"the default {key}={knobs[key]!r} is {knob.describe()}"
        )
        raise ModelFileError(
            f"{shown}: SEARCH_SPACE[{key!r}] holds {value!r} ({type(value).__name__}), but "
            f"{why}; list only such values"
        )
    if value is None:
        return None
    if knob.kind == "float" and knob.choices is None:
        return float(value)
    return int(value) if knob.kind == "int" and knob.choices is None else value


def dataset(raw: Any, shown: str) -> str | None:
    """``DATASET``: a string or None."""
    if raw is None or isinstance(raw, str):
        return raw
    raise ModelFileError(
        f"{shown}: DATASET is a {type(raw).__name__}, not a string; write e.g. DATASET = 'digits'"
    )


def resolution(raw: Any, shown: str) -> int | None:
    """``RESOLUTION``: an int in :data:`RESOLUTION_RANGE` or None."""
    if raw is None:
        return None
    if in_resolution_range(raw):
        return int(raw)
    low, high = RESOLUTION_RANGE
    raise ModelFileError(
        f"{shown}: RESOLUTION is {raw!r}; give the input size in pixels as an int from {low} "
        f"to {high}, e.g. RESOLUTION = 32"
    )


def roles(raw: Any, knobs: Mapping[str, Any], shown: str) -> KnobRoles:
    """``KNOBS`` checked: a :class:`~satadvisor.models.KnobRoles` whose own knob names (those
    the conventional descriptor does not already name) are knobs of ``build_model``; None (no
    ``KNOBS``): the conventional names."""
    if raw is None:
        return CONVENTIONAL
    if not isinstance(raw, KnobRoles):
        raise ModelFileError(
            f"{shown}: KNOBS is a {type(raw).__name__}, not a KnobRoles; write e.g. "
            "`KNOBS = KnobRoles(depth='blocks')` (from satadvisor.models import KnobRoles)"
        )
    unknown = sorted(raw.names() - CONVENTIONAL.names() - set(knobs))
    if unknown:
        raise ModelFileError(
            f"{shown}: KNOBS names {', '.join(map(repr, unknown))}, which build_model does not "
            "take; name its keyword parameters"
        )
    return raw
