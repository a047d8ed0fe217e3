"""SaturationTracker: forward hooks that stream layer-output covariances, per phase."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from satadvisor.errors import UsageError
from satadvisor.saturation import functional as F
from satadvisor.saturation._result import LayerSaturation

PHASES: tuple[str, ...] = ("train", "eval")
TRACKED_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,  # Conv1d/2d/3d, ConvTranspose1d/2d/3d and their lazy variants
    nn.Linear,
    nn.LSTM,
    nn.GRU,
)
_STATE_FORMAT = "satadvisor.saturation/2"
_OLD_FORMATS = ("satadvisor.saturation/1",)  # one state per layer: read into group 0

Rows = int | Literal["auto", "all"]
# rows="auto": per batch and layer at most max(ROWS_PER_FEATURE · width, MIN_ROWS) rows enter
# the statistics (positions drawn per example); the error this costs against every position is
# measured in benchmarks/RESULTS.md ("Tracker overhead") and stated in docs/saturation.md.
ROWS_PER_FEATURE = 8
MIN_ROWS = 4096
GROUPS = 4
#: The error of ``rows="auto"`` against every position, as measured by
#: benchmarks/tracker_overhead.py --error-epochs (benchmarks/RESULTS.md, "Tracker overhead").
STATED_ERROR: dict[str, Any] = {
    "k": 1,  # |k(auto) − k(every position)| in eigen-directions, per layer and epoch
    "saturation": "1 / width",  # the same in saturation: 0.016 at 64 channels, 0.004 at 256
    "measured_on": (
        "VGG16 and ResNet-18 trained on Fashion-MNIST at 32 px, batch 128, epochs of 10 and 40 "
        "batches: 144 layer-epochs, 88 of them sampled; largest error 1 direction (10 of 144)"
    ),
    "see": "docs/saturation.md",
}


def auto_rows(width: int) -> int:
    """Rows per batch that ``rows="auto"`` keeps of a layer with ``width`` features."""
    return max(ROWS_PER_FEATURE * width, MIN_ROWS)


def sample_size(target: int | None, rows: int, examples: int | None = None) -> int | None:
    """What a batch of ``rows`` rows gives to the statistics under a cap of ``target`` rows:
    positions drawn per example for a conv map of ``examples`` examples, rows drawn otherwise,
    or None when every row is read (no cap, or fewer rows than twice what a sample would keep:
    sampling would save little)."""
    if target is None or rows <= target:
        return None
    if examples:
        per_example = -(-target // examples)
        return per_example if 2 * per_example <= rows // examples else None
    return target if 2 * target <= rows else None


class SaturationTracker:
    """Measures the saturation of a model's layers from their raw outputs during forward passes.

    Every ``Conv*``/``ConvTranspose*``/``Linear``/``LSTM``/``GRU`` module of ``model`` is tracked
    unless narrowed by ``include`` / ``exclude``: fnmatch patterns matched against the
    qualified module name (``"features.3"``) or the class name (``"Linear"``). Each forward
    pass of a tracked module adds its output rows to the statistics of the current phase,
    ``"train"`` if the module is in training mode, else ``"eval"``.

    Only forward hooks are added; :meth:`close` (or leaving the ``with`` block) removes them and
    nothing is ever set on the user's modules. The statistics stay on the layer's device (or on
    ``device``) and are never synchronised with the host during a pass (unless ``device`` is
    the CPU for a CUDA model: then every batch is copied over). Observations are the raw
    outputs, detached and reduced in float32 with autocast off (in float64 for float64 layers,
    and where the process allows TF32 matmuls: see :func:`~satadvisor.saturation.functional.
    compute_dtype`), so autograd, AMP and the process's precision settings are unaffected.

    **Rows.** A conv map has one row per position of every example. By default
    (``rows="auto"``) a layer's batch contributes at most :func:`auto_rows` rows (8 per feature,
    at least 4096): that many positions spread evenly over the examples, drawn with
    replacement from a generator seeded with ``seed``. It keeps the tracker's cost and memory
    per layer O(width²) whatever the batch and map size, at a measured error against every
    position (docs/saturation.md). ``rows="all"`` reads every position; an int caps the rows
    per batch at that number.

    **Uncertainty.** The batches a layer sees are dealt round-robin into ``groups`` groups
    with separate statistics (their merge is the whole). :meth:`compute` reports each
    saturation with a delete-a-group jackknife standard error (``saturation_se``; None with
    fewer than 3 non-empty groups, or ``groups=1``). Memory: ``groups`` float64 width×width
    matrices per layer and phase.

    Args:
        model: the network to observe.
        threshold: δ, the share of variance the intrinsic dimension must explain, in (0, 1].
        include / exclude: fnmatch patterns (one string or several) on names or class names.
        rows: ``"auto"`` (default), ``"all"`` or a positive int: the rows per batch and layer
            that enter the statistics (see above).
        groups: batch groups behind the standard error (1 turns it off).
        k_rule: ``"smallest"`` (correct) or ``"delve"`` (delve 0.1.50's rule, for comparisons);
            see :func:`satadvisor.saturation.functional.intrinsic_dimension`.
        device: where the statistics live and are computed; default: each layer's device.
        seed: seed of the row sampling.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        threshold: float = 0.99,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        rows: Rows = "auto",
        groups: int = GROUPS,
        k_rule: F.KRule = "smallest",
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"saturation threshold {threshold} is outside (0, 1]; use e.g. 0.99")
        if k_rule not in F.K_RULES:
            raise UsageError(f"unknown k_rule {k_rule!r}; use one of {', '.join(F.K_RULES)}")
        if rows not in ("auto", "all") and not (
            isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1
        ):
            raise UsageError(f"rows={rows!r} must be 'auto', 'all' or a positive number of rows")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise UsageError(f"groups={groups!r} must be a positive number of batch groups")
        self.threshold = float(threshold)
        self.k_rule: F.KRule = k_rule
        self.rows: Rows = rows
        self.groups = groups
        self.device = None if device is None else torch.device(device)
        self.seed = seed
        #: False: the hooks stay attached but record nothing (e.g. the epochs of a run whose
        #: saturation is measured in its last epoch only).
        self.enabled = True
        self._types: dict[str, str] = {}  # tracked name -> class name, registration order
        self._handles: list[RemovableHandle] = []
        # phase -> layer -> one running state per batch group (None until the group sees a batch)
        self._states: dict[str, dict[str, list[F.CovarianceState | None]]] = {p: {} for p in PHASES}
        self._batches: dict[str, dict[str, int]] = {p: {} for p in PHASES}
        self._order: dict[str, None] = {}  # names in order of their first observed forward
        self._generators: dict[torch.device, torch.Generator] = {}
        self._scratch_buffers: dict[torch.dtype, Tensor] = {}
        includes, excludes = _patterns(include), _patterns(exclude)
        for name, module in model.named_modules():
            if _selected(name, module, includes, excludes):
                self._types[name] = type(module).__name__
                hook = functools.partial(self._observe, name)
                self._handles.append(module.register_forward_hook(hook))
        if not self._types:
            raise UsageError(
                f"no Conv/ConvTranspose/Linear/LSTM/GRU layer of {type(model).__name__} matches "
                f"include={include!r} exclude={exclude!r}; widen the patterns"
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> SaturationTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this tracker added (idempotent); the statistics are kept."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._scratch_buffers.clear()

    def reset(self) -> None:
        """Forget all statistics of both phases (e.g. at the start of an epoch)."""
        self._states = {p: {} for p in PHASES}
        self._batches = {p: {} for p in PHASES}

    @property
    def layer_names(self) -> list[str]:
        """Qualified names of the tracked modules, in ``model.named_modules()`` order."""
        return list(self._types)

    # -- the hook ------------------------------------------------------------------------------

    def _observe(self, name: str, module: nn.Module, args: object, output: object) -> None:
        if not self.enabled:
            return
        phase = "train" if module.training else "eval"
        # Outside inference mode even when the forward runs in it: the running statistics and
        # the scratch buffer are updated in place by later passes, which inference tensors forbid.
        with torch.no_grad(), torch.inference_mode(False):
            batch = self._batch_moments(module, output)
            slots = self._slots(phase, name)
            seen = self._batches[phase].get(name, 0)
            self._batches[phase][name] = seen + 1
            group = seen % len(slots)  # round-robin: every group spans the whole epoch
            running = slots[group]
            if running is None:
                self._order.setdefault(name, None)
                slots[group] = F.to_state(batch)
            else:
                if running.m2.device != batch.scatter.device:  # e.g. loaded or synced elsewhere
                    running = _to_device(running, batch.scatter.device)
                slots[group] = F.accumulate_(running, batch)  # owned: updated in place

    def _slots(self, phase: str, name: str) -> list[F.CovarianceState | None]:
        slots = self._states[phase].get(name)
        if slots is None:
            slots = self._states[phase][name] = [None] * self.groups
        return slots

    def _target_rows(self, width: int) -> int | None:
        if self.rows == "all":
            return None
        return auto_rows(width) if self.rows == "auto" else int(self.rows)

    def _batch_moments(self, module: nn.Module, output: object) -> F.BatchMoments:
        y = F.output_tensor(module, output).detach()
        if self.device is not None:
            y = y.to(self.device, non_blocking=True)
        is_conv = isinstance(module, nn.modules.conv._ConvNd)
        if is_conv and y.dim() == len(module.kernel_size) + 1:  # type: ignore[arg-type]
            y = y.unsqueeze(0)  # unbatched input
        width = y.shape[1] if is_conv else y.shape[-1]
        rows = y.numel() // width if width else 0
        drawn = sample_size(self._target_rows(width), rows, y.shape[0] if is_conv else None)
        if drawn is not None:
            gen = self._generator(y.device)
            if is_conv:
                return F.sampled_map_moments(y, drawn, generator=gen)
            index = torch.randint(rows, (drawn,), generator=gen, device=y.device)
            return F.batch_moments(F.flatten_output(module, y)[index])
        if is_conv and not y.movedim(1, -1).is_contiguous():  # NCHW: centered as it is read
            examples = y.shape[0]
            scratch = self._scratch(y, F.scratch_numel(examples, rows // max(examples, 1), width))
            return F.channels_first_batch_moments(y, scratch=scratch)
        scratch = self._scratch(y, F.scratch_numel(rows, 1, width))
        return F.batch_moments(F.flatten_output(module, y), scratch=scratch)

    def _scratch(self, y: Tensor, size: int) -> Tensor | None:
        """A reusable centering buffer on CPU, or None elsewhere.

        Fresh CPU allocations of activation size page-fault on every batch; CUDA's caching
        allocator already reuses memory (and, unlike a shared buffer, is stream-safe).
        """
        if y.device.type != "cpu":
            return None
        dtype = F.compute_dtype(y)
        buf = self._scratch_buffers.get(dtype)
        if buf is None or buf.numel() < size:
            buf = torch.empty(size, dtype=dtype)
            self._scratch_buffers[dtype] = buf
        return buf

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[device] = gen
        return gen

    # -- results -------------------------------------------------------------------------------

    def state(self, name: str, *, phase: str = "train") -> F.CovarianceState | None:
        """A copy of the running ``(n, mean, m2)`` of one layer and phase (None: no pass seen),
        all batch groups merged.

        A copy, because the tracker updates its running ``m2`` in place batch after batch.
        """
        slots = self._states[_check_phase(phase)].get(name)
        parts = [s for s in slots or () if s is not None]
        return _merged(parts) if parts else None

    def compute(self, phase: str = "train") -> list[LayerSaturation]:
        """Saturation of every layer observed in ``phase``, in forward-execution order.

        Eigenvalues come from ``torch.linalg.eigvalsh`` of the float64 population covariance on
        the statistics' device, batched over layers of equal width. ``saturation_se`` is the
        delete-a-group jackknife standard error of the continuous saturation
        (:func:`~satadvisor.saturation.functional.fractional_dimension` ÷ width) over the batch
        groups: ``sqrt((g − 1)/g · Σ (θ₋ᵢ − θ̄)²)`` for ``g ≥ 3`` non-empty groups, else None.
        """
        states = self._states[_check_phase(phase)]
        names = [n for n in self._order if n in states]
        # One batch of matrices per (width, device): each layer's whole, then its leave-one-out.
        jobs: dict[tuple[int, torch.device], list[tuple[str, int, F.CovarianceState]]] = {}
        for name in names:
            parts = [s for s in states[name] if s is not None]
            whole = _merged(parts)
            key = (int(whole.mean.shape[0]), whole.mean.device)
            jobs.setdefault(key, []).append((name, -1, whole))
            if len(parts) >= _MIN_JACKKNIFE_GROUPS:
                for i in range(len(parts)):
                    jobs[key].append((name, i, _merged(parts[:i] + parts[i + 1 :])))
        results: dict[str, LayerSaturation] = {}
        for (width, _), job in jobs.items():
            eig = F.eigenvalues(torch.stack([F.covariance(st) for _, _, st in job]))
            k = F.intrinsic_dimension(eig, threshold=self.threshold, k_rule=self.k_rule)
            cont = F.fractional_dimension(eig, threshold=self.threshold).cpu().tolist()
            spectra = eig.cpu().tolist()
            leave_out: dict[str, list[float]] = {}
            for row, (name, part, st) in enumerate(job):
                if part >= 0:
                    leave_out.setdefault(name, []).append(cont[row] / max(width, 1))
                    continue
                n_i = int(st.n)
                k_i = int(k[row]) if n_i > 0 else 0  # no samples: saturation 0.0
                results[name] = LayerSaturation(
                    name=name,
                    module_type=self._types[name],
                    width=width,
                    samples=n_i,
                    saturation=k_i / width if width else 0.0,
                    intrinsic_dimension=k_i,
                    eigenvalues=tuple(spectra[row]),
                )
            for name, values in leave_out.items():
                g = len(values)
                mean = sum(values) / g
                se = math.sqrt((g - 1) / g * sum((v - mean) ** 2 for v in values))
                results[name] = dataclasses.replace(results[name], saturation_se=se)
        return [results[n] for n in names]

    # -- moving state between processes and runs -----------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the statistics (tensors cloned, on their devices), for saving or merging:
        per phase and layer, one ``{n, mean, m2}`` per batch group (None for an empty group)."""
        return {
            "format": _STATE_FORMAT,
            "order": list(self._order),
            "types": dict(self._types),
            "states": {
                phase: {
                    name: [
                        None if s is None else {k: v.clone() for k, v in s._asdict().items()}
                        for s in slots
                    ]
                    for name, slots in st.items()
                }
                for phase, st in self._states.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the statistics with a :meth:`state_dict` snapshot of the same layers."""
        self.reset()
        self.merge_from(state)

    def merge_from(self, other: SaturationTracker | Mapping[str, Any]) -> None:
        """Add another tracker's (or snapshot's) statistics to ours, as if we had seen its data.

        Batch group ``i`` of the other joins our group ``i mod groups``; a snapshot of the
        older one-state format joins group 0.
        """
        snapshot = other.state_dict() if isinstance(other, SaturationTracker) else other
        fmt = snapshot.get("format")
        if fmt != _STATE_FORMAT and fmt not in _OLD_FORMATS:
            raise UsageError(
                "not a SaturationTracker.state_dict() snapshot; pass one saved by this version"
            )
        unknown = set(snapshot["order"]) - set(self._types)
        if unknown:
            raise UsageError(
                f"snapshot has layers this tracker does not track ({', '.join(sorted(unknown))}); "
                "merge snapshots of the same model"
            )
        for phase, layer_states in snapshot["states"].items():
            for name, raw in layer_states.items():
                groups = [raw] if fmt in _OLD_FORMATS else raw
                for i, part in enumerate(groups):
                    if part is not None:
                        incoming = F.CovarianceState(**part)
                        self._merge_state(_check_phase(phase), name, i, incoming)
        for name in snapshot["order"]:
            self._order.setdefault(name, None)

    def _merge_state(self, phase: str, name: str, group: int, incoming: F.CovarianceState) -> None:
        slots = self._slots(phase, name)
        group %= len(slots)
        running = slots[group]
        if running is None:
            device = self.device or incoming.mean.device
            running = F.empty_state(incoming.mean.shape[0], device=device)
        if running.mean.shape != incoming.mean.shape:
            raise UsageError(
                f"layer {name!r} has width {running.mean.shape[0]} here and "
                f"{incoming.mean.shape[0]} in the merged state; merge states of the same model"
            )
        slots[group] = F.merge(running, incoming)

    def sync(self, group: Any = None) -> None:
        """Merge the statistics of all torch.distributed ranks into every rank (a collective).

        Every rank must call it. Afterwards each rank holds the statistics of all ranks' data
        (batch group by batch group), so call it once per accumulation period (a second call
        would count the data again). A no-op when torch.distributed is not initialised or has
        a single rank.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        flat = {
            phase: {
                (name, i): s
                for name, slots in st.items()
                for i, s in enumerate(slots)
                if s is not None
            }
            for phase, st in self._states.items()
        }
        merged, order = _all_gather_states(flat, list(self._order), group)
        for phase, layer_states in merged.items():
            for (name, i), st in layer_states.items():
                slots = self._slots(phase, name)
                local = slots[i % len(slots)]
                device = local.mean.device if local is not None else self.device
                slots[i % len(slots)] = st if device is None else _to_device(st, device)
        for name in order:
            self._order.setdefault(name, None)

    def __repr__(self) -> str:
        return (
            f"SaturationTracker({len(self._types)} layers, threshold={self.threshold}, "
            f"k_rule={self.k_rule!r}, hooks={'on' if self._handles else 'removed'})"
        )


# Fewer groups than this give no standard error: two leave-one-out values are one difference.
_MIN_JACKKNIFE_GROUPS = 3


def _merged(parts: Sequence[F.CovarianceState]) -> F.CovarianceState:
    """The merge of several states (a fresh one; the inputs are not modified)."""
    total = F.merge(F.empty_state(parts[0].mean.shape[0], device=parts[0].mean.device), parts[0])
    for part in parts[1:]:
        total = F.merge(total, part)
    return total


def _patterns(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _matches(name: str, module: nn.Module, patterns: Iterable[str]) -> bool:
    kind = type(module).__name__
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(kind, p) for p in patterns)


def _selected(
    name: str,
    module: nn.Module,
    includes: tuple[str, ...] | None,
    excludes: tuple[str, ...] | None,
) -> bool:
    if not isinstance(module, TRACKED_TYPES):
        return False
    if includes is not None and not _matches(name, module, includes):
        return False
    return not (excludes is not None and _matches(name, module, excludes))


def _all_gather_states(
    states: dict[str, dict[Any, F.CovarianceState]], order: list[str], group: Any
) -> tuple[dict[str, dict[Any, F.CovarianceState]], list[str]]:
    """Every rank's states, merged in rank order with :func:`F.merge` (identical on all ranks).

    The keys (phase, layer, width) are exchanged first, so a rank that missed a layer or a
    phase contributes an empty state; then all tensors travel in one flat float64 all_gather.
    """
    dist = torch.distributed
    world = dist.get_world_size(group)
    local_keys = [(p, n, int(s.mean.shape[0])) for p, st in states.items() for n, s in st.items()]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (order, local_keys), group=group)
    keys: dict[tuple[str, str, int], None] = {}
    merged_order: dict[str, None] = {}
    for rank_order, rank_keys in gathered:
        keys.update(dict.fromkeys(tuple(k) for k in rank_keys))
        merged_order.update(dict.fromkeys(rank_order))
    device = _collective_device(group, states)
    parts = []
    for phase, name, width in keys:
        st = states[phase].get(name) or F.empty_state(width, device=device)
        parts += [
            st.n.to(device, torch.float64).view(1),
            st.mean.to(device),
            st.m2.to(device).flatten(),
        ]
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=device)
    buffers = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(buffers, flat, group=group)
    merged: dict[str, dict[Any, F.CovarianceState]] = {p: {} for p in PHASES}
    offset = 0
    for phase, name, width in keys:
        size = 1 + width + width * width
        total = F.empty_state(width, device=device)
        for buf in buffers:
            chunk = buf[offset : offset + size]
            part = F.CovarianceState(
                n=chunk[0].round().to("cpu", torch.int64),
                mean=chunk[1 : 1 + width],
                m2=chunk[1 + width :].view(width, width),
            )
            total = F.merge(total, part)
        merged[phase][name] = total
        offset += size
    return merged, list(merged_order)


def _collective_device(group: Any, states: dict[str, dict[str, F.CovarianceState]]) -> torch.device:
    """CUDA for NCCL (it only moves CUDA tensors), else where the statistics already are."""
    backend = str(torch.distributed.get_backend(group)).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    for st in states.values():
        for s in st.values():
            return s.mean.device
    return torch.device("cpu")


def _to_device(state: F.CovarianceState, device: torch.device) -> F.CovarianceState:
    return F.CovarianceState(state.n.cpu(), state.mean.to(device), state.m2.to(device))


def _check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise UsageError(f"unknown phase {phase!r}; use 'train' or 'eval'")
    return phase
