"""The model registry (MLflow's): registration by training, aliases, the ``fraud-models`` CLI."""
