"""Print ``name==floor`` pins for the dependencies declared in ``pyproject.toml``.

``make test-min`` installs these into a separate virtual environment and runs the fast tests,
so a floor that is false (the code needs a newer version than ``pyproject.toml`` declares)
fails there instead of at a user's. The pins are read from ``pyproject.toml`` every time, so
they cannot drift from it.

    python tools/min_requirements.py                  # the runtime dependencies
    python tools/min_requirements.py --extra dev --only pytest,pytest-timeout,hypothesis

Every requirement must have a ``>=`` floor; one without (or with only an upper bound) is an
error, because its minimum could not be tested. Standard library only (``tomllib``, Python
3.11; ``tomli`` on 3.10).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        sys.exit("min_requirements: needs Python >= 3.11 (tomllib) or the tomli package")

#: ``name[extras] >= 1.2 , < 3 ; marker`` — the parts a pin needs.
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*"
    r"(?P<spec>[^;]*?)\s*(?P<marker>;.*)?$"
)


def pin(requirement: str) -> str:
    """``"psycopg[binary]>=3.1"`` -> ``"psycopg[binary]==3.1"`` (the marker kept)."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    floors = [
        part.strip()[2:].strip()
        for part in match["spec"].split(",")
        if part.strip().startswith(">=")
    ]
    if len(floors) != 1:
        raise ValueError(
            f"{requirement!r} has no single '>=' floor; declare one so that it can be tested"
        )
    extras = match["extras"] or ""
    marker = f" {match['marker']}" if match["marker"] else ""
    return f"{match['name']}{extras}=={floors[0]}{marker}"


def name_of(requirement: str) -> str:
    match = _REQUIREMENT.match(requirement)
    return re.sub(r"[-_.]+", "-", match["name"]).lower() if match else requirement


def pins(pyproject: Path, *, extra: str | None = None, only: set[str] | None = None) -> list[str]:
    """The pins of the runtime dependencies, or of one extra (optionally only some names)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    if extra is None:
        requirements = list(project.get("dependencies", []))
    else:
        extras = project.get("optional-dependencies", {})
        if extra not in extras:
            raise ValueError(f"no extra {extra!r} in {pyproject} (extras: {', '.join(extras)})")
        requirements = list(extras[extra])
    if only is not None:
        wanted = {re.sub(r"[-_.]+", "-", n).lower() for n in only}
        missing = wanted - {name_of(r) for r in requirements}
        if missing:
            raise ValueError(f"not declared in {extra or 'dependencies'}: {', '.join(missing)}")
        requirements = [r for r in requirements if name_of(r) in wanted]
    return [pin(r) for r in requirements]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", default=None, help="an optional-dependencies group")
    parser.add_argument("--only", default=None, help="comma-separated names within it")
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
    try:
        lines = pins(args.pyproject, extra=args.extra, only=only)
    except (OSError, ValueError, KeyError) as exc:
        print(f"min_requirements: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
