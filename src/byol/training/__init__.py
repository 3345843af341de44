"""Pre-training: the loop and its step, progress, checkpoints, the monitor, and several processes under torchrun."""
