"""The training library: its typed settings, optimisation, loaders, the epoch loop, distributed
helpers, and ``train()`` that fits epoch by epoch (the checkpoint is ``pipeline.runtime``'s, the
MLflow run record ``pipeline.tracking``'s)."""
