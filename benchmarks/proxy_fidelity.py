"""Proxy fidelity: does a short proxy run rank architectures as their full training does?

A grid of configurations of one built-in family (default ``plain``) on Fashion-MNIST varies
depth, kernel size and input resolution. Each configuration is trained twice per seed:

- **proxy**: exactly as ``satadvisor analyze`` does — ``analyze(...)`` with ``TrainConfig``
  defaults except ``--epochs``, on the training split minus the seeded 10 % validation split,
  scored on that validation split (saturation tracked, as in the search);
- **full**: ``full=True`` — the training set minus the validation split, ``--full-epochs`` epochs, the test set
  (untracked: the tracker only observes, the accuracy is the same with or without it).

Reported: Spearman ρ between the proxy accuracy and the full test accuracy (means over seeds),
next to the ρ of the cheap predictors a user might use instead — parameter count, MACs and
NASWOT (Mellor et al., ICML 2021: log|det K_H| of the binary ReLU-code kernel over one batch
at initialisation, implemented below) — with a bootstrap 95 % interval over configurations,
and the top-1 regret of each predictor (best full accuracy minus the full accuracy of the
configuration the predictor ranks first).

GPU-sized defaults (24 configurations, whole dataset, 5 proxy / 20 full epochs, 3 seeds)::

    .venv/bin/python benchmarks/proxy_fidelity.py --device cuda

Reduced CPU runs recorded in RESULTS.md (12 configurations, subsets, 1 seed); the second
takes the full runs of the first (``--reuse-full``) and only trains longer proxies::

    .venv/bin/python benchmarks/proxy_fidelity.py --device cpu --threads 1 --width 8 \\
        --depths 3,5,8 --kernels 3,5 --resolutions 16,28 --subset 2000 --full-subset 6000 \\
        --epochs 5 --full-epochs 10 --seeds 1
    .venv/bin/python benchmarks/proxy_fidelity.py ... --subset 6000 \\
        --reuse-full benchmarks/results/proxy_fidelity.json \\
        --out benchmarks/results/proxy_fidelity_proxy6000.json

``--recompute FILE`` recomputes the statistics and tables of a result file without training.

``--selftest`` checks the NASWOT kernel on a hand-computed example and exits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common as common
import numpy as np
import torch
from torch import nn

from satadvisor import data as data_mod
from satadvisor._env import resolve_device
from satadvisor.advisor import analyze
from satadvisor.config import TrainConfig
from satadvisor.cost import count_macs, count_parameters
from satadvisor.models import create_model
from satadvisor.search.summary import evenness, spearman
from satadvisor.train import run, seed_everything

NAME = "proxy_fidelity"
PREDICTORS = ("proxy", "params", "macs", "naswot")


# --------------------------------------------------------------------------- NASWOT


def naswot_kernel(codes: torch.Tensor) -> torch.Tensor:
    """K_H[i, j] = N_A − Hamming(c_i, c_j) for binary codes ``codes`` (B, N_A), float64."""
    c = codes.to(torch.float64)
    return c @ c.T + (1.0 - c) @ (1.0 - c).T


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K_H| of the ReLU activation codes of ``model`` on the batch ``x`` (at init).

    Every ``nn.ReLU`` output is binarised (unit active or not) per image and concatenated;
    higher scores mean the network tells the images of the batch apart better. -inf when
    two images share a code (singular kernel).
    """
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        codes.append((out.detach() > 0).flatten(1).cpu())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(naswot_kernel(torch.cat(codes, dim=1)))
    return float(logdet) if float(sign) != 0 else -math.inf


