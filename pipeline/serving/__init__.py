"""A registered model at work: its input views, its pt2 program, and the MLflow pyfunc that serves it."""
