"""Training-step overhead of SaturationTracker vs no tracking vs delve 0.1.50's SaturationTracker.

Four parts, each per model (a VGG16-style and a ResNet-18-style CNN, CIFAR variants, 32×32
inputs, batch 128, every conv and linear layer tracked):

- step time of untracked, ours at the defaults (``rows="auto"``: a sample of positions sized
  from each layer's width), ours at every position (``rows="all"``) and delve, interleaved;
- the saturation error of both of our settings over whole training epochs on real data
  (Fashion-MNIST from ../shared/data, padded to 32 px, 3 channels), each layer against a
  float64 NumPy reference over every position of the same epoch: |Δ saturation|, |Δk|, and
  how often the reported standard error covers the sampling error (``--error-epochs``);
- the peak memory of a training step, untracked and tracked (``--memory``: one fresh process
  per variant, ``ru_maxrss``), at two batch sizes;
- per-layer timings of the scatter variants the tracker could use on a CPU (``--paths``).

Setup, once (delve and the packages it imports, installed ONLY for this benchmark, into a
git-ignored folder that this script appends to sys.path):

    .venv/bin/pip install --no-deps --target benchmarks/.deps delve==0.1.50
    .venv/bin/pip install --target benchmarks/.deps pandas matplotlib

Run:

    .venv/bin/python benchmarks/tracker_overhead.py [--device cpu|cuda] [--steps N] [--json out.json]

For a VGG16-style and a ResNet-18-style CNN (CIFAR variants, 32x32 inputs, batch 128, every
conv and linear tracked at full positions) it times SGD training steps of three identical
model copies — untracked, tracked by ours, tracked by delve — interleaved round by round in one
process (the order rotates every round), and reports median step times (wall clock and process
CPU time), the overhead ratios, the analytic floor 1 + (scatter FLOPs ÷ step FLOPs) — the
symmetric scatter costs rows·F·(F+1) FLOPs per tracked layer, the step's FLOPs are counted by
FlopCounterMode over forward+backward — and each tool's saturation error against a NumPy
reference (float64 population covariance, smallest k with ≥ 99 % variance) over the same few
eval batches. Without delve installed its columns read "n/a". Computing the saturations at the
end of an epoch is not part of the step time of either tool.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(Path(__file__).resolve().parent / ".deps"))  # after the venv: no shadowing

from satadvisor.saturation import SaturationTracker, auto_rows, sample_size  # noqa: E402
from satadvisor.saturation import functional as SF  # noqa: E402

BATCH = 128
RESOLUTION = 32
THRESHOLD = 0.99


# -- models -------------------------------------------------------------------------------------


def _local_vgg16() -> nn.Module:
    layers: list[nn.Module] = []
    c_in = 3
    for c_out, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers.append(nn.MaxPool2d(2))
    head = [nn.Flatten(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU()]
    return nn.Sequential(*layers, *head, nn.Linear(512, 10))


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def _local_resnet18() -> nn.Module:
    blocks: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [_Block(c_in, c_out, stride), _Block(c_out, c_out, 1)]
        c_in = c_out
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))


def build_models() -> dict[str, tuple[nn.Module, str]]:
    """The two benchmark networks, from satadvisor.models when it has them, else local copies."""
    models: dict[str, tuple[nn.Module, str]] = {}
    for label, name, local in (
        ("VGG16", "vgg16", _local_vgg16),
        ("ResNet-18", "resnet18_cifar", _local_resnet18),
    ):
        torch.manual_seed(0)
        try:
            from satadvisor.models import create_model

            models[label] = (
                create_model(name, num_classes=10, in_channels=3),
                f"satadvisor.models.{name}",
            )
        except Exception:  # the registry is optional here; the local definitions are equivalent
            models[label] = (local(), "local definition")
    return models


# -- delve --------------------------------------------------------------------------------------


def delve_tracker(model: nn.Module, device: torch.device, out_dir: str) -> Any | None:
    """delve 0.1.50's tracker on ``model`` (hooks it can never remove), or None if not installed."""
    try:
        import delve
    except ImportError:
        return None
    if getattr(delve, "__version__", None) != "0.1.50":
        return None
    import logging

    logging.getLogger("delve.logger").setLevel(logging.WARNING)
    return delve.SaturationTracker(
        out_dir,
        save_to="csv",
        modules=model,
        device=str(device),
        stats=["lsat"],
        sat_threshold=THRESHOLD,
    )


