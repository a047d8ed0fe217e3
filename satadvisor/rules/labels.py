"""Layer labels a person reads: ``conv8``, ``conv8–conv13``, ``Conv2d #5 (features.17)``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence


def is_conv(module_type: str) -> bool:
    """True for Conv1d/2d/3d (and transposed) layers, by their type name."""
    return "conv" in module_type.lower()


def short_names(
    names: Sequence[str], types: Mapping[str, str] | Sequence[str] | None = None
) -> dict[str, str]:
    """Qualified name -> the label a person reads (verdicts, terminal, report).

    A named layer keeps its name: the last component where that is unique (``conv8`` for
    ``features.conv8``), else the qualified name (``layer1.0.conv1``). An unnamed layer — one
    whose name ends in a bare index, as the children of an ``nn.Sequential`` do — gets its type
    and its number among the layers of that type in ``names`` (forward order), with the
    qualified name: ``Conv2d #5 (features.17)``. ``types`` gives each layer's module type (by
    name, or in the order of ``names``); without it an unnamed layer keeps its qualified name.
    """
    if types is not None and not isinstance(types, Mapping):
        types = dict(zip(names, types, strict=True))
    last = [name.rsplit(".", 1)[-1] for name in names]
    counts = Counter(last)
    seen: Counter[str] = Counter()
    labels = {}
    for name, tail in zip(names, last, strict=True):
        kind = types.get(name) if types is not None else None
        if kind:
            seen[kind] += 1
        if not tail.isdigit():
            labels[name] = tail if counts[tail] == 1 else name
        elif kind:
            labels[name] = f"{kind} #{seen[kind]} ({name})"
        else:
            labels[name] = name
    return labels


def span_label(names: Sequence[str], labels: Mapping[str, str]) -> str:
    """'conv8–conv13' for a contiguous run (first and last), 'conv8' for one layer."""
    first, last = labels.get(names[0], names[0]), labels.get(names[-1], names[-1])
    return first if len(names) == 1 else f"{first}–{last}"


def names_label(names: Sequence[str], order: Sequence[str], labels: Mapping[str, str]) -> str:
    """Layers as contiguous runs of ``order``: 'conv2–conv4 and conv7'."""
    position = {name: i for i, name in enumerate(order)}
    runs: list[list[str]] = []
    for name in names:
        if runs and position.get(name, -2) == position.get(runs[-1][-1], -9) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    parts = [span_label(run, labels) for run in runs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
