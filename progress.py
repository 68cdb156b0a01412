"""Progress measures (Nanda et al. 2023): replay train.py's snapshots and watch the circuit form.

    python progress.py                        # or: python interpretability.py --progress
    python progress.py --checkpoint-dir checkpoints --results-dir results

Per snapshot: train/test loss and accuracy, restricted and excluded loss (with the final model's
key frequencies), the Gini coefficient of the embedding's Fourier power, and the sum of squared
weights. Writes results/progress_measures.{png,json}.

Phase rule (also in the README):
  memorization        epoch 0 until train accuracy first reaches 99%;
  circuit formation   from there until clean-up starts;
  clean-up            from the first evaluation after memorization whose test loss is below half of
                      its highest value after memorization, to the end of the run.
The rule is applied to the training history in model_final.pth (evaluated every --eval-every epochs).
"""
import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import fourier
from checkpoint import CheckpointError, load_model
from interpretability import Grid, key_frequency_losses, model_key_frequencies
from model import sum_squared_weights
from plots import plot_progress_measures
from utils import provenance, write_json


def snapshot_measures(model, grid: Grid, keys: list[int]) -> dict:
    """The progress measures of one model."""
    with torch.no_grad():
        logits = model(grid.a, grid.b)
        train_loss, train_acc = grid.loss_acc(logits, "train")
        test_loss, test_acc = grid.loss_acc(logits, "test")
        key_losses = key_frequency_losses(logits, grid, keys)
        return {
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "restricted_loss": key_losses["restricted_loss"], "excluded_loss": key_losses["excluded_loss"],
            "fourier_gini": fourier.gini(fourier.power_per_frequency(model.W_E)),
            "weight_norm": sum_squared_weights(model),
        }


def phase_boundaries(epochs, train_acc, test_loss) -> dict:
    """Apply the phase rule of this module's docstring to per-evaluation series."""
    memorized = next((e for e, a in zip(epochs, train_acc) if a >= 0.99), None)
    if memorized is None:
        return {"memorization_end": None, "cleanup_start": None}
    after = [(e, loss) for e, loss in zip(epochs, test_loss) if e >= memorized]
    peak = max(loss for _, loss in after)
    cleanup = next((e for e, loss in after if loss < peak / 2), None)
    return {"memorization_end": memorized, "cleanup_start": cleanup}


def progress_measures(snapshot_paths, keys: list[int], progress: bool = True) -> dict:
    """Series of measures over the snapshots (sorted by epoch); keys: the key frequencies to restrict to."""
    series: dict[str, list] = {"epoch": []}
    grid = None
    for path in tqdm(snapshot_paths, desc="progress measures", unit="snapshot", disable=not progress):
        model, ckpt = load_model(path)
        if grid is None:
            cfg = ckpt["config"]
            grid = Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"])
        series["epoch"].append(ckpt["epoch"])
        for key, value in snapshot_measures(model, grid, keys).items():
            series.setdefault(key, []).append(value)
    order = sorted(range(len(series["epoch"])), key=series["epoch"].__getitem__)
    return {k: [v[i] for i in order] for k, v in series.items()}


def run(checkpoint_dir="checkpoints", results_dir="results", progress=True) -> dict:
    """Replay checkpoint_dir/snapshots with the key frequencies of checkpoint_dir/model_final.pth."""
    final_path = Path(checkpoint_dir) / "model_final.pth"
    model, ckpt = load_model(final_path)
    cfg = ckpt["config"]
    keys = model_key_frequencies(model)
    paths = sorted((Path(checkpoint_dir) / "snapshots").glob("epoch_*.pth"))
    if not paths:
        raise CheckpointError(f"no snapshots in {Path(checkpoint_dir) / 'snapshots'}: run `python train.py` first")
    history = ckpt["history"]  # evaluated every few epochs: finer than the snapshots for the phase rule
    result = {"series": progress_measures(paths, keys, progress),
              "phases": phase_boundaries(history["epoch"], history["train_acc"], history["test_loss"])}
    grokked = next((e for e, a in zip(history["epoch"], history["test_acc"]) if a >= 0.99), None)
    result |= {"key_frequencies": keys, "grokking_epoch": grokked, "checkpoint_dir": str(checkpoint_dir),
               "config": cfg, **provenance()}
    out = Path(results_dir)
    write_json(out / "progress_measures.json", result)
    plot_progress_measures(result["series"], result["phases"], grokked, keys, out / "progress_measures.png")
    return result


def describe(result: dict) -> str:
    ph = result["phases"]
    end = result["series"]["epoch"][-1]
    if ph["memorization_end"] is None:
        return "The model never memorized its training set (train accuracy < 99%): no phases to mark."
    cleanup = ph["cleanup_start"]
    return (f"Phases: memorization 0-{ph['memorization_end']}, circuit formation {ph['memorization_end']}-"
            f"{cleanup if cleanup is not None else end}"
            + (f", clean-up {cleanup}-{end}" if cleanup is not None else " (no clean-up seen)")
            + f"; grokked (test acc >= 99%) at epoch {result['grokking_epoch']}.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Progress measures over train.py's snapshots.")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="folder with model_final.pth and snapshots/")
    parser.add_argument("--results-dir", default="results", help="where progress_measures.{png,json} go")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = run(args.checkpoint_dir, args.results_dir, progress=not args.quiet)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(result))
    print(f"wrote {Path(args.results_dir) / 'progress_measures.png'} and progress_measures.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
