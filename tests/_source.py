"""Reading the package's own source in tests: its string literals, docstrings aside."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def string_constants(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal of a module except the docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value
