"""Training: the fit loop and its callbacks, checkpoints, fine_tune, lr_find."""
