"""Training: the step and evaluation (engine), optimiser, checkpoints and the run loop."""
