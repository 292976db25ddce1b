"""The served model's entry (MLflow's models-from-code): the project's pyfunc, nothing else."""

from mlflow.models import set_model

from pipeline.serving.pyfunc import VideoClassifier

set_model(VideoClassifier())
