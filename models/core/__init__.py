"""The learned model itself: its hyperparameters, meta-parameters, inner loop, targets and checkpoints."""
