"""Knob values: what type each knob takes, and ``--set`` / ``SEARCH_SPACE`` values checked
and converted to it.

A knob's type comes from ``build_model``'s annotation when it names one satadvisor can check
(``int``, ``float``, ``bool``, ``str``, ``X | None`` / ``Optional[X]`` of those, and
``Literal[...]`` choices; string annotations of ``from __future__ import annotations`` are
evaluated in the function's module), else from the type of the knob's default.
"""

from __future__ import annotations

import ast
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from satadvisor._flags import flag
from satadvisor.config import RESOLUTION_RANGE
from satadvisor.errors import UsageError

#: The data knob: accepted in --set and SEARCH_SPACE whether or not build_model takes it.
DATA_KNOB = "resolution"
INJECTED = ("num_classes", "in_channels")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}
_KINDS = (bool, int, float, str)  # bool first: it is an int subclass


@dataclass(frozen=True)
class KnobType:
    """The values a knob takes: ``kind`` (``"int"``, ``"float"``, ``"bool"``, ``"str"``, or
    None for any simple value), whether None is allowed, and the ``choices`` of a ``Literal``.
    ``declared`` is True when it comes from an annotation, not from the default."""

    kind: str | None
    optional: bool = False
    choices: tuple[Any, ...] | None = None
    declared: bool = False

    @classmethod
    def of_default(cls, default: Any) -> KnobType:
        """The type of an unannotated knob: that of its default."""
        return cls(_kind(default))

    def describe(self) -> str:
        """``an int``, ``a float or none``, ``one of 'a', 'b'``: for messages."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices if c is not None)
        else:
            text = _article(self.kind)
        return f"{text} or none" if self.optional and self.kind is not None else text

    def convert(self, value: Any) -> Any:
        """``value`` (a Python value or the text after ``KNOB=``) as this type; ValueError or
        TypeError when it is not one."""
        text = value.strip() if isinstance(value, str) else None
        if self.optional and (value is None or (text is not None and text.lower() in _NONE)):
            return None
        if self.choices is not None:
            for choice in self.choices:
                if choice is not None and _matches(choice, value, text):
                    return choice
            raise ValueError(value)
        return _convert(self.kind, value)

    def accepts(self, value: Any) -> bool:
        """Whether a Python value (from ``SEARCH_SPACE``) is one of this type, unconverted."""
        if value is None:
            return self.optional or self.kind is None
        if self.choices is not None:
            return any(_same(choice, value) for choice in self.choices)
        return {
            "int": _is_int(value),
            "float": _is_number(value) and math.isfinite(value),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(self.kind or "", isinstance(value, bool | str) or _is_number(value))


def knob_types(fn: Callable[..., Any], knobs: Mapping[str, Any]) -> dict[str, KnobType]:
    """The type of every knob of ``fn``: from its annotation when satadvisor can check it,
    else from its default in ``knobs``."""
    annotations = _annotations(fn)
    found: dict[str, KnobType] = {}
    for name, default in knobs.items():
        declared = _from_annotation(annotations.get(name, inspect.Parameter.empty))
        if declared is None:
            found[name] = KnobType.of_default(default)
        elif default is None and not declared.optional:  # `x: int = None`: None stays valid
            found[name] = KnobType(declared.kind, True, declared.choices, True)
        else:
            found[name] = declared
    return found


def _annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> annotation, string annotations evaluated one by one (one that cannot
    be evaluated is left out, so its knob falls back to its default's type)."""
    try:
        return {
            name: param.annotation
            for name, param in inspect.signature(fn, eval_str=True).parameters.items()
        }
    except Exception:  # a name the module does not define (e.g. under TYPE_CHECKING)
        pass
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    namespace = dict(getattr(inspect.unwrap(fn), "__globals__", {}))
    found: dict[str, Any] = {}
    for name, param in params.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # what eval_str does, knob by knob
            except Exception:
                continue
        found[name] = annotation
    return found


def _from_annotation(annotation: Any) -> KnobType | None:
    """The :class:`KnobType` an annotation names, or None when it names none satadvisor checks
    (no annotation, ``Any``, ``tuple[int, ...]``, a union of two types)."""
    if annotation in _KINDS:
        return KnobType(annotation.__name__, declared=True)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        kinds = {_kind(arg) for arg in args if arg is not None}
        kind = kinds.pop() if len(kinds) == 1 else None
        return KnobType(kind, None in args, tuple(args), True)
    if origin is typing.Union or origin is types.UnionType:
        rest = [arg for arg in args if arg is not type(None)]
        inner = _from_annotation(rest[0]) if len(rest) == 1 else None
        if inner is None:
            return None
        return KnobType(inner.kind, inner.optional or len(rest) < len(args), inner.choices, True)
    return None


def coerce(key: str, value: Any, knob: KnobType, default: Any, source: str) -> Any:
    """``value`` converted to ``knob``'s type; a one-line UsageError naming the knob otherwise."""
    try:
        return knob.convert(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"knob {key!r} of {source} expects {knob.describe()} (default {default!r}), got "
            f"{value!r}; fix the {flag('set')}"
        ) from None


def coerce_resolution(value: Any, source: str) -> int:
    """A ``--set resolution=`` value: an int in :data:`RESOLUTION_RANGE`."""
    try:
        number = _convert("int", value)
    except (TypeError, ValueError):
        number = 0
    if not in_resolution_range(number):
        low, high = RESOLUTION_RANGE
        raise UsageError(
            f"resolution for {source} must be an int from {low} to {high} (pixels), got "
            f"{value!r}; fix the {flag('set')}"
        )
    return int(number)


def in_resolution_range(value: Any) -> bool:
    low, high = RESOLUTION_RANGE
    return _is_int(value) and low <= value <= high


# --- values --------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind(default: Any) -> str | None:
    """The type name a knob's values must have, from its default (None: any simple value)."""
    for kind in _KINDS:
        if isinstance(default, kind):
            return kind.__name__
    return None


def _article(kind: str | None) -> str:
    return {"int": "an int", "float": "a float", "bool": "a bool", "str": "a string"}.get(
        kind or "", "a simple value"
    )


def _same(choice: Any, value: Any) -> bool:
    """``value == choice`` without True matching 1 (or 1 matching True)."""
    return isinstance(value, bool) == isinstance(choice, bool) and value == choice


def _matches(choice: Any, value: Any, text: str | None) -> bool:
    """Whether ``value`` (or its text) names the Literal choice ``choice``."""
    if text is None:
        return _same(choice, value)
    if isinstance(choice, str):
        return text == choice
    try:
        return _same(choice, _convert(_kind(choice), text))
    except (TypeError, ValueError):
        return False


def _convert(kind: str | None, value: Any) -> Any:
    text = value.strip() if isinstance(value, str) else None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if _is_int(value) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
    elif kind == "int":
        if _is_int(value):
            return int(value)
        if _is_number(value) and float(value).is_integer():
            return int(value)
        if text is not None:
            number = float(text)  # accepts "6" and "6.0"; ValueError otherwise
            if number.is_integer():
                return int(number)
    elif kind == "float":
        if _is_number(value):
            return float(value)
        if text is not None:
            return float(text)
    elif kind == "str":
        if isinstance(value, str):
            return value
    else:  # default None or another type: a Python literal when it parses, else the text
        if text is None:
            return value
        if text.lower() in _NONE:
            return None  # the shell spelling of the default (e.g. --set stages=none)
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ValueError(value)
