"""The entry points' flags for a run's overrides (config path -> value), as the sweeps write them.

A stand-in for ``experiments.settings.command_line``: the plans and the grid
entry points use only ``command_line``, so that one import changes when the
entry points' own flag table takes its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLAG_OF = {
    "train.shadow.layer": "shadow_layer",
    "train.shadow.weight": "shadow_weight",
    "train.shadow.generator.rho": "sampling_rho",
    "train.shadow.generator.smooth_sigma": "smooth_sigma",
    "train.shadow.generator.alpha_scale": "alpha_scale",
    "train.shadow.start_epoch": "shadow_start_epoch",
    "train.shadow.noise_twin": "noise_twin",
    "train.dropout": "dropout",
    "train.epochs": "epochs",
    "train.steps": "steps",
    "train.batch_size": "batch_size",
    "train.warmup_epochs": "warmup_epochs",
    "train.learning_rate": "learning_rate",
    "train.seed": "seed",
    "train.num_labels": "num_labels",
    "train.consistency.kind": "consistency",
    "train.consistency.layer": "consistency_layer",
    "train.consistency.weight": "consistency_weight",
    "train.consistency.sigma": "consistency_sigma",
    "num_validation": "num_validation",
    "model.arguments.channels": "channels",
    "model.arguments.width": "width",
}


def command_line(overrides: Mapping[str, Any]) -> list[str]:
    """``{"train.shadow.layer": 3, "train.shadow.noise_twin": True}`` -> ``["--shadow_layer=3", "--noise_twin"]``,
    in the overrides' order."""
    return [_flag(path, value) for path, value in overrides.items()]


def _flag(path: str, value: Any) -> str:
    if path not in FLAG_OF:
        raise ValueError(f"{path} has no flag: add its flag name to experiments.sweep_flags.FLAG_OF.")
    name = FLAG_OF[path]
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        return f"--{name}={','.join(str(v) for v in value)}"
    return f"--{name}={value:g}" if isinstance(value, float) else f"--{name}={value}"
