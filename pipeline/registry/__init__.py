"""Model registry: the MLflow store, publishing a trained model, promotion by alias, prediction."""
