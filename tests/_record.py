"""Observed outcomes of the bad-input and fault tests, for docs/reliability.md."""

import json
import os


def record(section: str, case: str, args: list[str], code: int, message: str) -> None:
    """Append one observed outcome to $SATADVISOR_RECORD as a JSON line (no-op when unset)."""
    target = os.environ.get("SATADVISOR_RECORD")
    if not target:
        return
    entry = {"section": section, "case": case, "args": args, "exit": code, "message": message}
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
