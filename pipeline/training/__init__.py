"""The training library: checkpoint, network building, optimisation, loaders, the epoch loop,
distributed helpers and the training run's MLflow record."""
