"""The command-line spellings, in one place.

The library speaks in parameters (``epochs``, ``out``, ``storage``); only a message that must tell
a command-line user what to type, or a command line rendered for them to copy, names an option,
and then through :func:`flag` (a test checks every spelling here against the real ``click``
commands, so a renamed option cannot leave a stale message behind). :func:`set_args` renders
knob changes as ``--set`` arguments for a POSIX shell.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

#: parameter name -> option spelling, for every option a message or rendered command names.
OPTIONS: dict[str, str] = {
    name: "--" + name.replace("_", "-")
    for name in (
        "batch_size",
        "budget",
        "data_dir",
        "dataset",
        "debug",
        "device",
        "download",
        "epochs",
        "full_epochs",
        "full_subset",
        "json",
        "lr",
        "max_epochs",
        "name",
        "no_train",
        "objectives",
        "out",
        "positions",
        "quiet",
        "resolution",
        "seed",
        "set",
        "single_file",
        "storage",
        "strategy",
        "study_name",
        "subset",
        "timeout",
        "validate_seeds",
        "validate_top",
        "workers",
    )
}

#: parameter name -> short spelling, for the named options that have one.
SHORT_OPTIONS: dict[str, str] = {"quiet": "-q"}


def flag(name: str) -> str:
    """The option spelling of parameter ``name`` (``flag("batch_size") == "--batch-size"``)."""
    try:
        return OPTIONS[name]
    except KeyError:  # a programming error: every named option is listed above
        raise KeyError(f"no command-line option for parameter {name!r}") from None


def format_value(value: Any) -> str:
    """A knob value as written after ``KNOB=``: bools as true/false, None as null, numbers and
    strings as written, anything else as JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value) if isinstance(value, (int, float, str)) else json.dumps(value)


def set_args(changes: Mapping[str, Any]) -> str:
    """``--set depth=6 --set resolution=16``: one ``--set`` per knob, quoted for a POSIX shell."""
    return " ".join(
        f"{OPTIONS['set']} {shlex.quote(f'{k}={format_value(v)}')}" for k, v in changes.items()
    )
