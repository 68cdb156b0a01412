"""One checkpoint schema for every file train.py writes, and the one loader that reads them.

Every file is a dict of tensors and plain data, loadable with torch.load(weights_only=True):
    format      FORMAT, so a loader can reject a file that is not ours
    config      train.py's whole config (plain types); config["model"] rebuilds the model
    model       the model's state_dict
    epoch       epochs completed when the file was written
    history     per-evaluation lists: epoch, train/test loss and accuracy, weight norm
    train_idx, test_idx   the split, as indices into dataset.make_table(p, op)
    resumable files only: optimizer (state_dict), rng (torch and batch-order generator states)
"""
import os
from pathlib import Path

import torch

from model import build_model

FORMAT = "grokking-lab-checkpoint-v1"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, foreign or does not fit its model."""


def save_checkpoint(path, **fields) -> None:
    """Write atomically: to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **fields}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run `python train.py` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign pickles
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo's train.py")
    return ckpt


def load_model(path, device="cpu"):
    """Rebuild the model from the checkpoint's config and load its weights strictly.

    Returns (model in eval mode on `device`, the checkpoint dict)."""
    ckpt = load_checkpoint(path)
    try:
        model = build_model(ckpt["config"]["model"])
        model.load_state_dict(ckpt["model"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not fit its model config: {first_line}") from None
    return model.to(device).eval(), ckpt