def delve_saturations(tracker: Any, phase: str) -> dict[str, float]:
    from delve.metrics import compute_saturation

    logs = tracker.logs[f"{phase}-covariance-matrix"]
    return {name: compute_saturation(cov.fix(), thresh=THRESHOLD) for name, cov in logs.items()}


# -- measurements -------------------------------------------------------------------------------


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


class HookClock:
    """Time spent inside the forward hooks of a model, summed over the steps it is on.

    Wraps every forward (pre-)hook already registered on the model's modules — ours or delve's,
    whichever tool added them — so the tracker's own cost can be read apart from the noise of
    the whole step. Benchmark-only: it reaches into ``Module._forward_hooks``.

    Two clocks, as for the whole steps: "wall" (synchronised on CUDA) and, on a CPU, "cpu"
    (this process's CPU time, all threads: with several torch threads it also counts the
    other threads' spinning between parallel regions, so it exceeds the wall time).
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(self.clocks(), 0.0)
        for module in model.modules():
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for key, fn in list(hooks.items()):
                    hooks[key] = self._timed(fn)

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync(self.device)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(self.device)
                self.seconds["wall"] += time.perf_counter() - wall
                if "cpu" in self.seconds:
                    self.seconds["cpu"] += time.process_time() - cpu

        return timed

    def clocks(self) -> tuple[str, ...]:
        return ("wall", "cpu") if self.device.type == "cpu" else ("wall",)

    def take(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    *,
    rounds: int,
    warmup: int,
    device: torch.device,
    hook_clocks: dict[str, HookClock] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Seconds per step of each variant, one step of each per round, order rotating.

    Two clocks: "wall" (perf_counter) and "cpu" (this process's CPU time, all threads). On a
    shared machine the CPU time is the steadier of the two: waiting for a core is not counted.
    With ``hook_clocks``, series named "hooks <clock>" hold the time inside each tracked
    variant's hooks per step, on each of its :class:`HookClock`'s clocks.
    """
    hook_clocks = hook_clocks or {}
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    _sync(device)
    times: dict[str, dict[str, list[float]]] = {"wall": {n: [] for n in names}}
    times["cpu"] = {n: [] for n in names}
    for name, clock in hook_clocks.items():
        for kind in clock.clocks():
            times.setdefault(f"hooks {kind}", {})[name] = []
        clock.take()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            steps[name]()
            _sync(device)
            times["wall"][name].append(time.perf_counter() - w0)
            times["cpu"][name].append(time.process_time() - c0)
            if name in hook_clocks:
                for kind, seconds in hook_clocks[name].take().items():
                    times[f"hooks {kind}"][name].append(seconds)
    if device.type != "cpu":
        del times["cpu"]  # host CPU time says nothing about an accelerator's work
    return times


def ratios(median: dict[str, float]) -> dict[str, float]:
    """Step-time ratios to the untracked step, and ours' overhead over delve's."""
    out = {"ours_ratio": median["ours"] / median["plain"]}
    out["ours_all_ratio"] = median["ours_all"] / median["plain"]
    if "delve" in median:
        out["delve_ratio"] = median["delve"] / median["plain"]
        out["ours_over_delve_overhead"] = (median["ours"] - median["plain"]) / (
            median["delve"] - median["plain"]
        )
    return out


def flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    """(training-step FLOPs, covariance FLOPs per step at every position, and at rows="auto")."""
    rows_width: list[tuple[int, int, int]] = []

    def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        width = out.shape[1] if isinstance(module, nn.Conv2d) else out.shape[-1]
        rows = out.numel() // width
        conv = isinstance(module, nn.Conv2d)
        drawn = sample_size(auto_rows(width), rows, out.shape[0] if conv else None)
        sampled = rows if drawn is None else drawn * out.shape[0] if conv else drawn
        rows_width.append((rows, sampled, width))

    handles = [
        m.register_forward_hook(record)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    counter = FlopCounterMode(display=False)
    with counter:
        nn.functional.cross_entropy(model(x), y).backward()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    # the symmetric scatter xcᵀxc needs rows·F·(F+1) flops (one triangle, multiply + add)
    return (
        counter.get_total_flops(),
        sum(r * w * (w + 1) for r, _, w in rows_width),
        sum(r * w * (w + 1) for _, r, w in rows_width),
    )


@contextlib.contextmanager
def reference_capture(model: nn.Module) -> Iterator[dict[str, list[Any]]]:
    """Float64 NumPy sums (n, Σx, Σxxᵀ) of every conv/linear output, keyed by qualified name."""
    sums: dict[str, list[Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            x = out.detach()
            x = x.movedim(1, -1) if isinstance(module, nn.Conv2d) else x
            x64 = x.reshape(-1, x.shape[-1]).cpu().double().numpy()
            n, s, sxx = sums.setdefault(name, [0, 0.0, 0.0])
            sums[name] = [n + len(x64), s + x64.sum(0), sxx + x64.T @ x64]

        return record

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        yield sums
    finally:
        for h in handles:
            h.remove()


def reference_saturation(n: int, s: np.ndarray, sxx: np.ndarray) -> float:
    mean = s / n
    cov = sxx / n - np.outer(mean, mean)
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None)
    share = np.cumsum(lam) / lam.sum()
    return (int(np.argmax(share >= THRESHOLD)) + 1) / len(lam)


def saturation_errors(
    model: nn.Module, device: torch.device, batches: list[torch.Tensor], out_dir: str
) -> dict[str, Any]:
    """Mean and max |saturation − reference| over the layers, for ours and delve, eval passes."""
    ours_model, delve_model = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
    ours = SaturationTracker(ours_model)
    delve = delve_tracker(delve_model, device, out_dir)
    with reference_capture(ours_model) as sums, torch.no_grad():
        for x in batches:
            ours_model(x)
            delve_model(x)
    ours.close()
    ref = {name: reference_saturation(*v) for name, v in sums.items()}
    got_ours = {r.name: r.saturation for r in ours.compute("eval")}
    out: dict[str, Any] = {"reference": ref, "ours": got_ours}
    err = [abs(got_ours[n] - ref[n]) for n in ref]
    out["ours_error"] = (statistics.fmean(err), max(err))
    if delve is not None:
        got_delve = {k.replace("-", "."): v for k, v in delve_saturations(delve, "eval").items()}
        derr = [abs(got_delve[n] - ref[n]) for n in ref]
        out["delve"] = got_delve
        out["delve_error"] = (statistics.fmean(derr), max(derr))
    return out


def bench_model(
    label: str,
    model: nn.Module,
    *,
    device: torch.device,
    rounds: int,
    warmup: int,
    eval_batches: int,
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, generator=g).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=g).to(device)
    model = model.to(device)
    step_flops, cov_flops, cov_flops_auto = flops(model, x, y)
    tmp = tempfile.mkdtemp(prefix="delve_bench_")
    plain, ours_m, all_m, delve_m = (model, *(copy.deepcopy(model) for _ in range(3)))
    steps = {
        "plain": make_step(plain, x, y),
        "ours": make_step(ours_m, x, y),
        "ours_all": make_step(all_m, x, y),
    }
    tracker = SaturationTracker(ours_m)
    tracker_all = SaturationTracker(all_m, rows="all")
    clocks_in_hooks = {"ours": HookClock(ours_m, device), "ours_all": HookClock(all_m, device)}
    if delve_tracker(delve_m, device, tmp) is not None:
        steps["delve"] = make_step(delve_m, x, y)
        clocks_in_hooks["delve"] = HookClock(delve_m, device)
    times = time_interleaved(
        steps, rounds=rounds, warmup=warmup, device=device, hook_clocks=clocks_in_hooks
    )
    hook_times = {k.split(" ", 1)[1]: times.pop(k) for k in list(times) if k.startswith("hooks ")}
    tracker.close()
    tracker_all.close()
    batches = [
        torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, generator=g).to(device)
        for _ in range(eval_batches)
    ]
    clocks: dict[str, dict[str, Any]] = {}
    for clock, per_variant in times.items():
        median = {k: statistics.median(v) for k, v in per_variant.items()}
        clocks[clock] = {"median_s": median, "all_s": per_variant, **ratios(median)}
    # The hooks' own time over the untracked step (same clock): the tracker's cost without the
    # step-to-step noise of the two whole steps it is otherwise the difference of.
    hooks: dict[str, Any] = {}
    for clock, per_variant in hook_times.items():
        median = {k: statistics.median(v) for k, v in per_variant.items()}
        plain_s = clocks[clock]["median_s"]["plain"]
        row: dict[str, Any] = {"median_s": median, "all_s": per_variant}
        row["ours_ratio"] = 1 + median["ours"] / plain_s
        row["ours_all_ratio"] = 1 + median["ours_all"] / plain_s
        if "delve" in median:
            row["delve_ratio"] = 1 + median["delve"] / plain_s
            row["ours_over_delve_overhead"] = median["ours"] / median["delve"]
        hooks[clock] = row
    return {
        "tracked_layers": len(tracker.layer_names),
        "clocks": clocks,
        "hooks": hooks,
        "floor_ratio": 1 + cov_flops_auto / step_flops,
        "floor_ratio_all": 1 + cov_flops / step_flops,
        "step_gflop": step_flops / 1e9,
        "cov_gflop": cov_flops_auto / 1e9,
        "cov_gflop_all": cov_flops / 1e9,
        "saturation": saturation_errors(model, device, batches, tmp),
    }


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of the step times: one row per model and clock."""
    cols = [
        "model",
        "clock",
        "plain s/step",
        "ours s/step",
        "ours ×",
        "floor ×",
        "ours, all positions ×",
        "floor, all ×",
        "delve ×",
        "ours ovh ÷ delve ovh",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        rows = [(clock, c, c["median_s"]) for clock, c in r["clocks"].items()]
        rows += [(f"in hooks ({clock})", h, h["median_s"]) for clock, h in r["hooks"].items()]
        for clock, c, s in rows:
            hooks = clock.startswith("in hooks")
            has_delve = "delve_ratio" in c
            cells = [
                r["model"],
                clock,
                "—" if hooks else f"{s['plain']:.3f}",
                f"{s['ours']:.3f}",
                f"{c['ours_ratio']:.3f}",
                f"{r['floor_ratio']:.3f}",
                f"{c['ours_all_ratio']:.3f}",
                f"{r['floor_ratio_all']:.3f}",
                f"{c['delve_ratio']:.3f}" if has_delve else "n/a",
                f"{c['ours_over_delve_overhead']:.2f}" if has_delve else "n/a",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- saturation error over whole epochs on real data ---------------------------------------------


def fashion_mnist(images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``images`` Fashion-MNIST training images (../shared/data), normalised, padded
    to 32×32 and repeated to 3 channels, with their labels."""
    import gzip

    raw = ROOT.parent / "shared" / "data" / "FashionMNIST" / "raw"
    with gzip.open(raw / "train-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:images]
    with gzip.open(raw / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)[:images]
    x = torch.tensor(pixels, dtype=torch.float32).div(255).sub(0.286).div(0.353)
    x = nn.functional.pad(x, (2, 2, 2, 2)).unsqueeze(1).repeat(1, 3, 1, 1)
    return x, torch.tensor(labels, dtype=torch.long)


def _reference_k(n: int, s: np.ndarray, sxx: np.ndarray) -> int:
    mean = s / n
    cov = sxx / n - np.outer(mean, mean)
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None)
    share = np.cumsum(lam) / lam.sum()
    return int(np.argmax(share >= THRESHOLD)) + 1


