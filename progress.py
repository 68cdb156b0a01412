"""Progress measures (Nanda et al. 2023): replay train.py's snapshots and watch the circuit form.

    python progress.py                        # or: python interpretability.py --progress
    python progress.py --checkpoint-dir checkpoints --results-dir results

Writes results/progress_measures.{png,json}: the measures per snapshot, the training phases (memorization,
circuit formation, clean-up) and which measure moves first. The measures and the training-phase rule are in
analysis/progress_measures.py.
"""
import argparse
import sys
from pathlib import Path

from analysis.progress_measures import describe, replay
from core.checkpoint import CheckpointError
from core.utils import OutputDirError, check_output_dir, write_json
from plots import draw


def run(checkpoint_dir="checkpoints", results_dir="results", progress=True, plot=True) -> dict:
    """Replay checkpoint_dir/snapshots (analysis.progress_measures.replay), write the JSON and (with plot) the
    plot; plot=False leaves the plot to the caller (plot_job)."""
    result = replay(checkpoint_dir, progress)
    write_json(Path(results_dir) / "progress_measures.json", result)
    if plot:
        draw([plot_job(result, results_dir)])
    return result


def plot_job(result: dict, results_dir="results") -> tuple[str, tuple, dict]:
    """results/progress_measures.png as a plot job (plots.draw)."""
    return ("plot_progress_measures", (result["series"], result["training_phases"], result["grokking_epoch"],
                                       result["key_frequencies"]), {"path": Path(results_dir) / "progress_measures.png"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Progress measures over train.py's snapshots.")
    parser.add_argument("--checkpoint-dir", "--checkpoint", default="checkpoints",
                        help="folder with model_final.pth and snapshots/, or a TransformerLens grokking-demo file")
    parser.add_argument("--results-dir", default="results", help="where progress_measures.{png,json} go")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        check_output_dir(args.results_dir, "--results-dir")
        result = run(args.checkpoint_dir, args.results_dir, progress=not args.quiet)
    except (CheckpointError, OutputDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(result))
    print(f"wrote {Path(args.results_dir) / 'progress_measures.png'} and progress_measures.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
