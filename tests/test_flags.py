"""Every option spelling the library names exists on the real CLI (a renamed option cannot leave a
stale message behind), and ``--set`` arguments round-trip through the CLI's own parser."""

from __future__ import annotations

import shlex

import click

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
    import ast
    import re
    from pathlib import Path

    import satadvisor

    root = Path(satadvisor.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if "cli" in path.relative_to(root).parts or path.name == "_flags.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        found += [
            f"{path.relative_to(root)}:{node.lineno}: {node.value[:60]!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and re.search(r"(^|[\s('\"`])--[a-z]", node.value)
        ]
    assert not found, "\n".join(found)
