"""The training engine: the loop (train.py) and its small parts (noise, optim, events, checkpoints, sampling)."""
