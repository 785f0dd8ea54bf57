"""What every training experiment shares: the paper's SHADOW source layer, the schedule, gradient clipping, the
validation split."""

from rev_nets import models, shadow, train


def get_config(dataset: str, model: models.ModelConfig, **train_fields) -> train.RunConfig:
    """SHADOW from the paper's layer 3, batch 128, SGD lr 0.05 with a 1-epoch warm-up then cosine, gradients
    clipped to global norm 5, 5,000 validation images; ``train_fields`` set the experiment's own (its epochs) or
    replace these.

    The clip keeps SHADOW's first steps from blowing up (BUILD_NOTES, "SHADOW's early blow-up"): at initialisation
    the twins' gradient is 5-9x the real inputs', and it acts on the first epoch only (after it, gradient norms
    stay near 1-3 on MNIST and CIFAR-10, and no step is clipped).
    """
    shared = {
        "batch_size": 128,
        "learning_rate": 0.05,
        "warmup_epochs": 1.0,
        "grad_clip": 5.0,
        "shadow": shadow.ShadowConfig(layer=shadow.PAPER_LAYER),
    }
    return train.RunConfig(
        dataset=dataset, model=model, train=train.TrainConfig(**(shared | train_fields)), num_validation=5000
    )
