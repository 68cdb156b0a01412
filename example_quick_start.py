"""The whole story in one command (16-19 s on a 2-core CPU):

    python example_quick_start.py
    python example_quick_start.py --arch transformer   # Nanda et al.'s 1-layer transformer (about 5 minutes)

1. trains ToyMLP (or the transformer) on (a + b) mod 113 with train.py's defaults, stopping where the clean-up
   ends (the first snapshot after grokking whose weight norm no longer falls) or at 2x the grokking epoch
   (train.py's own default runs to 3x, for a longer clean-up);
2. opens the trained network (interpretability.py): key frequencies, neurons, ablations;
3. replays the training snapshots (progress.py): memorization, circuit formation, clean-up;
4. writes the interactive page results/report.html (report.py).
Writes checkpoints/ and results/ exactly as the three scripts do.
"""
import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import interpretability
import plots
import progress
import report
from analysis.progress_measures import describe
from analysis.summary import analyze_checkpoint, findings
from config import ARCH_DEFAULTS, ARCH_FLAGS, ARCH_NAMES, Config, validate
from core.training import train, training_curves_job


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train, analyse and replay a grokking run end to end.")
    parser.add_argument("--p", type=int, default=113, help="modulus (a prime between 50 and 150 groks reliably)")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    parser.add_argument("--arch", choices=ARCH_FLAGS, default="mlp", help="mlp (ToyMLP) or transformer")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="folder for checkpoints")
    parser.add_argument("--results-dir", default="results", help="folder for plots and JSON files")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cfg = replace(Config(**ARCH_DEFAULTS[args.arch]), arch=args.arch, p=args.p, seed=args.seed, stop_after_grok=2.0,
                  stop_at_cleanup_end=True,
                  checkpoint_dir=args.checkpoint_dir, results_dir=args.results_dir)
    try:
        validate(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    show = not args.quiet
    print(f"1/3 training {ARCH_NAMES[cfg.arch]} on (a + b) mod {cfg.p}: {cfg.train_frac:.0%} of the pairs, full batch, "
          f"AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}")
    t = train(cfg, progress=show, plot=False)
    if t["grokking_epoch"] is None:
        print(f"the network did not grok within {cfg.epochs} epochs (train acc {t['final_train_acc']:.1%}, "
              f"test acc {t['final_test_acc']:.1%}); try another --seed or a prime p between 50 and 150")
        return 1
    print("2/3 opening the trained network")
    checkpoint = Path(cfg.checkpoint_dir) / "model_final.pth"
    results = Path(cfg.results_dir)
    analysis = analyze_checkpoint(checkpoint, progress=show)
    interpretability.write_results(analysis, checkpoint, results)
    # The plots are drawn in a child process while this one replays the snapshots and builds the report.
    curves = training_curves_job(cfg, analysis["checkpoint"]["history"], t)  # drawn here, after the replay
    analysis_jobs = interpretability.plot_jobs(analysis["model"], analysis["grid"], analysis["result"], results)
    drawing = plots.draw_in_background(analysis_jobs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core for the drawing, one for this: two threads here would fight it for a core
    print("3/3 replaying the snapshots")
    replay = progress.run(cfg.checkpoint_dir, cfg.results_dir, progress=show, plot=False)
    progress_plot = progress.plot_job(replay, cfg.results_dir)
    plots.draw([curves, progress_plot])
    page = report.build_report(cfg.checkpoint_dir, cfg.results_dir)
    plots.finish_drawing(drawing)
    torch.set_num_threads(threads)
    print(f"\nWhat happened (in {time.perf_counter() - start:.0f} s):")
    print(f"- The network memorized its {cfg.train_frac:.0%} training pairs by epoch {t['memorization_epoch']} "
          f"(train accuracy >= 99%) while test accuracy stayed near zero.")
    print(f"- It generalized (test accuracy >= 99%) only at epoch {t['grokking_epoch']}, "
          f"{t['grokking_delay']:.0f}x later: grokking. Final test accuracy {t['final_test_acc']:.1%}.")
    for line in describe(replay).splitlines() + findings(analysis["summary"])[1:]:
        print(f"- {line}")
    print("\nPlots: " + ", ".join(str(kwargs["path"]) for _, _, kwargs in [curves, *analysis_jobs, progress_plot]))
    print(f"Interactive report: {page} (open it in a browser; it works offline)")
    print("Next: python interpretability.py --help, python train.py --help, and the README.")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every file is written and closed: skip tearing down torch and matplotlib (about 1 s)
