"""Models after training: publishing a trained model with its lineage, promotion by alias through
the gate, prediction, explanation, the tracking server and serving (the store itself is
``pipeline.tracking``'s)."""