def selftest() -> None:
    """NASWOT's kernel on a hand example: codes 101 and 111 differ in one of 3 units."""
    k = naswot_kernel(torch.tensor([[1, 0, 1], [1, 1, 1]]))
    assert torch.equal(k, torch.tensor([[3.0, 2.0], [2.0, 3.0]], dtype=torch.float64)), k
    assert math.isclose(float(torch.logdet(k)), math.log(5.0), rel_tol=1e-12)
    # Identical codes make K singular: the score is -inf, ranked last.
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    assert naswot_score(net, torch.ones(2, 1, 2, 2)) == -math.inf
    # A network with a distinct code per image scores log det > -inf and matches the kernel.
    x = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]], [[[1.0, 1.0], [-1.0, 1.0]]]])
    expected = math.log(4 * 4 - 2 * 2)  # N_A = 4, the codes differ in 2 units
    assert math.isclose(naswot_score(net, x), expected, rel_tol=1e-12)
    rho = spearman([1, 2, 3, 4], [10, 20, 30, 40])
    assert rho is not None and math.isclose(rho, 1.0)
    print("selftest passed: NASWOT kernel K = [[3, 2], [2, 3]], log det = log 5")


# --------------------------------------------------------------------------- statistics


def _rankable(values: Sequence[float | None]) -> list[float]:
    """None/-inf (e.g. a singular NASWOT kernel) ranked below every finite value."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    floor = min(finite, default=0.0) - 1.0
    return [v if v is not None and math.isfinite(v) else floor for v in values]


def bootstrap_rho(
    x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float | None, float | None]:
    """2.5 % and 97.5 % quantiles of Spearman ρ over configurations drawn with replacement."""
    rng = np.random.default_rng(seed)
    n, values = len(x), []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        rho = spearman([x[i] for i in idx], [y[i] for i in idx])
        if rho is not None:
            values.append(rho)
    if not values:
        return None, None
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def top1_regret(score: Sequence[float], full: Sequence[float]) -> float:
    """Best full accuracy minus the full accuracy of the configuration ranked first by score."""
    return max(full) - full[int(np.argmax(score))]


# --------------------------------------------------------------------------- runs


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The grid: every (depth, kernel, resolution), with the fixed width and downsamplings."""
    return [
        {"depth": d, "kernel_size": k, "width": args.width, "resolution": r}
        for d, k, r in itertools.product(args.depths, args.kernels, args.resolutions)
    ]


class Bundles:
    """Datasets loaded once per (resolution, full, seed) — a load reads and resizes the set."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.cache: dict[tuple[int, bool, int], data_mod.DataBundle] = {}

    def get(self, resolution: int, *, full: bool, seed: int) -> data_mod.DataBundle:
        key = (resolution, full, seed)
        if key not in self.cache:
            self.cache = {k: v for k, v in self.cache.items() if k[0] == resolution}
            self.cache[key] = data_mod.load(
                "fashion-mnist",
                resolution=resolution,
                data_dir=self.args.data_root,
                full=full,
                seed=seed,
                device=self.device,
                subset=self.args.full_subset if full else self.args.subset,
            )
        return self.cache[key]


def _key(knobs: dict[str, Any], seed: int) -> str:
    return json.dumps({"knobs": knobs, "seed": seed}, sort_keys=True)


#: Options that must match for full runs to be reused from an earlier result.
REUSE_KEYS = ("family", "full_subset", "full_epochs")


def reusable_full_runs(path: Path | None, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Full-run results of an earlier result file made with the same full-run options.

    The full runs do not depend on the proxy options, and a CPU run with a fixed seed is
    deterministic, so a second proxy setting need not retrain them (``--reuse-full``).
    """
    if path is None:
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    mismatch = [k for k in REUSE_KEYS if earlier["options"].get(k) != getattr(args, k)]
    if mismatch or earlier["environment"]["device"] != str(resolve_device(args.device)):
        raise SystemExit(f"{path}: made with other {', '.join(mismatch) or 'device'}; not reused")
    return {
        _key(row["knobs"], s["seed"]): {k: s[k] for k in FULL_FIELDS}
        for row in earlier["configurations"]
        for s in row["seeds"]
    }


FULL_FIELDS = ("full_accuracy", "full_status", "full_seconds")


