"""What every training experiment shares: the paper's SHADOW source layer, the schedule, the validation split."""

from rev_nets import models, shadow, train


def get_config(dataset: str, model: models.ModelConfig, **train_fields) -> train.RunConfig:
    """SHADOW from the paper's layer 3, batch 128, SGD lr 0.05 with a 1-epoch warm-up then cosine, 5,000
    validation images; ``train_fields`` set the experiment's own (e.g. its epochs)."""
    return train.RunConfig(
        dataset=dataset,
        model=model,
        train=train.TrainConfig(
            batch_size=128,
            learning_rate=0.05,
            warmup_epochs=1.0,
            shadow=shadow.ShadowConfig(layer=shadow.PAPER_LAYER),
            **train_fields,
        ),
        num_validation=5000,
    )
