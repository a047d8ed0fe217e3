"""The package keeps the layering of DESIGN.md: a module imports only from its own part or from
layers below it (function-level imports included, ``TYPE_CHECKING`` ones too), and every part
of the package has a place in the table, so a new module must be given one."""

from __future__ import annotations

import ast
from pathlib import Path

import satadvisor

#: DESIGN.md's "Architecture" diagram, bottom (0) to top. Parts on one layer may import each
#: other (``spec`` reads ``models``; ``train`` reads ``trust``; the advisor writes its record).
LAYERS: dict[str, int] = {
    "errors": 0,
    "config": 0,
    "_flags": 0,
    "_env": 0,
    "_io": 0,
    "cost": 1,
    "models": 1,
    "data": 1,
    "spec": 1,
    "saturation": 2,
    "receptive": 2,
    "train": 3,
    "trust": 3,
    "rules": 4,
    "advisor": 5,
    "analysis_record": 5,
    "caveats": 5,
    "search": 6,
    "report": 7,
    "integrations": 8,
    "cli": 9,
    "__main__": 9,
    "__init__": 9,
}

ROOT = Path(satadvisor.__file__).parent


def _part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "satadvisor":
                found += [(node.lineno, f"satadvisor.{a.name}") for a in node.names]
            elif node.module.startswith("satadvisor."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use satadvisor.…")
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("satadvisor.")]
    return found


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        out.append((path, ".".join(relative.parts).removesuffix(".__init__")))
    return out


def test_every_part_has_a_layer() -> None:
    parts = {_part(module) for _, module in _modules()}
    assert parts <= set(LAYERS), f"give these a layer in DESIGN.md and here: {parts - set(LAYERS)}"


def test_no_module_imports_a_layer_above_it() -> None:
    upward = []
    for path, module in _modules():
        mine = _part(module) if module != "satadvisor" else "__init__"
        for line, name in _imports(path):
            theirs = _part(name)
            if LAYERS.get(theirs, -1) > LAYERS[mine]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line}: {mine} imports {name}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # the checker itself: an advisor-level file importing the report is caught
    bad = tmp_path / "advisor.py"
    bad.write_text("def f():\n    from satadvisor.report import write_report\n")
    ((line, name),) = _imports(bad)
    assert (line, _part(name)) == (2, "report")
    assert LAYERS[_part(name)] > LAYERS["advisor"]