def measure_config(
    knobs: dict[str, Any],
    args: argparse.Namespace,
    bundles: Bundles,
    device: torch.device,
    reuse: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Cost, NASWOT, proxy and full accuracy of one configuration over the seeds."""
    model_knobs = {k: v for k, v in knobs.items() if k != "resolution"}
    res = knobs["resolution"]

    def build(seed: int) -> nn.Module:
        seed_everything(seed)
        return create_model(args.family, num_classes=10, in_channels=1, **model_knobs)

    probe = build(0)
    row: dict[str, Any] = {
        "knobs": knobs,
        "params": count_parameters(probe),
        "macs": count_macs(probe, in_channels=1, resolution=res),
        "seeds": [],
    }
    for seed in range(args.seeds):
        proxy_data = bundles.get(res, full=False, seed=seed)
        x, _ = next(
            proxy_data.train.batches(args.naswot_batch, shuffle=True, augment=False, seed=seed)
        )
        naswot = naswot_score(build(seed).to(device).train(), x)
        started = time.perf_counter()
        config = TrainConfig(epochs=args.epochs, seed=seed, device=str(device))
        proxy = analyze(args.family, knobs=knobs, data=proxy_data, config=config)
        proxy_seconds = time.perf_counter() - started
        assert proxy.run is not None
        record = {
            "seed": seed,
            "naswot": naswot if math.isfinite(naswot) else None,
            "proxy_accuracy": proxy.run.accuracy,
            "proxy_status": proxy.run.status,
            "proxy_seconds": round(proxy_seconds, 2),
            "tail": proxy.tail,
            "evenness": evenness(proxy.profile),
        }
        earlier = reuse.get(_key(knobs, seed))
        if earlier is not None:
            record.update(earlier, full_reused=True)
        else:
            full_config = config.replace(epochs=args.full_epochs, full=True)
            full = run(build(seed), bundles.get(res, full=True, seed=seed), config=full_config)
            record.update(
                full_accuracy=full.test_accuracy,
                full_status=full.status,
                full_seconds=round(full.wall_time, 2),
            )
        row["seeds"].append(record)
    for key in ("naswot", "proxy_accuracy", "full_accuracy"):
        values = [s[key] for s in row["seeds"] if s[key] is not None]
        row[key] = float(np.mean(values)) if values else None
    row["full_std"] = common.mean_std([s["full_accuracy"] or 0.0 for s in row["seeds"]])[1]
    return row


def correlations(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """ρ (with bootstrap interval) and top-1 regret of every predictor against full accuracy."""
    full = [r["full_accuracy"] or 0.0 for r in rows]
    scores: dict[str, Callable[[dict[str, Any]], float | None]] = {
        "proxy": lambda r: r["proxy_accuracy"],
        "params": lambda r: float(r["params"]),
        "macs": lambda r: float(r["macs"]),
        "naswot": lambda r: r["naswot"],
    }
    resolutions = sorted({r["knobs"]["resolution"] for r in rows})
    out = []
    for name, score in scores.items():
        x = _rankable([score(r) for r in rows])
        low, high = bootstrap_rho(x, full)
        # Within one resolution: does the predictor rank depth and kernel right?
        within = {
            str(res): spearman(
                [x[i] for i, r in enumerate(rows) if r["knobs"]["resolution"] == res],
                [full[i] for i, r in enumerate(rows) if r["knobs"]["resolution"] == res],
            )
            for res in resolutions
        }
        out.append(
            {
                "predictor": name,
                "spearman": spearman(x, full),
                "ci95": [low, high],
                "top1_regret": top1_regret(x, full),
                "spearman_within_resolution": within,
            }
        )
    return out


# --------------------------------------------------------------------------- output


def tables(result: dict[str, Any]) -> str:
    rows = []
    for r in result["configurations"]:
        k = r["knobs"]
        tail = r["seeds"][0]["tail"]
        rows.append(
            [
                k["depth"],
                k["kernel_size"],
                k["resolution"],
                common.human(r["params"]),
                common.human(r["macs"]),
                f"{r['naswot']:.1f}" if r["naswot"] is not None else "-inf",
                common.pct(r["proxy_accuracy"]),
                common.pct(r["full_accuracy"], r["full_std"] if len(r["seeds"]) > 1 else None),
                f"{len(tail)}" if tail else "—",
            ]
        )
    headers = ["depth", "kernel", "px", "params", "MACs", "NASWOT", "proxy val %", "full test %"]
    first = common.markdown_table([*headers, "tail (seed 0)"], rows)
    corr = [
        [
            c["predictor"],
            f"{c['spearman']:+.3f}" if c["spearman"] is not None else "n/a",
            f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]" if c["ci95"][0] is not None else "n/a",
            f"{100 * c['top1_regret']:.2f}",
            " / ".join(
                f"{v:+.2f}" if v is not None else "n/a"
                for v in c["spearman_within_resolution"].values()
            ),
        ]
        for c in result["correlations"]
    ]
    pxs = " / ".join(result["correlations"][0]["spearman_within_resolution"])
    second = common.markdown_table(
        [
            "predictor",
            "Spearman ρ vs full test acc.",
            "bootstrap 95 %",
            "top-1 regret (points)",
            f"ρ within {pxs} px",
        ],
        corr,
    )
    return f"{first}\n\n{second}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_run_options(
        parser,
        subset=None,
        epochs=5,
        full_epochs=20,
        seeds=3,
        out=common.RESULTS_DIR / f"{NAME}.json",
    )
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    parser.add_argument("--family", default="plain", help="built-in family (default plain)")
    parser.add_argument("--depths", type=ints, default=[3, 4, 6, 8], help="default 3,4,6,8")
    parser.add_argument("--kernels", type=ints, default=[3, 5], help="default 3,5")
    parser.add_argument("--resolutions", type=ints, default=[16, 24, 32], help="default 16,24,32")
    parser.add_argument("--width", type=int, default=16, help="first-stage channels (default 16)")
    parser.add_argument(
        "--full-subset", type=int, default=None, help="cap the full runs' splits (default all)"
    )
    parser.add_argument("--naswot-batch", type=int, default=64, help="NASWOT batch (default 64)")
    parser.add_argument(
        "--reuse-full",
        type=Path,
        default=None,
        help="take the full runs from an earlier result with the same full-run options",
    )
    parser.add_argument(
        "--recompute",
        type=Path,
        default=None,
        help="recompute the statistics and tables of a result file (no training) and exit",
    )
    parser.add_argument("--selftest", action="store_true", help="check NASWOT and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.selftest:
        selftest()
        return
    if args.recompute is not None:
        result = json.loads(args.recompute.read_text(encoding="utf-8"))
        result["correlations"] = correlations(result["configurations"])
        print(tables(result))
        print(f"wrote {common.write_json(args.recompute, result)}")
        return
    common.setup(args)
    reuse = reusable_full_runs(args.reuse_full, args)
    started = time.time()
    device = resolve_device(args.device)
    args.data_root = args.data_dir or common.fashion_root()
    bundles = Bundles(args, device)
    rows = []
    grid = sorted(configurations(args), key=lambda k: k["resolution"])  # one load per resolution
    for i, knobs in enumerate(grid, start=1):
        row = measure_config(knobs, args, bundles, device, reuse)
        rows.append(row)
        print(
            f"[{i}/{len(grid)}] {knobs} proxy {row['proxy_accuracy']:.4f} "
            f"full {row['full_accuracy']:.4f} ({time.time() - started:.0f} s)",
            flush=True,
        )
    del args.data_root
    result = {
        "benchmark": NAME,
        **common.record(args, started=started, finished=time.time()),
        "dataset": "fashion-mnist",
        "configurations": rows,
        "correlations": correlations(rows),
    }
    print(tables(result))
    print(f"wrote {common.write_json(args.out, result)}")


if __name__ == "__main__":
    main()
