"""Training: losses, the training loop, walk-forward, retraining CPCV, and where tasks run."""