def epoch_errors(
    model: nn.Module, *, device: torch.device, epochs: int, images: int
) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` on ``images`` Fashion-MNIST images (batch 128) with both
    of our settings and a float64 NumPy reference (every position) on the same passes; per
    epoch and layer: the reference k, each setting's k, saturation and standard error."""
    x_all, y_all = fashion_mnist(images)
    model = copy.deepcopy(model).to(device).train()
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    auto = SaturationTracker(model, seed=0)
    every = SaturationTracker(model, rows="all")
    per_epoch: list[dict[str, Any]] = []
    with reference_capture(model) as sums:
        for epoch in range(epochs):
            sums.clear()
            order = torch.randperm(len(x_all))
            for start in range(0, len(order), BATCH):
                index = order[start : start + BATCH]
                opt.zero_grad(set_to_none=True)
                out = model(x_all[index].to(device))
                loss = nn.functional.cross_entropy(out, y_all[index].to(device))
                loss.backward()
                opt.step()
            layers = []
            got_auto = {r.name: r for r in auto.compute()}
            got_all = {r.name: r for r in every.compute()}
            for name, (n, s_, sxx) in sums.items():
                a, e = got_auto[name], got_all[name]
                k_ref = _reference_k(n, s_, sxx)
                layers.append(
                    {
                        "layer": name,
                        "width": a.width,
                        "rows_all": e.samples,
                        "rows_auto": a.samples,
                        "k_ref": k_ref,
                        "k_auto": a.intrinsic_dimension,
                        "k_all": e.intrinsic_dimension,
                        "sat_ref": k_ref / a.width,
                        "sat_auto": a.saturation,
                        "sat_all": e.saturation,
                        "se_auto": a.saturation_se,
                    }
                )
            auto.reset()
            every.reset()
            per_epoch.append({"epoch": epoch + 1, "loss": loss.item(), "layers": layers})
            print(f"  epoch {epoch + 1}: loss {loss.item():.3f}", file=sys.stderr)
    auto.close()
    every.close()
    rows = [layer for e in per_epoch for layer in e["layers"]]
    summary: dict[str, Any] = {"images": images, "epochs": epochs, "batches": -(-images // BATCH)}
    for setting in ("auto", "all"):
        dsat = [abs(r[f"sat_{setting}"] - r["sat_ref"]) for r in rows]
        dk = [abs(r[f"k_{setting}"] - r["k_ref"]) for r in rows]
        summary[setting] = {
            "sat_error_mean": statistics.fmean(dsat),
            "sat_error_max": max(dsat),
            "k_error_mean": statistics.fmean(dk),
            "k_error_max": max(dk),
        }
    covered = [
        abs(r["sat_auto"] - r["sat_ref"]) <= 2 * r["se_auto"] + 1 / r["width"]
        for r in rows
        if r["se_auto"] is not None
    ]
    summary["auto"]["within_2se_plus_one_k"] = sum(covered) / len(covered) if covered else None
    return {"summary": summary, "per_epoch": per_epoch}


def error_table(results: list[dict[str, Any]]) -> str:
    cols = [
        "model",
        "images (batches) × epochs",
        "setting",
        "Δ saturation (abs.) mean / max",
        "Δk (abs.) mean / max",
        "layers within 2 SE (+1 k)",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        for run in r.get("epoch_errors", []):
            sm = run["summary"]
            for setting in ("auto", "all"):
                e = sm[setting]
                cells = [
                    r["model"],
                    f"{sm['images']} ({sm['batches']}) × {sm['epochs']}",
                    "defaults (auto)" if setting == "auto" else "all positions",
                    f"{e['sat_error_mean']:.4f} / {e['sat_error_max']:.4f}",
                    f"{e['k_error_mean']:.2f} / {e['k_error_max']}",
                    ""
                    if setting != "auto"
                    else "n/a"
                    if e["within_2se_plus_one_k"] is None
                    else f"{e['within_2se_plus_one_k']:.0%}",
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- peak memory ---------------------------------------------------------------------------------


def memory_probe(label: str, variant: str, batch: int) -> int:
    """Peak resident memory (KiB) while a process runs 3 training steps of one variant, after
    one warm-up step: Linux's high-water mark, reset just before (``/proc/self/clear_refs``)."""
    model = build_models()[label][0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, RESOLUTION, RESOLUTION, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    tracker = None
    if variant != "plain":
        tracker = SaturationTracker(model, rows="auto" if variant == "ours" else "all")
    step = make_step(model, x, y)
    step()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    for _ in range(3):
        step()
    if tracker is not None:
        tracker.compute()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory(labels: list[str], batches: tuple[int, ...] = (128, 256)) -> list[dict[str, Any]]:
    import subprocess

    out = []
    for label in labels:
        for batch in batches:
            row: dict[str, Any] = {"model": label, "batch": batch}
            for variant in ("plain", "ours", "ours_all"):
                probe = [sys.executable, __file__, "--memory-probe", label, variant, str(batch)]
                done = subprocess.run(probe, capture_output=True, text=True, check=True)
                row[variant] = int(done.stdout.strip().splitlines()[-1])
            out.append(row)
            print(f"  memory {label} batch {batch}: {row}", file=sys.stderr)
    return out


def memory_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | batch | untracked peak MiB | ours (auto) extra MiB | ours (all) extra MiB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['plain'] / 1024:.0f} | "
            f"{(r['ours'] - r['plain']) / 1024:+.0f} | {(r['ours_all'] - r['plain']) / 1024:+.0f} |"
        )
    return "\n".join(lines)


# -- scatter paths per layer ---------------------------------------------------------------------


def _blocked_gram(a: torch.Tensor) -> torch.Tensor:
    """The blocked symmetric product the tracker used to have (``a @ a.T`` computing one
    triangle by recursion), kept here to measure what it would buy."""
    m = a.shape[0]
    if m < 64:
        return a @ a.T
    half = m // 2
    gram = torch.empty((m, m), dtype=a.dtype)
    torch.mm(a[half:], a.T, out=gram[half:])
    gram[:half, :half] = _blocked_gram(a[:half])
    gram[:half, half:] = gram[half:, :half].T
    return gram


def _per_example_full(y: torch.Tensor) -> torch.Tensor:
    """Every position, reduced example by example in NCHW's own layout (the dropped path)."""
    b, c = y.shape[:2]
    shift = y[:: max(1, b // 8)].mean(dim=(0, 2, 3))
    blocks = (y - shift.view(1, c, 1, 1)).view(b, c, -1)
    return torch.bmm(blocks, blocks.transpose(1, 2)).sum(dim=0)


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _conv_shapes(model: nn.Module) -> dict[tuple[int, ...], int]:
    """Output shape of every conv at batch 128 → how many convs have it."""
    shapes: dict[tuple[int, ...], int] = {}

    def record(module: nn.Module, args: Any, o: torch.Tensor) -> None:
        shapes[tuple(o.shape)] = shapes.get(tuple(o.shape), 0) + 1

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(record) for m in convs]
    with torch.no_grad():
        model(torch.randn(BATCH, 3, RESOLUTION, RESOLUTION))
    for h in handles:
        h.remove()
    return shapes


def _path_times(shape: tuple[int, ...], gen: torch.Generator, repeats: int) -> dict[str, Any]:
    y = torch.randn(*shape, generator=gen)
    b, c, p = shape[0], shape[1], shape[2] * shape[3]
    per_ex = sample_size(auto_rows(c), b * p, b)
    sampled = per_ex is not None
    rows = torch.randn(c, b * per_ex if per_ex is not None else b * p, generator=gen)
    row = {
        "shape": list(shape),
        "sampled": sampled,
        "matmul_ms": _median_ms(lambda: rows @ rows.T, repeats),
        "blocked_ms": _median_ms(lambda: _blocked_gram(rows), repeats),
        "all_chunked_ms": _median_ms(lambda: SF.channels_first_batch_moments(y), repeats),
        "all_per_example_ms": _median_ms(lambda: _per_example_full(y), repeats),
    }
    row["auto_ms"] = (
        _median_ms(lambda: SF.sampled_map_moments(y, per_ex, generator=gen), repeats)
        if per_ex is not None
        else row["all_chunked_ms"]
    )
    return row


def paths(labels: list[str], repeats: int = 15) -> list[dict[str, Any]]:
    """Per layer shape of each model at batch 128: ms of the scatter at the defaults (one
    matmul vs the blocked product on the same rows) and at every position (channels-first
    chunks, the tracker's path, vs per-example products)."""
    out = []
    gen = torch.Generator().manual_seed(0)
    for label in labels:
        for shape, count in _conv_shapes(build_models()[label][0]).items():
            row = {"model": label, "layers": count, **_path_times(shape, gen, repeats)}
            out.append(row)
            print(f"  paths {label} {shape}: {row}", file=sys.stderr)
    return out


def paths_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | map (×layers) | defaults: rows | one matmul ms | blocked ms | all: chunked ms | all: per-example ms | defaults total ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, c, h, w = r["shape"]
        n = b * (sample_size(auto_rows(c), b * h * w, b) or h * w)
        lines.append(
            f"| {r['model']} | {c}×{h}×{w} (×{r['layers']}) | {n} | {r['matmul_ms']:.2f} | "
            f"{r['blocked_ms']:.2f} | {r['all_chunked_ms']:.2f} | {r['all_per_example_ms']:.2f} | "
            f"{r['auto_ms']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (rounds)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--eval-batches", type=int, default=3, help="batches of delve's error")
    parser.add_argument("--models", nargs="*", default=None, help="subset: VGG16 ResNet-18")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the step timings")
    parser.add_argument(
        "--error-epochs", type=int, default=0, help="epochs of the real-data error (0: skip)"
    )
    parser.add_argument(
        "--error-images",
        type=int,
        nargs="*",
        default=[1280, 5120],
        help="training images per epoch of the error runs (one run each)",
    )
    parser.add_argument("--memory", action="store_true", help="measure the peak memory")
    parser.add_argument("--paths", action="store_true", help="time the scatter paths per layer")
    parser.add_argument("--memory-probe", nargs=3, metavar=("MODEL", "VARIANT", "BATCH"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        label, variant, batch = args.memory_probe
        print(memory_probe(label, variant, int(batch)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    if device.type == "cuda":  # the untracked steps run at the usual TF32 setting
        torch.backends.cudnn.benchmark = True
    results = []
    labels = []
    for label, (model, source) in build_models().items():
        if args.models and label not in args.models:
            continue
        labels.append(label)
        r: dict[str, Any] = {"model": label, "source": source}
        if not args.no_timing:
            r.update(
                bench_model(
                    label,
                    model,
                    device=device,
                    rounds=args.steps,
                    warmup=args.warmup,
                    eval_batches=args.eval_batches,
                )
            )
        if args.error_epochs:
            r["epoch_errors"] = [
                epoch_errors(model, device=device, epochs=args.error_epochs, images=n)
                for n in args.error_images
            ]
        results.append(r)
        print(f"{label}: done ({source})", file=sys.stderr)
    env = {
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch": BATCH,
        "resolution": RESOLUTION,
        "steps": args.steps,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": list(_load()),
    }
    extra: dict[str, Any] = {}
    print(json.dumps(env))
    if not args.no_timing:
        print(table(results))
    if args.error_epochs:
        print(error_table(results))
    if args.memory:
        extra["memory"] = memory(labels)
        print(memory_table(extra["memory"]))
    if args.paths:
        extra["paths"] = paths(labels)
        print(paths_table(extra["paths"]))
    if args.json:
        payload = {"env": env, "results": results, **extra}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0


def _load() -> tuple[float, ...]:
    import os

    with contextlib.suppress(OSError):
        return os.getloadavg()
    return ()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


if __name__ == "__main__":
    raise SystemExit(main())
