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
from plots import plot_progress_measures


def run(checkpoint_dir="checkpoints", results_dir="results", progress=True) -> dict:
    """Replay checkpoint_dir/snapshots (analysis.progress_measures.replay), write the JSON and the plot."""
    result = replay(checkpoint_dir, progress)
    out = Path(results_dir)
    write_json(out / "progress_measures.json", result)
    plot_progress_measures(result["series"], result["training_phases"], result["grokking_epoch"], result["key_frequencies"],
                           out / "progress_measures.png")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Progress measures over train.py's snapshots.")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="folder with model_final.pth and snapshots/")
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
