"""The main job on the embedded default, timed: `satadvisor analyze` and `optimize --budget 20`.

    python benchmarks/main_job.py [--budget 20] [--epochs 5] [--device auto] [--skip-optimize]

Runs the two commands exactly as a user types them (in a scratch directory, so studies/ and
reports/ of the checkout are untouched), records wall time, the analysis verdict, and for the
search the baseline and recommended configurations with their full-run test accuracy and MACs.
Writes benchmarks/results/main_job.json. Nothing here is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-optimize", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "main_job.json")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE.parent))
    from satadvisor._env import environment

    exe = [sys.executable, "-m", "satadvisor"]
    options = {**vars(args), "out": str(args.out)}
    record: dict[str, Any] = {"environment": environment(args.device), "options": options}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        seconds, _ = _run(
            [*exe, "analyze", "--epochs", str(args.epochs), "--device", args.device], cwd
        )
        analysis = json.loads((cwd / "reports" / "vgg" / "analysis.json").read_text())
        record["analyze"] = {
            "command": f"satadvisor analyze --epochs {args.epochs}",
            "seconds": round(seconds, 1),
            "accuracy": analysis["training"]["accuracy"],
            "profile": {r["name"]: r["saturation"] for r in analysis["layers"]},
            "findings": [
                f["kind"] + (" (predicted)" if f["predicted"] else "") for f in analysis["findings"]
            ],
            "verdict": analysis["verdict"],
        }
        print(f"analyze: {seconds:.1f} s — {analysis['verdict']}")
        if not args.skip_optimize:
            cmd = [
                *exe,
                "optimize",
                "--budget",
                str(args.budget),
                "--epochs",
                str(args.epochs),
                "--device",
                args.device,
            ]
            seconds, stdout = _run(cmd, cwd)
            study = json.loads(next((cwd / "reports").glob("*/study.json")).read_text())
            base = next(r for r in study["validation"] if r["baseline"])
            record["optimize"] = {
                "command": " ".join(["satadvisor", *cmd[3:]]),
                "seconds": round(seconds, 1),
                "trials": study["counted_trials"],
                # "counted" since the search's typed records; "skipped" before
                "sources": sorted(
                    {t["source"] for t in study["trials"] if t.get("counted", not t.get("skipped"))}
                ),
                "proxy_epochs": sum(int(t.get("epochs") or 0) for t in study["trials"]),
                "baseline": {
                    k: base[k]
                    for k in ("knobs", "proxy_accuracy", "test_accuracy", "macs", "params")
                },
                "validated": [
                    {
                        k: r[k]
                        for k in (
                            "trial",
                            "source",
                            "knobs",
                            "proxy_accuracy",
                            "test_accuracy",
                            "macs",
                        )
                    }
                    for r in study["validation"]
                ],
                "recommended": [
                    {
                        k: r[k]
                        for k in (
                            "knobs",
                            "test_accuracy",
                            "accuracy_delta",
                            "macs_ratio",
                            "params_ratio",
                            "verdict",
                            "confirmed",
                        )
                        if k in r
                    }
                    for r in study["recommended"]
                ],
                "rank_agreement": study["rank_agreement"],
                "stdout": stdout,
            }
            print(f"optimize: {seconds:.1f} s")
            print(stdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
