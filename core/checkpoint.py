"""One checkpoint schema for every file train.py writes, and the one loader that reads them.

Every file is a dict of tensors and plain data, loadable with torch.load(weights_only=True):
    format      FORMAT, so a loader can reject a file that is not ours
    run_id      one random id per training run (kept on resume), so files of different runs never mix
    config      train.py's whole config (plain types); config["model"] rebuilds the model
    model       the model's state_dict
    epoch       epochs completed when the file was written
    history     per-evaluation lists: epoch, train/test loss and accuracy, weight norm; with label noise
                also clean_train_acc, noisy_true_acc and noisy_fit_acc (training.evaluate)
    train_idx, test_idx   the split, as indices into dataset.make_table(p, op)
    resumable files only: optimizer (state_dict), rng (torch, batch-order and embedding-noise generator
                states; files from before --embed-noise lack the last)

A file saved by TransformerLens 3's grokking demo loads too (core/tl_interop.py): as a checkpoint of this
schema whose "snapshots" list holds the demo's checkpoints, so every script that takes a checkpoint takes it.
"""
from pathlib import Path

import torch
import torch.nn as nn

from core.tl_interop import SAFE_GLOBALS, TLFormatError, demo_run, is_demo_file
from core.transformer import Transformer
from core.utils import atomic_write
from model import ToyMLP

FORMAT = "grokking-lab-checkpoint-v1"
MODELS = {"mlp": ToyMLP, "transformer": Transformer}  # config["model"]["arch"] -> class


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from the plain config dict stored in every checkpoint."""
    kwargs = dict(config)
    arch = kwargs.pop("arch", "mlp")
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(MODELS)}")
    return MODELS[arch](**kwargs)


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, foreign or does not fit its model."""


def save_checkpoint(path, **fields) -> None:
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **fields}, tmp))


def load_checkpoint(path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: pass a .pth file in it "
                              "(model_final.pth to analyse, latest.pth to resume)")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run `python train.py` first")
    stat = path.stat()
    key = (path.resolve(), stat.st_mtime_ns, stat.st_size)
    if key in _DEMO_RUNS:
        return _DEMO_RUNS[key]
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):  # a TransformerLens demo's config, as plain data
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign pickles
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None
    if is_demo_file(ckpt):
        try:
            _DEMO_RUNS.clear()  # one at a time: a demo run with its snapshots can be hundreds of MB
            _DEMO_RUNS[key] = demo_run(ckpt, FORMAT)
            return _DEMO_RUNS[key]
        except TLFormatError as err:
            raise CheckpointError(f"{path} is a TransformerLens grokking-demo file, but {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by this repo's train.py")
    return ckpt


# A demo file converted once per process (its history is measured on every snapshot), keyed by path, mtime
# and size; this repo's own files are read afresh each time, so a caller may change what it gets.
_DEMO_RUNS: dict[tuple, dict] = {}


def load_model(path, device="cpu"):
    """Rebuild the model from the checkpoint's config and load its weights strictly; `path` is a checkpoint
    file or an already loaded checkpoint dict (a demo file's snapshot).

    Returns (model in eval mode on `device`, the checkpoint dict)."""
    ckpt = path if isinstance(path, dict) else load_checkpoint(path)
    path = f"snapshot at epoch {ckpt.get('epoch')}" if isinstance(path, dict) else path
    try:
        model = build_model(ckpt["config"]["model"])
        model.load_state_dict(ckpt["model"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not fit its model config: {first_line}") from None
    return model.to(device).eval(), ckpt


def run_snapshots(path) -> list:
    """The snapshots of the run at `path`, sorted by epoch: a folder's snapshots/epoch_*.pth files, or the
    checkpoints inside a TransformerLens demo file (dicts that load_model takes); [] when there are none."""
    path = Path(path)
    if path.is_file():
        return load_checkpoint(path).get("snapshots", [])
    return sorted((path / "snapshots").glob("epoch_*.pth"))


def same_run(reference: dict, other: dict, path) -> None:
    """Raise CheckpointError unless `other` comes from the same run as `reference`: the same run id
    (where both have one), p, op and split. Mixing runs would apply one model's findings to another."""
    ref_cfg, cfg = reference["config"], other["config"]
    differences = []
    if reference.get("run_id") != other.get("run_id"):
        differences.append(f"run id {reference.get('run_id')} vs {other.get('run_id')}")
    differences += [f"{key} {ref_cfg.get(key)} vs {cfg.get(key)}" for key in ("p", "op")
                    if ref_cfg.get(key) != cfg.get(key)]
    if not differences and not torch.equal(reference["train_idx"], other["train_idx"]):
        differences.append("a different train/test split")
    if differences:
        raise CheckpointError(f"{path} belongs to another run ({', '.join(differences)}): "
                              "keep each run in its own --checkpoint-dir, or finish it with --resume")
