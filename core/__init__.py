"""The core below every other layer (with dataset.py, model.py and config.py at the top): the transformer,
checkpoints, the training engine of one run, its optional Weights & Biases logging, and small utilities.
Imports nothing above it."""
