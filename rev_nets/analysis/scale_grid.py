"""The verdict at practical scale: its plan's shape and the sweep it makes (airbench-like net, hours per run).

A lean plan, cheapest runs first. On the validation split (seed 0):
backprop's learning rate is chosen among a few; SHADOW takes that rate,
chooses its source layer, then tries its own rates (coordinate descent, one
axis at a time); the twin-statistics variants run once at SHADOW's choice.
The final runs then train on every training image (``final`` overrides,
e.g. no validation split) at the chosen settings: backprop and SHADOW for
every seed, the matched-energy noise twin (placebo) at SHADOW's settings for
fewer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from rev_nets.analysis import sweep

LEARNING_RATE = "train.learning_rate"
SHADOW_LAYER = "train.shadow.layer"


@dataclasses.dataclass(frozen=True)
class ScalePlan:
    """Shared overrides (the tuning runs' validation split among them), what the final runs change, the
    candidates of backprop's rate, of SHADOW's source layer and of SHADOW's rate, the seeds of the final
    runs, and the one-seed variants of SHADOW judged on validation (name -> overrides)."""

    common: sweep.Overrides
    final: sweep.Overrides
    learning_rates: tuple[float, ...]
    shadow_layers: tuple[int, ...]
    shadow_learning_rates: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    placebo_seeds: tuple[int, ...] = (0,)
    variants: Mapping[str, sweep.Overrides] = dataclasses.field(default_factory=dict)

    def to_sweep(self) -> sweep.Sweep:
        """Tune backprop, run its finals, tune SHADOW, run its finals, the placebo, then the variants."""
        backprop, shadow = {SHADOW_LAYER: 0}, {}
        shadow_axes = (
            sweep.Axis(SHADOW_LAYER, self.shadow_layers),
            sweep.Axis(LEARNING_RATE, self.shadow_learning_rates),
        )
        cells = {
            "backprop": sweep.Cell(backprop, (sweep.Axis(LEARNING_RATE, self.learning_rates),)),
            "backprop_final": sweep.Cell({**backprop, **self.final}, inherits=("backprop",), seeds=self.seeds),
            "shadow": sweep.Cell(shadow, shadow_axes, inherits=("backprop",)),
            "shadow_final": sweep.Cell(dict(self.final), inherits=("shadow",), seeds=self.seeds),
            "noise_twin_final": sweep.Cell(
                {"train.shadow.noise_twin": True, **self.final}, inherits=("shadow",), seeds=self.placebo_seeds
            ),
        }
        cells |= {name: sweep.Cell(dict(o), inherits=("shadow",)) for name, o in self.variants.items()}
        order = [("tune", "backprop"), ("run", "backprop_final"), ("tune", "shadow"), ("run", "shadow_final")]
        order += [("run", "noise_twin_final"), *(("run", name) for name in self.variants)]
        return sweep.Sweep(self.common, cells, tuple(order))
