"""Helpers shared by the evidence benchmarks (proxy_fidelity, tail_removal, search_quality).

- :func:`fashion_root`: a torchvision root holding Fashion-MNIST, decompressed once from
  ``../shared/data/FashionMNIST/raw/*.gz`` into the git-ignored ``benchmarks/data/`` and
  checked against the published md5 sums (:func:`prepare_shared_fashion_mnist` decompresses).
- :func:`add_run_options`: the options every script has (``--device``, ``--subset``,
  ``--epochs``, ``--full-epochs``, ``--seeds``, ``--date``, ``--out``, ``--threads``).
- :func:`record`: what a result records about itself (date, device, versions, options).
- :func:`write_json` (atomic) and :func:`markdown_table`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
DATA_ROOT = HERE / "data"
SHARED_FASHION = HERE.parents[1] / "shared" / "data" / "FashionMNIST" / "raw"

#: md5 of the decompressed Fashion-MNIST files (../shared/data/README.md, upstream release).
FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def fashion_root(root: Path | None = None, *, shared: Path = SHARED_FASHION) -> Path:
    """A torchvision root with ``FashionMNIST/raw`` decompressed and md5-checked; returns it.

    ``root`` defaults to ``benchmarks/data``. Decompression happens once; later calls only
    check the sums. Raises SystemExit with a one-line message when the files are missing or
    differ from the published release.
    """
    root = DATA_ROOT if root is None else root
    raw = root / "FashionMNIST" / "raw"
    if not all((raw / name).is_file() for name in FASHION_MD5):
        if not shared.is_dir():
            raise SystemExit(
                f"Fashion-MNIST not found: neither {raw} nor {shared} holds it; "
                "pass --data-dir with a torchvision root"
            )
        prepare_shared_fashion_mnist(shared, root)
    for name, expected in FASHION_MD5.items():
        digest = hashlib.md5((raw / name).read_bytes()).hexdigest()
        if digest != expected:
            raise SystemExit(
                f"{raw / name}: md5 {digest}, expected {expected}; delete it and rerun"
            )
    return root


def prepare_shared_fashion_mnist(
    src_dir: str | os.PathLike[str], root: str | os.PathLike[str]
) -> Path:
    """Decompress Fashion-MNIST ``*.gz`` files into a torchvision root; returns ``root``.

    ``src_dir`` is the folder holding ``train-images-idx3-ubyte.gz`` and its three siblings,
    or a parent of it (``FashionMNIST/raw`` or ``raw`` below it). Files already present in
    ``root/FashionMNIST/raw`` are kept; new ones are written atomically. (``satadvisor.data``
    reads the ``.gz`` files directly; the benchmarks that compare with torchvision's own
    datasets need them unpacked.)
    """
    src = Path(src_dir).expanduser()
    first = f"{next(iter(FASHION_MD5))}.gz"
    candidates = [src, src / "raw", src / "FashionMNIST" / "raw"]
    found = next((c for c in candidates if (c / first).is_file()), None)
    if found is None:
        raise SystemExit(
            f"fashion-mnist: no {first} in {src}; pass the folder holding the .gz files"
        )
    raw_dir = Path(root).expanduser() / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MD5:
        target = raw_dir / name
        if target.is_file():
            continue
        with tempfile.NamedTemporaryFile(dir=raw_dir, delete=False) as tmp:
            try:
                with gzip.open(found / f"{name}.gz", "rb") as gz:
                    shutil.copyfileobj(gz, tmp)
            except (OSError, EOFError) as exc:
                tmp.close()
                os.unlink(tmp.name)
                raise SystemExit(f"{found / name}.gz: unreadable ({exc}); copy it again") from exc
        os.replace(tmp.name, target)
    return Path(root).expanduser()


def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    subset: int | None,
    epochs: int,
    full_epochs: int,
    seeds: int,
    out: Path,
) -> None:
    """The options every evidence script shares; the defaults passed here are the GPU ones."""
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:N")
    parser.add_argument(
        "--subset",
        type=int,
        default=subset,
        help=f"cap each split at this many images, stratified (default {subset or 'all'})",
    )
    parser.add_argument(
        "--epochs", type=int, default=epochs, help=f"proxy epochs (default {epochs})"
    )
    parser.add_argument(
        "--full-epochs",
        type=int,
        default=full_epochs,
        help=f"epochs of the full (test-set) runs (default {full_epochs})",
    )
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds 0..N-1 (default {seeds})")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="torchvision root (default benchmarks/data)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--date", default=None, help="date to record, YYYY-MM-DD (default: today, UTC)"
    )
    parser.add_argument("--out", type=Path, default=out, help=f"JSON output (default {out})")


def setup(args: argparse.Namespace) -> None:
    """Apply the process-wide options (CPU threads, deterministic matmuls)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def record(args: argparse.Namespace, *, started: float, finished: float) -> dict[str, Any]:
    """Date, command, options, device, versions and timing of a benchmark run (JSON-ready)."""
    from satadvisor._env import environment

    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "date": args.date or dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "options": options,
        "environment": environment(args.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(finished - started, 1),
    }


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats as written by the caller (pass strings to format)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value); NaN for none."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pct(mean: float, std: float | None = None) -> str:
    """A fraction as percent with two decimals, e.g. '91.23 ± 0.40'."""
    if std is None:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def human(n: float) -> str:
    """1234567 -> '1.23M' (MACs, parameters)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"
