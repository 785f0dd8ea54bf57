"""The few-label grid of each dataset: supervised SHADOW and consistency on unlabelled images, with few labels.

Every arm trains for a fixed number of steps from N labels. Supervised arms:
backprop, SHADOW from h3, the noise-twin placebo; semi-supervised arms:
consistency of the softmax under a SHADOW twin, a matched-energy noise twin,
or (MNIST) fixed Gaussian noise, starting from backprop's learning rate at
the same label count. Arms and probes are overrides of a run's record by
config path, in the order their flags are written.
"""

from experiments.configs.grid_plans import ARCHIVE_GRAD_CLIP
from rev_nets.analysis.few_label_grid import Arm, LabelPlan, Probe
from rev_nets.analysis.sweep import Axis

SHADOW_FROM = "train.shadow.layer"
ALPHA_SCALE = "train.shadow.generator.alpha_scale"
CONSISTENCY = "train.consistency.kind"
CONSISTENCY_FROM = "train.consistency.layer"
CONSISTENCY_WEIGHT = "train.consistency.weight"


def _plan(common, learning_rates, labels, semi_labels, semi_seeds, gaussian: bool, probes) -> LabelPlan:
    lr = Axis("train.learning_rate", learning_rates)
    weight = Axis(CONSISTENCY_WEIGHT, (1.0, 10.0, 100.0), start=10.0)
    supervised = {
        "backprop": Arm({SHADOW_FROM: 0}, (lr,)),
        "shadow": Arm({SHADOW_FROM: 3}, (lr,)),
        "noise_twin": Arm({SHADOW_FROM: 3, "train.shadow.noise_twin": True}, (lr,)),
    }
    semi = {
        f"consistency_{kind}": Arm({SHADOW_FROM: 0, CONSISTENCY: kind}, (weight,), ("backprop",))
        for kind in ("shadow", "noise")
    }
    if gaussian:
        # Standardised units: MNIST pixels have std 0.31 on [0, 1], so 1.0 is the Ladder network's input noise of 0.3.
        sigma = Axis("train.consistency.sigma", (0.25, 0.5, 1.0), start=0.5)
        semi["consistency_gaussian"] = Arm({SHADOW_FROM: 0, CONSISTENCY: "gaussian"}, (weight, sigma), ("backprop",))
    return LabelPlan(
        common=common,
        labels=labels,
        seeds=(0, 1, 2),
        supervised=supervised,
        semi_labels=semi_labels,
        semi=semi,
        semi_seeds=semi_seeds,
        probes=probes,
    )


# Fixed step budgets: 15 and 12 full-data epochs of 128 with the entry points' 5,000 validation images (the plans
# hold out 1,000, so on MNIST this is about 14 epochs of the 59,000 others).
STEPS = {"mnist": 6435, "cifar10": 4212}
PLANS = {
    "mnist": _plan(
        {
            "train.epochs": 15,
            "train.steps": STEPS["mnist"],
            "train.batch_size": 128,
            "train.warmup_epochs": 1.0,
            "train.grad_clip": ARCHIVE_GRAD_CLIP,
            "num_validation": 1000,
        },
        learning_rates=(0.02, 0.05, 0.1),
        labels=(100, 1000, 10000),
        semi_labels=(100, 1000),
        semi_seeds=(0, 1, 2),
        gaussian=True,
        probes={  # At 100 labels SHADOW's twins from h3 grow to ~2.2x the input's norm; 0.77**3 brings them to ~1.
            "probe_shadow_h1": Probe(100, "shadow", {SHADOW_FROM: 1}),
            "probe_shadow_alpha0.77": Probe(100, "shadow", {ALPHA_SCALE: 0.77}),
            "probe_consistency_h1": Probe(100, "consistency_shadow", {CONSISTENCY_FROM: 1}),
            "probe_consistency_h2": Probe(100, "consistency_shadow", {CONSISTENCY_FROM: 2}),
            "probe_consistency_alpha0.77": Probe(100, "consistency_shadow", {ALPHA_SCALE: 0.77}),
            # Tuning chose the grid's smallest weight (10 and 100 diverge or hurt) and the largest sigma: one step
            # past each edge.
            "probe_consistency_w0.3": Probe(100, "consistency_shadow", pinned={CONSISTENCY_WEIGHT: 0.3}),
            "probe_consistency_noise_w0.3": Probe(100, "consistency_noise", pinned={CONSISTENCY_WEIGHT: 0.3}),
            "probe_consistency_gaussian_sigma2": Probe(
                100, "consistency_gaussian", pinned={"train.consistency.sigma": 2.0}
            ),
        },
    ),
    "cifar10": _plan(
        {
            "train.epochs": 12,
            "train.steps": STEPS["cifar10"],
            "train.batch_size": 128,
            "train.warmup_epochs": 1.0,
            "train.grad_clip": ARCHIVE_GRAD_CLIP,
            "num_validation": 1000,
            "model.arguments.channels": (32, 64, 128),
        },
        learning_rates=(0.02, 0.05),
        labels=(1000, 4000),
        semi_labels=(4000,),
        semi_seeds=(0, 1, 2),  # seed 0 runs first (with the tuning); seeds 1 and 2 last, as the budget allows
        gaussian=False,
        probes={  # At 4,000 labels (seed 0) SHADOW's twins end at 0.55x the input's norm (1.2**3 brings them to ~1),
            # the consistency twins at 1.69x (weight 1; 0.84**3 brings them to ~1).
            "probe_shadow_h1": Probe(4000, "shadow", {SHADOW_FROM: 1}),
            "probe_shadow_alpha1.2": Probe(4000, "shadow", {ALPHA_SCALE: 1.2}),
            "probe_consistency_h1": Probe(4000, "consistency_shadow", {CONSISTENCY_FROM: 1}),
            "probe_consistency_alpha0.84": Probe(4000, "consistency_shadow", {ALPHA_SCALE: 0.84}),
            # Weight 1 beats 10 and 100 on validation (47.70, 49.40, 50.90): one step past the grid's edge.
            "probe_consistency_w0.3": Probe(4000, "consistency_shadow", pinned={CONSISTENCY_WEIGHT: 0.3}),
        },
    ),
}
