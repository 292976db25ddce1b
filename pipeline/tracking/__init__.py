"""The MLflow store and what is written to it: where the store is (relocated when moved; a
server or database checked first), experiments, the code's git commit, the training run's record."""
