"""Experiment trackers behind one interface (TensorBoard; MLflow and W&B through Ray callbacks)."""
