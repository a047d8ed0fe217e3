"""Model files and built-in names -> :class:`ModelSpec` (DESIGN.md "The model file").

A model file is a Python file that defines ``build_model`` (optimisable) or ``model`` (a fixed
``nn.Module``: analysable, not optimisable), and optionally ``SEARCH_SPACE``, ``DATASET`` and
``RESOLUTION``::

    def build_model(depth: int = 8, kernel_size: int = 3, width: int = 32, *,
                    num_classes: int, in_channels: int) -> torch.nn.Module: ...

    SEARCH_SPACE = {"depth": [4, 6, 8], "kernel_size": [3, 5], "resolution": [16, 24, 32]}
    DATASET = "digits"
    RESOLUTION = 16

The keyword parameters of ``build_model`` with defaults are the *knobs*; ``num_classes`` and
``in_channels`` are filled in from the dataset when accepted; ``resolution`` is the data knob
handled by satadvisor. Loading a file runs it, like running a training script. Every failure
is a one-line :class:`ModelFileError`, :class:`ModelBuildError` or :class:`UsageError` that
names the file and the fix.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib.machinery
import importlib.util
import inspect
import itertools
import math
import numbers
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from satadvisor.config import RESOLUTION_RANGE
from satadvisor.errors import ModelBuildError, ModelFileError, SatAdvisorError, UsageError
from satadvisor.models import get_model_fn, input_dims, list_models, model_knobs
from satadvisor.models._library import is_library
from satadvisor.models._library import resolve as resolve_library

#: The embedded default: this built-in family on the bundled digits at 16 px.
DEFAULT_MODEL = "vgg"
DEFAULT_DATASET = "digits"
DEFAULT_RESOLUTION = 16
#: Looked for in the working directory when no model is given.
MODEL_FILE = "model.py"
#: The data knob: accepted in --set and SEARCH_SPACE whether or not build_model takes it.
DATA_KNOB = "resolution"
BUILTIN_PREFIX = "builtin:"

_INJECTED = ("num_classes", "in_channels")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_module_ids = itertools.count()


@dataclass(frozen=True)
class ModelSpec:
    """What is measured: a build function with its knobs, or a fixed model.

    ``name`` is the file stem or the built-in name; ``source`` the file path (relative to the
    working directory when under it) or ``"builtin:NAME"`` — both can be passed to
    :func:`load` again. ``knobs`` maps each knob to its default; ``accepts`` says which of
    num_classes / in_channels ``build`` takes; ``search_space`` maps knobs (and possibly
    ``resolution``) to the tuple of values to search, or is None; ``dataset`` / ``resolution``
    are the file's defaults (pixels), or None.
    """

    name: str
    source: str
    build: Callable[..., nn.Module] | None
    knobs: dict[str, Any] = field(default_factory=dict)
    accepts: frozenset[str] = frozenset()
    search_space: dict[str, tuple[Any, ...]] | None = None
    dataset: str | None = None
    resolution: int | None = None
    model: nn.Module | None = None

    @property
    def optimisable(self) -> bool:
        """True when the architecture can be changed (a ``build_model``, not a fixed model)."""
        return self.build is not None

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The knob defaults updated with ``overrides`` (validated and type-coerced).

        ``resolution`` in ``overrides`` is kept in the result (it is the data knob), whether
        or not ``build_model`` takes it.
        """
        values = dict(self.knobs)
        for key, value in (overrides or {}).items():
            if key in self.knobs:
                values[key] = _coerce(key, value, self.knobs[key], self.source)
            elif key == DATA_KNOB:
                values[key] = _coerce_resolution(value, self.source)
            else:
                raise self._unknown_knob(key)
        return values

    def parse_set(self, items: Iterable[str]) -> dict[str, Any]:
        """``["depth=6", "batch_norm=false"]`` -> ``{"depth": 6, "batch_norm": False}``.

        Values take the type of the knob's default; ``resolution`` is accepted too. A knob
        given twice keeps its last value.
        """
        parsed: dict[str, Any] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise UsageError(f"bad --set {item!r}: write KNOB=VALUE, e.g. --set depth=6")
            if key in self.knobs:
                parsed[key] = _coerce(key, raw.strip(), self.knobs[key], self.source)
            elif key == DATA_KNOB:
                parsed[key] = _coerce_resolution(raw.strip(), self.source)
            else:
                raise self._unknown_knob(key)
        return parsed

    def create(self, *, num_classes: int, in_channels: int, **knobs: Any) -> nn.Module:
        """Build the model for ``knobs`` (defaults for the rest); a fixed model is copied.

        ``resolution`` is passed on only when ``build_model`` takes it. Exceptions raised by
        ``build_model`` become :class:`ModelBuildError` naming the file and the knob values.
        """
        if self.build is None:
            extra = [key for key in knobs if key != DATA_KNOB]
            if extra:
                raise UsageError(
                    f"{self.source} defines a fixed `model`, so knob {extra[0]!r} cannot be "
                    "set; define build_model(...) to make the architecture adjustable"
                )
            # A copy, so that every run starts from the same weights.
            return copy.deepcopy(self.model) if self.model is not None else nn.Identity()
        values = self.resolve(knobs)
        if DATA_KNOB not in self.knobs:
            values.pop(DATA_KNOB, None)
        shown = ", ".join(f"{key}={value!r}" for key, value in values.items())
        call = dict(values)
        if "num_classes" in self.accepts:
            call["num_classes"] = num_classes
        if "in_channels" in self.accepts:
            call["in_channels"] = in_channels
        fn_name = getattr(self.build, "__name__", "build_model")
        try:
            with _on_sys_path(self._directory()):
                built = self.build(**call)
        except SatAdvisorError:
            raise
        except Exception as exc:
            raise ModelBuildError(
                f"{self.source}: {fn_name}({shown}) raised {type(exc).__name__}: "
                f"{_one_line(exc)}; fix {fn_name} or the knob values"
            ) from exc
        if not isinstance(built, nn.Module):
            raise ModelBuildError(
                f"{self.source}: {fn_name}({shown}) returned {type(built).__name__}, not a "
                "torch.nn.Module; return the network"
            )
        return built

    def _unknown_knob(self, key: str) -> UsageError:
        known = ", ".join([*self.knobs, DATA_KNOB])
        return UsageError(
            f"unknown knob {key!r} for {self.source}: known knobs are {known}; fix the --set"
        )

    def _directory(self) -> str | None:
        if self.source.startswith(BUILTIN_PREFIX) or is_library(self.source):
            return None
        return os.path.dirname(os.path.abspath(self.source))


