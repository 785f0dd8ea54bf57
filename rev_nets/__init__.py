"""rev_nets: ReLU nets run backwards with transposed weights (Arora, Liang & Ma, 2015), and SHADOW training.

The public face, in one place (``import rev_nets as rn``):

- the generator: ``reverse`` (any ReLU function of a batch run backwards),
  ``twins`` (a model's synthetic inputs from a hidden layer),
  ``twins_by_layer``, ``alphas``, and their options, ``GeneratorConfig``;
- models: ``ModelConfig`` (a factory and its arguments) and ``build_model``,
  ``nnx_model`` and ``linen_model`` for Flax modules, ``nets`` (the built-in
  MLP and CNN);
- training: ``ShadowConfig``, ``ConsistencyConfig``, ``TrainConfig``,
  ``RunConfig`` and ``override`` (a record with some fields changed, by
  dotted path), ``fit_in_memory``, ``fit``, ``train_and_evaluate``;
- runs: ``load_run`` (a run directory's config, model, metrics and params);
- ``data`` (``data.load``, device splits), ``spectra`` (random-like
  statistics), ``plots``;
- the errors a user can fix: ``UserError`` and its kinds.
"""

from rev_nets import data, nets, plots, spectra
from rev_nets.consistency import ConsistencyConfig
from rev_nets.errors import InputError, SettingError, UserError
from rev_nets.generator import GeneratorConfig, alphas, reverse, twins, twins_by_layer
from rev_nets.models import Model, ModelConfig, build_model, linen_model, nnx_model
from rev_nets.shadow import ShadowConfig
from rev_nets.train import (
    DivergedError,
    Run,
    RunConfig,
    TrainConfig,
    TrainingError,
    fit,
    fit_in_memory,
    load_run,
    override,
    train_and_evaluate,
)

__version__ = "0.1.0"
__all__ = [
    "ConsistencyConfig",
    "DivergedError",
    "GeneratorConfig",
    "InputError",
    "Model",
    "ModelConfig",
    "Run",
    "RunConfig",
    "SettingError",
    "ShadowConfig",
    "TrainConfig",
    "TrainingError",
    "UserError",
    "alphas",
    "build_model",
    "data",
    "fit",
    "fit_in_memory",
    "linen_model",
    "load_run",
    "nets",
    "nnx_model",
    "override",
    "plots",
    "reverse",
    "spectra",
    "train_and_evaluate",
    "twins",
    "twins_by_layer",
]
