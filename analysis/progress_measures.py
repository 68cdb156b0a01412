"""Progress measures (Nanda et al. 2023): replay a run's snapshots and watch the circuit form.

Per snapshot: train/test loss and accuracy, restricted and excluded loss (with the final model's key
frequencies), the Gini coefficient of the embedding's Fourier power, and the sum of squared weights.

Training phases of one run, from the progress measures as Nanda et al. describe them:
  memorization        epoch 0 until train accuracy first reaches 99% (M, from the training history);
  circuit formation   from M until clean-up starts;
  clean-up            from the first snapshot after M at which the restricted loss has fallen to half
                      its highest value since M while the weight norm falls, until the first snapshot at
                      which the weight norm stops falling (or the end of the run, if it never does).
A run whose test accuracy never reaches 99% did not generalize: no phase after memorization is named.
(A sweep's *run regimes*, comprehension / grokking / memorization / confusion, are another rule:
sweeps/regimes.py.)
Onsets: for each measure, the first snapshot after M at which it has moved by a factor ONSET_FACTOR
from its extreme since M (excluded loss and Gini up, restricted and test loss down): which moves first.

    replay("checkpoints") -> {"series", "training_phases", "onsets", "key_frequencies", ...}
"""
from pathlib import Path

import torch
from tqdm import tqdm

from analysis import fourier
from analysis.circuit import Grid, key_frequency_losses, model_key_frequencies, token_embedding
from core.checkpoint import CheckpointError, load_model, run_snapshots, same_run
from core.utils import first_epoch_at, provenance
from model import sum_squared_weights

ONSET_FACTOR = 2.0
ONSETS = {"excluded_loss": "up", "fourier_gini": "up", "restricted_loss": "down", "test_loss": "down"}


def snapshot_measures(model, grid: Grid, keys: list[int]) -> dict:
    """The progress measures of one model: its logits over the grid computed once where they fit in one chunk,
    else chunk by chunk for each measure."""
    with torch.no_grad():
        source = model(grid.a, grid.b) if len(grid.chunks()) == 1 else model  # its logits table, or the model
        train_loss, train_acc = grid.score(source, "train")
        test_loss, test_acc = grid.score(source, "test")
        key_losses = (key_frequency_losses(source, grid, keys) if grid.basis is not None  # no basis: not measured
                      else {"restricted_loss": None, "excluded_loss": None})
        power = (fourier.power_per_frequency(grid.basis.table(token_embedding(model)))
                 if grid.basis is not None else None)
        return {
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "restricted_loss": key_losses["restricted_loss"], "excluded_loss": key_losses["excluded_loss"],
            "fourier_gini": fourier.gini(power) if power is not None else None,
            "weight_norm": sum_squared_weights(model),
            "embedding_power": power.tolist() if power is not None else None,  # per frequency: report.py's slider
        }


def training_phases(history: dict, series: dict) -> dict:
    """Apply the training-phase rule of this module's docstring: history is train.py's (every --eval-every
    epochs), series the progress measures per snapshot (sorted by epoch)."""
    memorized, grokked = first_epoch_at(history, "train_acc"), first_epoch_at(history, "test_acc")
    phases = {"memorization_end": memorized, "generalized": grokked is not None,
              "cleanup_start": None, "cleanup_end": None}
    if memorized is None or grokked is None or None in series["restricted_loss"]:
        return phases
    epochs, restricted, norm = series["epoch"], series["restricted_loss"], series["weight_norm"]
    peak = None  # the highest restricted loss since memorization, up to the current snapshot
    for i, epoch in enumerate(epochs):
        if epoch < memorized:
            continue
        peak = restricted[i] if peak is None else max(peak, restricted[i])
        falling = i > 0 and norm[i] < norm[i - 1]
        if phases["cleanup_start"] is None:
            if falling and restricted[i] <= peak / ONSET_FACTOR:  # the restricted loss's onset criterion
                phases["cleanup_start"] = epoch
        elif not falling:
            phases["cleanup_end"] = epoch
            break
    return phases