def load(
    path_or_name: str | os.PathLike[str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> ModelSpec:
    """Load a model file, a built-in name (or ``"builtin:NAME"``), a library model
    (``"torchvision:NAME"``, ``"timm:NAME"``), or the default.

    None means ``./model.py`` in ``cwd`` (default: the working directory) when present, else
    the embedded default :data:`DEFAULT_MODEL` on :data:`DEFAULT_DATASET` at
    :data:`DEFAULT_RESOLUTION` px. An existing file wins over a built-in of the same name.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    if path_or_name is None:
        default_file = base / MODEL_FILE
        if default_file.is_file():
            return _load_file(default_file, MODEL_FILE)
        return builtin_spec(DEFAULT_MODEL, dataset=DEFAULT_DATASET, resolution=DEFAULT_RESOLUTION)
    text = os.fspath(path_or_name)
    if not text.strip():
        raise ModelFileError(
            "empty MODEL argument; pass a model file, a built-in name, or nothing for the default"
        )
    path = Path(text) if os.path.isabs(text) else base / text
    if path.is_file():
        return _load_file(path, text)
    if is_library(text):
        return library_spec(text)
    name = text.removeprefix(BUILTIN_PREFIX)
    if name in list_models():
        return builtin_spec(name)
    if path.is_dir():
        raise ModelFileError(f"{text}: is a directory; pass a model file (.py) inside it")
    names = ", ".join(list_models())
    raise ModelFileError(
        f"{text}: no such file; pass a model file, a built-in name ({names}), "
        "torchvision:NAME, timm:NAME or nothing"
    )


def library_spec(source: str) -> ModelSpec:
    """The spec of ``torchvision:NAME`` or ``timm:NAME``, built without pretrained weights.

    Its knobs are the model class's own architecture arguments that the library lets through
    (e.g. ``width_mult`` of ``torchvision:mobilenet_v2``), plus ``resolution`` for models built
    for one input size (vision transformers); see :mod:`satadvisor.models._library`.
    """
    resolved = resolve_library(source.strip())
    return ModelSpec(
        name=resolved.name,
        source=resolved.source,
        build=resolved.build,
        knobs=dict(resolved.knobs),
        accepts=frozenset(_INJECTED),
    )


def builtin_spec(
    name: str, *, dataset: str | None = None, resolution: int | None = None
) -> ModelSpec:
    """The spec of the registered model ``name`` (no search space: the search derives one)."""
    return ModelSpec(
        name=name,
        source=f"{BUILTIN_PREFIX}{name}",
        build=get_model_fn(name),
        knobs=model_knobs(name),
        accepts=frozenset(_INJECTED),
        dataset=dataset,
        resolution=resolution,
    )


def check_output(
    model: nn.Module,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int,
    source: str,
    spatial_dims: int | None = None,
) -> None:
    """Dry forward of a (2, in_channels, resolution, resolution) zero batch in eval mode
    ((2, in_channels, resolution) for signals: ``spatial_dims=1``; None reads it from the
    model's first convolution or pooling layer, see :func:`satadvisor.models.input_dims`).

    Raises :class:`ModelBuildError` when the forward fails or the output is not a tensor of
    shape (2, num_classes). The model's training mode is restored afterwards.
    """
    dims = input_dims(model) if spatial_dims is None else spatial_dims
    reference = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = torch.float32
    if reference is not None and reference.is_floating_point():
        dtype = reference.dtype
    shape = (2, in_channels, *(resolution,) * dims)
    batch = torch.zeros(shape, device=device, dtype=dtype)
    unit = "samples" if dims == 1 else "px"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch)
    except SatAdvisorError:
        raise
    except Exception as exc:
        raise ModelBuildError(
            f"{source}: the model fails on a {tuple(shape)} input with {type(exc).__name__}: "
            f"{_one_line(exc)}; make it accept in_channels={in_channels} at {resolution} {unit}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelBuildError(
            f"{source}: the model outputs a {type(out).__name__}, not a tensor; return the "
            "logits of shape (batch, num_classes)"
        )
    got = tuple(out.shape)
    if got == (2, num_classes):
        return
    if len(got) == 2 and got[0] == 2:
        raise ModelBuildError(
            f"{source}: the model outputs shape {got} but the dataset has {num_classes} "
            "classes; make build_model use num_classes"
        )
    raise ModelBuildError(
        f"{source}: the model outputs shape {got}, expected (2, {num_classes}) for a batch "
        "of 2; flatten the output to (batch, num_classes) logits"
    )


# --- loading a file ------------------------------------------------------------------------


def _load_file(path: Path, shown: str) -> ModelSpec:
    path = Path(os.path.abspath(path))
    try:
        with open(path, "rb"):
            pass  # unreadable files fail here with a clear reason, not inside the import system
    except OSError as exc:
        raise ModelFileError(
            f"{shown}: cannot be read ({exc.strerror or type(exc).__name__}); check the file's "
            "permissions"
        ) from exc
    module = _execute(path, shown)
    build = getattr(module, "build_model", None)
    fixed = getattr(module, "model", None)
    knobs: dict[str, Any] = {}
    accepts: frozenset[str] = frozenset()
    if build is None and fixed is None:
        raise ModelFileError(
            f"{shown}: defines neither build_model nor model; add "
            "`def build_model(depth=8, *, num_classes, in_channels)` or `model = <nn.Module>`"
        )
    if build is not None:
        if not callable(build):
            raise ModelFileError(
                f"{shown}: build_model is a {type(build).__name__}, not a function; define it "
                "with `def build_model(...)`"
            )
        knobs, accepts = _signature(build, shown)
        fixed = None  # build_model wins: the file is optimisable
    elif isinstance(fixed, type):
        raise ModelFileError(
            f"{shown}: model is the class {fixed.__name__}, not a network; write "
            f"`model = {fixed.__name__}()`"
        )
    elif not isinstance(fixed, nn.Module):
        raise ModelFileError(
            f"{shown}: model is a {type(fixed).__name__}, not a torch.nn.Module; assign a "
            "network, e.g. `model = nn.Sequential(...)`"
        )
    return ModelSpec(
        name=path.stem,
        source=_source(path),
        build=build,
        knobs=knobs,
        accepts=accepts,
        search_space=_search_space(getattr(module, "SEARCH_SPACE", None), knobs, shown),
        dataset=_dataset(getattr(module, "DATASET", None), shown),
        resolution=_resolution(getattr(module, "RESOLUTION", None), shown),
        model=fixed,
    )


def _execute(path: Path, shown: str) -> Any:
    """Run the file as a fresh module (unique name, its directory on sys.path meanwhile)."""
    name = f"_satadvisor_model_{next(_module_ids)}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module_spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    if module_spec is None:  # pragma: no cover - only for exotic paths
        raise ModelFileError(f"{shown}: cannot be loaded as Python; pass a .py file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered while it runs, so dataclasses and pickling inside the file work.
    sys.modules[name] = module
    try:
        with _on_sys_path(str(path.parent)):
            loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        line = f":{exc.lineno}" if exc.lineno is not None else ""
        where = f"{shown}{line}"
        if exc.filename and os.path.abspath(exc.filename) != str(path):
            where = f"{shown}: in {exc.filename}{line}"
        raise ModelFileError(f"{where}: syntax error: {exc.msg}; fix the model file") from None
    except SystemExit:
        sys.modules.pop(name, None)
        raise ModelFileError(
            f"{_line(path, shown, sys.exc_info()[2])}: the file exits when loaded; put script "
            'code under `if __name__ == "__main__":`'
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        where = _line(path, shown, exc.__traceback__)
        if isinstance(exc, ImportError):
            raise ModelFileError(
                f"{where}: import failed: {_one_line(exc)}; install the package or fix the import"
            ) from exc
        raise ModelFileError(
            f"{where}: loading the file raised {type(exc).__name__}: {_one_line(exc)}; "
            "fix the model file"
        ) from exc
    return module


def _line(path: Path, shown: str, tb: Any) -> str:
    """``shown:LINE`` of the deepest traceback frame inside the model file, else ``shown``."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == str(path):
            line = lineno
    return f"{shown}:{line}" if line is not None else shown


def _signature(build: Callable[..., Any], shown: str) -> tuple[dict[str, Any], frozenset[str]]:
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
            accepts.update(_INJECTED)
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.name in _INJECTED:
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


def _search_space(
    raw: Any, knobs: Mapping[str, Any], shown: str
) -> dict[str, tuple[Any, ...]] | None:
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
        checked: list[Any] = []
        seen: set[Any] = set()  # a long list (100k values) is checked in linear time
        for value in values:
            value = _space_value(key, value, knobs, shown)
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


def _space_value(key: str, value: Any, knobs: Mapping[str, Any], shown: str) -> Any:
    """One SEARCH_SPACE value, checked against the type of the knob's default."""
    if key == DATA_KNOB and key not in knobs:
        if _in_resolution_range(value):
            return int(value)
        low, high = RESOLUTION_RANGE
        raise ModelFileError(
            f"{shown}: SEARCH_SPACE['resolution'] holds {value!r}; resolutions are ints from "
            f"{low} to {high} (pixels)"
        )
    kind = _kind(knobs[key])
    ok = {
        "int": _is_int(value),
        "float": _is_number(value) and math.isfinite(value),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(kind or "", isinstance(value, bool | str) or _is_number(value))
    if not ok:
        raise ModelFileError(
            f"{shown}: SEARCH_SPACE[{key!r}] holds {value!r} ({type(value).__name__}), but the "
            f"default {key}={knobs[key]!r} is {_article(kind)}; give {kind or 'simple'} values"
        )
    if kind == "float":
        return float(value)
    return int(value) if kind == "int" else value


def _dataset(raw: Any, shown: str) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    raise ModelFileError(
        f"{shown}: DATASET is a {type(raw).__name__}, not a string; write e.g. DATASET = 'digits'"
    )


def _resolution(raw: Any, shown: str) -> int | None:
    if raw is None:
        return None
    if _in_resolution_range(raw):
        return int(raw)
    low, high = RESOLUTION_RANGE
    raise ModelFileError(
        f"{shown}: RESOLUTION is {raw!r}; give the input size in pixels as an int from {low} "
        f"to {high}, e.g. RESOLUTION = 32"
    )


def _in_resolution_range(value: Any) -> bool:
    low, high = RESOLUTION_RANGE
    return _is_int(value) and low <= value <= high


def _source(path: Path) -> str:
    """The path relative to the working directory when it lies under it, else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith(os.pardir) else relative


@contextlib.contextmanager
def _on_sys_path(directory: str | None) -> Iterator[None]:
    """Put ``directory`` first on sys.path while the block runs (sibling imports work)."""
    if directory is None or directory in sys.path:
        yield
        return
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)


# --- values --------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind(default: Any) -> str | None:
    """The type name a knob's values must have, from its default (None: any simple value)."""
    for kind in (bool, int, float, str):  # bool first: it is an int subclass
        if isinstance(default, kind):
            return kind.__name__
    return None


def _article(kind: str | None) -> str:
    return {"int": "an int", "float": "a float", "bool": "a bool", "str": "a string"}.get(
        kind or "", "a simple value"
    )


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """``value`` converted to the type of ``default``; UsageError naming the knob otherwise."""
    kind = _kind(default)
    try:
        return _convert(kind, value)
    except (TypeError, ValueError):
        raise UsageError(
            f"knob {key!r} of {source} expects {_article(kind)} (default {default!r}), got "
            f"{value!r}; fix the --set"
        ) from None


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
        if text.lower() in ("none", "null"):
            return None  # the shell spelling of the default (e.g. --set stages=none)
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ValueError(value)


def _coerce_resolution(value: Any, source: str) -> int:
    try:
        number = _convert("int", value)
    except (TypeError, ValueError):
        number = 0
    if not _in_resolution_range(number):
        low, high = RESOLUTION_RANGE
        raise UsageError(
            f"resolution for {source} must be an int from {low} to {high} (pixels), got "
            f"{value!r}; fix the --set"
        )
    return int(number)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace collapsed, at most 300 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
