"""Training-free knowledge of a configuration, before it is trained.

Every configuration the sampler considers is built on PyTorch's meta device (no weights are
allocated, nothing is computed): its MACs and parameters are counted and its receptive fields
analysed at its resolution, at a small fraction of a trial's cost (benchmarks/RESULTS.md,
"Search workers"). A configuration that cannot be built (knob values the model refuses, maps
that shrink to nothing) is known before a trial is spent on it, and so are its *unproductive*
layers — layers whose inputs already see the whole image, or whose map is too small for their
kernel (see :mod:`satadvisor.receptive`). Such layers add MACs and cannot add accuracy, so a
configuration with them is dominated by the one without them; :mod:`.sampler` steers away
from it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from satadvisor import receptive
from satadvisor import spec as spec_mod
from satadvisor.cost import count_macs, count_parameters
from satadvisor.errors import SatAdvisorError
from satadvisor.search.record import Prior, config_key
from satadvisor.search.space import SearchSpace


class Priors:
    """Computes and caches :class:`Prior` of configurations of one study's space.

    The sampler screens many configurations per trial and reads only their cost and their
    verdicts at their resolution; the feasible input range (a few more shape runs: about
    three quarters of the analysis) is computed only when asked for, for the trials that
    run (their records carry it).
    """

    def __init__(
        self, spec: spec_mod.ModelSpec, space: SearchSpace, *, num_classes: int, in_channels: int
    ) -> None:
        self.spec = spec
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        self._screened: dict[str, Prior] = {}  # without the feasible range
        self._full: dict[str, Prior] = {}  # with it

    def __call__(self, params: Mapping[str, Any], *, feasible: bool = False) -> Prior:
        """The prior of ``params``; ``feasible``: with the architecture's feasible range."""
        knobs = self.space.configuration(params)
        key = config_key(knobs)
        if key in self._full:
            return self._full[key]
        if feasible:
            self._full[key] = self._compute(knobs, feasible=True)
            return self._full[key]
        if key not in self._screened:
            self._screened[key] = self._compute(knobs, feasible=False)
        return self._screened[key]

    def _compute(self, knobs: dict[str, Any], *, feasible: bool) -> Prior:
        from satadvisor.advisor import build_model

        resolution = int(knobs["resolution"])
        resolved = {k: v for k, v in self.spec.resolve(knobs).items() if k != "resolution"}
        try:
            # Meta tensors: no weights, no compute; the user's model may print or warn.
            with (
                torch.device("meta"),
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                net = build_model(
                    self.spec,
                    {**resolved, "resolution": resolution},
                    num_classes=self.num_classes,
                    in_channels=self.in_channels,
                )
                macs = count_macs(net, in_channels=self.in_channels, resolution=resolution)
            params = count_parameters(net)
            rf = receptive.analyze(
                net, resolution, in_channels=self.in_channels, feasible_range=feasible
            )
        except SatAdvisorError as exc:
            return Prior(buildable=False, reason=str(exc).splitlines()[0])
        except Exception as exc:  # the model's own code on the meta device: not a verdict
            return Prior(
                buildable=True, reason=f"not analysed before training ({type(exc).__name__})"
            )
        span = rf.feasible_range if rf.supported else None
        return Prior(
            buildable=True,
            macs=macs,
            params=params,
            unproductive=tuple(rf.unproductive) if rf.supported else (),
            feasible=None if span is None else (span[0], span[1]),
        )
