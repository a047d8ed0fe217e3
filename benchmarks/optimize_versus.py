"""`satadvisor optimize --budget 20` on the embedded default: this checkout against an earlier
commit, side by side in one run.

    python benchmarks/optimize_versus.py [--against 5035e13] [--rounds 2] [--budget 20]
        [--epochs 5] [--device cpu] [--check-seeds 3]

The earlier commit's tree is exported with ``git archive`` into a scratch folder; both versions
run as a user types the command (``python -m satadvisor optimize …`` in a fresh folder, with
the same interpreter and packages), alternating ``A B B A …`` so that a drift of the machine's
load falls on both. Recorded per run: wall time, proxy epochs, the full runs, and what it
recommends. Issue 12 measured ``5035e13`` (the search before its rebuild; the README said
290 s).

"Equally good recommendation" is checked the same way for both: each version's recommended
configuration (the current version's first *confirmed* candidate, else the baseline it keeps,
and its best unconfirmed candidate; the earlier version's first recommendation) is retrained
by this checkout's full run with ``--check-seeds`` seeds (20 epochs, the same validation split)
and reported with its validation accuracy (what chooses) and its test accuracy (reported) and
MACs. Writes benchmarks/results/optimize_versus.json. Nothing is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _export(rev: str, into: Path) -> str:
    """The tree of ``rev`` under ``into``; returns the full commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = into / "tree.tar"
    subprocess.run(["git", "archive", "-o", str(archive), commit], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return commit


def _optimize(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "satadvisor", "optimize", "--budget", str(args.budget)]
    cmd += ["--epochs", str(args.epochs), "--device", args.device]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{tree}: optimize failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        study = json.loads(next(Path(tmp, "reports").glob("*/study.json")).read_text())
    return {"seconds": round(seconds, 1), "study": study, "stdout": proc.stdout}


def _picks(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a study recommends: ``recommended`` (the configuration to use) and, for the current
    version, ``best candidate`` (its first candidate, confirmed or not)."""
    recommended = study.get("recommended") or []
    base = next((r for r in study.get("validation", []) if r.get("baseline")), None)
    if "validate_seeds" not in study:  # the earlier version: its first recommendation
        return {"recommended": recommended[0]["knobs"]} if recommended else {}
    confirmed = [r for r in recommended if r.get("confirmed")]
    picks = {"recommended": (confirmed[0] if confirmed else base or {}).get("knobs")}
    if recommended:
        picks["best candidate"] = recommended[0]["knobs"]
    return {k: v for k, v in picks.items() if v}


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    study = run["study"]
    return {
        "seconds": run["seconds"],
        "trials": study.get("counted_trials"),
        "proxy_epochs": sum(int(t.get("epochs") or 0) for t in study["trials"]),
        "full_runs": len(study.get("validation", [])),
        "picks": _picks(study),
    }


def _check(knobs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """This checkout's full run of ``knobs`` with ``args.check_seeds`` seeds."""
    sys.path.insert(0, str(ROOT))
    from satadvisor import data as data_mod
    from satadvisor.advisor import analyze
    from satadvisor.config import TrainConfig

    knobs = dict(knobs)
    data = data_mod.load("digits", resolution=int(knobs["resolution"]), full=True, seed=0)
    runs = []
    for seed in range(args.check_seeds):
        config = TrainConfig(epochs=4 * args.epochs, full=True, seed=seed, device=args.device)
        a = analyze(None, knobs=knobs, data=data, config=config, track="last")
        assert a.run is not None
        runs.append((a.run.accuracy, a.run.test_accuracy or 0.0, a.macs))
    val = [float(r[0] or 0.0) for r in runs]
    test = [float(r[1]) for r in runs]
    return {
        "knobs": knobs,
        "macs": runs[0][2],
        "val_accuracy": val,
        "test_accuracy": test,
        "val_mean": statistics.fmean(val),
        "test_mean": statistics.fmean(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="5035e13")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check-seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "optimize_versus.json")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from satadvisor._env import environment

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    record: dict[str, Any] = {
        "environment": environment(args.device),
        "options": {**vars(args), "out": str(args.out)},
        "load_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        earlier = _export(args.against, Path(tmp))
        trees = {"current": ROOT, "earlier": Path(tmp) / "tree"}
        record["commits"] = {"current": head, "earlier": earlier}
        runs: dict[str, list[dict[str, Any]]] = {"current": [], "earlier": []}
        for i in range(args.rounds):
            order = ("earlier", "current") if i % 2 == 0 else ("current", "earlier")
            for name in order:
                run = _optimize(trees[name], args)
                runs[name].append(run)
                print(f"round {i + 1} {name}: {run['seconds']:.1f} s", flush=True)
    record["load_after"] = os.getloadavg()
    record["runs"] = {name: [_summary(r) for r in rs] for name, rs in runs.items()}
    record["stdout"] = {name: rs[-1]["stdout"] for name, rs in runs.items()}
    mean = {name: statistics.fmean(r["seconds"] for r in rs) for name, rs in runs.items()}
    ratios = [
        c["seconds"] / e["seconds"] for c, e in zip(runs["current"], runs["earlier"], strict=True)
    ]
    record["seconds_mean"] = mean
    record["ratio_per_round"] = [round(r, 3) for r in ratios]
    record["ratio_of_means"] = round(mean["current"] / mean["earlier"], 3)
    print(
        f"mean: current {mean['current']:.1f} s, earlier {mean['earlier']:.1f} s, ratio "
        f"{record['ratio_of_means']:.3f} (per round {record['ratio_per_round']})",
        flush=True,
    )

    if args.check_seeds > 0:
        checked: dict[str, dict[str, Any]] = {}
        for name in ("earlier", "current"):
            for label, knobs in _summary(runs[name][-1])["picks"].items():
                key = json.dumps(knobs, sort_keys=True)
                if key not in checked:
                    checked[key] = _check(knobs, args)
                    c = checked[key]
                    print(
                        f"check {json.dumps(knobs)}: val {c['val_mean']:.4f} test "
                        f"{c['test_mean']:.4f} MACs {c['macs']}",
                        flush=True,
                    )
                checked[key].setdefault("picked_by", []).append(f"{name}: {label}")
        record["checked"] = list(checked.values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
