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

The public face (:class:`ModelSpec`, :func:`load`, :func:`builtin_spec`, :func:`library_spec`,
:func:`check_output`) is here; :mod:`._modelfile` runs a file (once per process for each
version of it), :mod:`._knobs` types the knobs (from ``build_model``'s annotations, else the
defaults) and converts ``--set`` and ``SEARCH_SPACE`` values, :mod:`._contract` checks what
the file declares, :mod:`._check` dry-runs a built model.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from satadvisor._flags import flag
from satadvisor.errors import ModelBuildError, ModelFileError, SatAdvisorError, UsageError
from satadvisor.models import KnobRoles, get_model_fn, knob_roles, list_models, model_knobs
from satadvisor.models._library import is_library
from satadvisor.models._library import resolve as resolve_library
from satadvisor.models.knobs import CONVENTIONAL
from satadvisor.spec import _contract, _knobs
from satadvisor.spec._check import check_output
from satadvisor.spec._knobs import DATA_KNOB, INJECTED, KnobType
from satadvisor.spec._modelfile import execute, on_sys_path, one_line, source_of

__all__ = [
    "BUILTIN_PREFIX",
    "DATA_KNOB",
    "DEFAULT_DATASET",
    "DEFAULT_MODEL",
    "DEFAULT_RESOLUTION",
    "MODEL_FILE",
    "KnobType",
    "ModelSpec",
    "builtin_spec",
    "check_output",
    "library_spec",
    "load",
]

#: The embedded default: this built-in family on the bundled digits at 16 px.
DEFAULT_MODEL = "vgg"
DEFAULT_DATASET = "digits"
DEFAULT_RESOLUTION = 16
#: Looked for in the working directory when no model is given.
MODEL_FILE = "model.py"
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ModelSpec:
    """What is measured: a build function with its knobs, or a fixed model.

    ``name`` is the file stem or the built-in name; ``source`` the file path (relative to the
    working directory when under it) or ``"builtin:NAME"`` — both can be passed to
    :func:`load` again. ``knobs`` maps each knob to its default; ``accepts`` says which of
    num_classes / in_channels ``build`` takes; ``search_space`` maps knobs (and possibly
    ``resolution``) to the tuple of values to search, or is None; ``dataset`` / ``resolution``
    are the file's defaults (pixels), or None. ``types`` gives the :class:`KnobType` of the
    knobs whose type is not their default's (from ``build_model``'s annotations); the others
    take their default's type. ``roles`` says what the knobs do (a family's declaration, a
    model file's ``KNOBS``, else the conventional names); the rules and the search read it.
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
    types: Mapping[str, KnobType] = field(default_factory=dict)
    roles: KnobRoles = CONVENTIONAL

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
                values[key] = self._coerce(key, value)
            elif key == DATA_KNOB:
                values[key] = _knobs.coerce_resolution(value, self.source)
            else:
                raise self._unknown_knob(key)
        return values

    def parse_set(self, items: Iterable[str]) -> dict[str, Any]:
        """``["depth=6", "batch_norm=false"]`` -> ``{"depth": 6, "batch_norm": False}``.

        Values take the knob's type (see :class:`KnobType`: ``build_model``'s annotation, else
        the default's type); ``resolution`` is accepted too. A knob given twice keeps its last
        value.
        """
        parsed: dict[str, Any] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                option = flag("set")
                raise UsageError(f"bad {option} {item!r}: write KNOB=VALUE, e.g. {option} depth=6")
            if key in self.knobs:
                parsed[key] = self._coerce(key, raw.strip())
            elif key == DATA_KNOB:
                parsed[key] = _knobs.coerce_resolution(raw.strip(), self.source)
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
            with on_sys_path(self._directory()):
                built = self.build(**call)
        except SatAdvisorError:
            raise
        except Exception as exc:
            raise ModelBuildError(
                f"{self.source}: {fn_name}({shown}) raised {type(exc).__name__}: "
                f"{one_line(exc)}; fix {fn_name} or the knob values"
            ) from exc
        if not isinstance(built, nn.Module):
            raise ModelBuildError(
                f"{self.source}: {fn_name}({shown}) returned {type(built).__name__}, not a "
                "torch.nn.Module; return the network"
            )
        return built

    def knob_type(self, key: str) -> KnobType:
        """The type of knob ``key``: declared in ``types``, else its default's."""
        declared = self.types.get(key)
        return declared if declared is not None else KnobType.of_default(self.knobs[key])

    def _coerce(self, key: str, value: Any) -> Any:
        return _knobs.coerce(key, value, self.knob_type(key), self.knobs[key], self.source)

    def _unknown_knob(self, key: str) -> UsageError:
        known = ", ".join([*self.knobs, DATA_KNOB])
        return UsageError(
            f"unknown knob {key!r} for {self.source}: known knobs are {known}; fix the "
            f"{flag('set')}"
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
        accepts=frozenset(INJECTED),
    )


def builtin_spec(
    name: str, *, dataset: str | None = None, resolution: int | None = None
) -> ModelSpec:
    """The spec of the registered model ``name`` (no search space: the search derives one)."""
    build = get_model_fn(name)
    knobs = model_knobs(name)
    return ModelSpec(
        name=name,
        source=f"{BUILTIN_PREFIX}{name}",
        build=build,
        knobs=knobs,
        accepts=frozenset(INJECTED),
        dataset=dataset,
        resolution=resolution,
        types=_declared(build, knobs),
        roles=knob_roles(name),
    )


# --- a model file ---------------------------------------------------------------------------


def _load_file(path: Path, shown: str) -> ModelSpec:
    """The spec of the model file at ``path``, run unless this version already ran here."""
    path = Path(os.path.abspath(path))
    module = execute(path, shown)
    build = getattr(module, "build_model", None)
    fixed = getattr(module, "model", None)
    knobs: dict[str, Any] = {}
    accepts: frozenset[str] = frozenset()
    types: dict[str, KnobType] = {}
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
        knobs, accepts = _contract.signature(build, shown)
        types = _declared(build, knobs)
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
    space = getattr(module, "SEARCH_SPACE", None)
    return ModelSpec(
        name=path.stem,
        source=source_of(path),
        build=build,
        knobs=knobs,
        accepts=accepts,
        search_space=_contract.search_space(space, knobs, shown, types),
        dataset=_contract.dataset(getattr(module, "DATASET", None), shown),
        resolution=_contract.resolution(getattr(module, "RESOLUTION", None), shown),
        model=fixed,
        types=types,
        roles=_contract.roles(getattr(module, "KNOBS", None), knobs, shown),
    )


def _declared(build: Callable[..., Any], knobs: Mapping[str, Any]) -> dict[str, KnobType]:
    """The knob types ``build``'s annotations declare (the others take their default's)."""
    return {k: t for k, t in _knobs.knob_types(build, knobs).items() if t.declared}
