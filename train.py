"""Train ToyMLP on (a op b) mod p and watch it grok: memorize first, generalize much later.

    python train.py                       # defaults: p=113, add, 30% train, full batch, groks in ~10 s
    python train.py --p 97 --op sub       # any flag: python train.py --help
    python train.py --arch transformer    # the 1-layer transformer of Nanda et al. 2023
    python train.py --preset classic      # the common write-up recipe (minibatch 64, 80% train)
    python train.py --label-noise 0.1     # noise robustness: 10% wrong training labels (or --embed-noise S)
    python train.py --wandb grokking      # also log it to a Weights & Biases project (docs/training.md)
    python train.py --resume checkpoints/latest.pth

Writes checkpoints/{model_final,latest}.pth, checkpoints/snapshots/epoch_*.pth,
results/training_curves.png and results/training_summary.json (and with --wandb a W&B run). The settings are
config.py's Config; the loop itself is core/training.py's train(), which a notebook calls directly.
"""
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from config import Config, check_memory, config_from_args, validate
from core.checkpoint import CheckpointError
from core.training import NonFiniteLoss, StoppedAtOnce, run_stop, snapshot_epochs, train
from core.utils import check_output_dir, first_epoch_at, resolve_device
from core.wandb_log import import_wandb


def check_unfinished(resume: dict, cfg: Config, path) -> None:
    """Raise ValueError if resuming would train nothing: the run already reached --epochs or its
    stop rule (so resuming must not touch model_final.pth); say how to extend it."""
    epoch = resume["epoch"]
    extend = f"python train.py --resume {path} --stop-after-grok 0 --epochs {2 * epoch}"
    if epoch >= cfg.epochs:
        raise ValueError(f"the checkpoint is already at epoch {epoch}: to go on, pass a larger --epochs ({extend})")
    stopped = run_stop(cfg, resume["history"], snapshot_epochs(cfg.epochs, cfg.snapshot_every), epoch)
    if stopped:
        grokked = first_epoch_at(resume["history"], "test_acc")
        raise ValueError(f"the run is finished: it grokked at epoch {grokked} and stopped at epoch {epoch} "
                         f"({stopped}). To extend it: {extend}")


def main(argv=None) -> int:
    try:
        cfg, resume, args = config_from_args(argv)
        validate(cfg)
        check_memory(cfg)
        if resume is not None:
            check_unfinished(resume, cfg, args.resume)
        check_output_dir(cfg.checkpoint_dir, "--checkpoint-dir")
        check_output_dir(cfg.results_dir, "--results-dir")
        if cfg.wandb:
            import_wandb()  # wandb missing: one error line before anything is trained
    except (ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    latest = Path(cfg.checkpoint_dir) / "latest.pth"
    try:
        return train_and_report(cfg, resume, args.quiet)
    except StoppedAtOnce as err:
        print("\nerror: interrupted twice, stopped at once; " + (
            f"resume from epoch {err.latest_epoch} with: python train.py --resume {latest}"
            if err.latest_epoch is not None else "no resumable checkpoint was written in this session"),
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (setup, final plots)
        print("\nerror: interrupted outside the training loop, stopped at once", file=sys.stderr)
        return 130


def train_and_report(cfg: Config, resume: dict | None, quiet: bool) -> int:
    print("config: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()))
    print(f"device: {resolve_device(cfg.device)}, torch threads: {torch.get_num_threads()}")
    latest = Path(cfg.checkpoint_dir) / "latest.pth"
    try:
        summary = train(cfg, resume, progress=not quiet)
    except NonFiniteLoss as err:
        print(f"error: {err}; training stopped. The last good resumable checkpoint is "
              f"{latest} (if one was written); try a smaller --lr.", file=sys.stderr)
        return 1
    if summary["stopped"] == "interrupted":
        print(f"\ninterrupted at epoch {summary['epoch']}; saved {latest}. Resume with:\n"
              f"    python train.py --resume {latest}")
        return 130
    print(f"memorized (train acc >= 99%) at epoch {summary['memorization_epoch']}, "
          f"grokked (test acc >= 99%) at epoch {summary['grokking_epoch']}"
          + (f", {summary['grokking_delay']:.1f}x later" if summary["grokking_delay"] else ""))
    print(f"final: train acc {summary['final_train_acc']:.1%}, test acc {summary['final_test_acc']:.1%}, "
          f"test loss {summary['final_test_loss']:.2e}; {summary['epochs_run']} epochs in "
          f"{summary['wall_seconds']:.1f} s ({summary['ms_per_step']:.2f} ms/step)")
    if summary["corrupted_pairs"]:
        print(f"label noise: {summary['corrupted_pairs']} corrupted training pairs, predicted as their true label "
              f"{summary['corrupted_true_acc']:.1%}, as the corrupted label {summary['corrupted_fit_acc']:.1%}; "
              f"clean training pairs {summary['clean_train_acc']:.1%}")
    print(f"wrote {cfg.checkpoint_dir}/model_final.pth, {latest}, {cfg.checkpoint_dir}/snapshots/, "
          f"{cfg.results_dir}/training_curves.png, {cfg.results_dir}/training_summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
