"""Every option spelling the library names exists on the real CLI (a renamed option cannot leave a
stale message behind), and ``--set`` arguments round-trip through the CLI's own parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
from _source import string_constants

import satadvisor
from satadvisor import _flags, spec
from satadvisor.cli import main


def _cli_spellings() -> set[str]:
    seen: set[str] = set()
    for command in main.commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            if isinstance(param, click.Option):
                seen.update(o for o in param.opts + param.secondary_opts if o.startswith("--"))
    return seen


def test_every_named_option_is_a_real_option() -> None:
    missing = sorted(set(_flags.OPTIONS.values()) - _cli_spellings())
    assert not missing, f"named in satadvisor._flags but not an option of any command: {missing}"


def test_set_args_parse_back_to_the_same_knobs() -> None:
    model = spec.builtin_spec("vgg")
    changes = {"depth": 7, "batch_norm": False, "resolution": 24}
    words = shlex.split(_flags.set_args(changes))
    assert words[::2] == ["--set"] * 3
    parsed = model.parse_set(words[1::2])
    assert parsed == changes


def test_no_option_spelling_below_the_cli_but_in_flags() -> None:
    """Every string below ``satadvisor/cli`` that names an option comes from ``_flags`` (so a
    renamed option changes one place); docstrings may still mention options."""
    root = Path(satadvisor.__file__).parent
    found = [
        f"{path.relative_to(root)}:{line}: {text[:60]!r}"
        for path in sorted(root.rglob("*.py"))
        if "cli" not in path.relative_to(root).parts and path.name != "_flags.py"
        for line, text in string_constants(path)
        if re.search(r"(^|[\s('\"`])--[a-z]", text)
    ]
    assert not found, "\n".join(found)