def onsets(series: dict, memorized: int | None) -> dict:
    """For each measure in ONSETS, the first snapshot after memorization at which it has moved by
    ONSET_FACTOR from its extreme since memorization (None if it never does)."""
    out = {name: None for name in ONSETS}
    if memorized is None:
        return out
    for name, direction in ONSETS.items():
        extreme = None
        for epoch, value in zip(series["epoch"], series[name]):
            if epoch < memorized or value is None:
                continue
            if extreme is not None and (value >= ONSET_FACTOR * extreme if direction == "up"
                                        else value <= extreme / ONSET_FACTOR):
                out[name] = epoch
                break
            extreme = value if extreme is None else (min if direction == "up" else max)(extreme, value)
    return out


def progress_measures(snapshot_paths, keys: list[int], reference: dict | None = None, progress: bool = True) -> dict:
    """Series of measures over the snapshots (sorted by epoch); keys: the key frequencies to restrict to.
    With a reference checkpoint, a snapshot of another run (run id, p, op, split) is refused."""
    series: dict[str, list] = {"epoch": []}
    grid = None
    for path in tqdm(snapshot_paths, desc="progress measures", unit="snapshot", disable=not progress):
        model, ckpt = load_model(path)
        if reference is not None:
            same_run(reference, ckpt, path)
        if grid is None:
            cfg = ckpt["config"]
            grid = Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"])
        series["epoch"].append(ckpt["epoch"])
        for key, value in snapshot_measures(model, grid, keys).items():
            series.setdefault(key, []).append(value)
    order = sorted(range(len(series["epoch"])), key=series["epoch"].__getitem__)
    return {k: [v[i] for i in order] for k, v in series.items()}


def replay(checkpoint_dir="checkpoints", progress=True) -> dict:
    """Replay a run's snapshots with the key frequencies of its final model: checkpoint_dir is a folder holding
    model_final.pth and snapshots/, or a TransformerLens grokking-demo file (its snapshots are inside). The
    series of measures, the training phases and the onsets (progress.py writes them)."""
    path = Path(checkpoint_dir)
    final_path = path if path.is_file() else path / "model_final.pth"
    model, ckpt = load_model(final_path)
    if path.is_file() and "snapshots" not in ckpt:
        raise CheckpointError(f"{checkpoint_dir} is a file: pass the folder that holds model_final.pth and snapshots/")
    cfg = ckpt["config"]
    keys = model_key_frequencies(model, Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"]))
    paths = run_snapshots(path)
    if not paths:
        raise CheckpointError(f"no snapshots in {path / 'snapshots'}: run `python train.py` first")
    history = ckpt["history"]  # evaluated every few epochs: finer than the snapshots for the accuracies
    series = progress_measures(paths, keys, ckpt, progress)
    grokked = first_epoch_at(history, "test_acc")
    result = {"run_id": ckpt.get("run_id"), "series": series, "training_phases": training_phases(history, series),
              "onsets": onsets(series, first_epoch_at(history, "train_acc")), "key_frequencies": keys,
              "grokking_epoch": grokked, "checkpoint_dir": str(checkpoint_dir), "config": cfg, **provenance()}
    return result


def describe(result: dict) -> str:
    ph, end = result["training_phases"], result["series"]["epoch"][-1]
    memorized, start, stop = ph["memorization_end"], ph["cleanup_start"], ph["cleanup_end"]
    if memorized is None:
        return "The model never memorized its training set (train accuracy < 99%): no phases to mark."
    if not ph["generalized"]:
        return (f"Memorization 0-{memorized}. The run did not generalize (test accuracy never reached 99%), "
                "so no circuit-formation or clean-up phase is named.")
    lines = [f"Training phases: memorization 0-{memorized}, circuit formation {memorized}-{start if start is not None else end}"
             + (f", clean-up {start}-{stop if stop is not None else end}" if start is not None else
                " (no key frequencies, so the clean-up rule, which reads the restricted loss, does not apply)"
                if not result["key_frequencies"] else
                " (no clean-up: the restricted loss never halved while the weight norm fell)")
             + (" (the weight norm was still falling at the end)" if start is not None and stop is None else "")
             + f"; grokked (test acc >= 99%) at epoch {result['grokking_epoch']}."]
    moved = sorted((e, name) for name, e in result["onsets"].items() if e is not None)
    if moved:
        lines.append(f"First moves after memorization (a factor {ONSET_FACTOR:g} from the extreme since then): "
                     + ", ".join(f"{name.replace('_', ' ')} at {e}" for e, name in moved) + ".")
    return "\n".join(lines)
