"""Open a trained network (ToyMLP or the 1-layer transformer) and measure how it computes (a op b) mod p.

    python interpretability.py                                   # checkpoints/model_final.pth -> results/
    python interpretability.py --checkpoint checkpoints/snapshots/epoch_00100.pth --results-dir results/e100
    python interpretability.py --progress                        # the progress measures instead (progress.py)

Writes results/analysis_summary.json, neuron_ranking.json and the plots listed at the end of the run. The
measures live in analysis/ (summary.analyze runs them all); a notebook calls them on a model in memory.
"""
import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import plots
import progress
from analysis import fourier
from analysis.circuit import grid_activations
from analysis.neurons import reindex_by_frequency
from analysis.summary import analyze_checkpoint, findings, neuron_table
from core.checkpoint import CheckpointError, load_checkpoint, run_snapshots
from core.utils import OutputDirError, check_output_dir, write_json


def axis_names(basis) -> tuple[str, str]:
    """How the plots name the two axes of a grid in this basis."""
    if basis is not None and basis.generator is not None:
        return f"i = log_{basis.generator} a", f"j = log_{basis.generator} b"
    return "a", "b"


def plot_jobs(model, grid, result: dict, out: Path, top: int = 16) -> list[tuple[str, tuple, dict]]:
    """Every plot of the analysis as (name of a plots.py function, its arguments, its keyword arguments with
    the `path` it writes). The model's part (activations over all pairs) is computed here, so drawing
    (plots.draw) needs only numpy arrays and plain data."""
    r, f, basis = result["ranking"], result["fourier"], grid.basis
    with torch.no_grad():
        hidden = grid_activations(model, grid)["hidden_post"]
    hidden = hidden if basis is None else basis.grid(hidden)  # heatmaps over the basis's positions
    axes = axis_names(basis)
    neurons = r["causal_order"][:top].tolist()
    labels = [f"neuron {n} (rank {i + 1})" + ("" if basis is None else f"\nfreq {f['neuron_frequency'][n]}, "
              f"{f['neuron_frequency_fraction'][n]:.0%} of var") for i, n in enumerate(neurons)]
    base = result["losses"]["all"]
    jobs = [("plot_neuron_heatmaps", (hidden[..., neurons].permute(2, 0, 1).numpy(), labels),
             {"path": out / "activation_heatmap.png", "axes_names": axes}),
            ("plot_neuron_ranking", (r["activation_variance"].numpy(), r["mean_ablation_loss_increase"].numpy(),
                                     r["zero_ablation_loss_increase"].numpy(), r["agreement"]),
             {"path": out / "neuron_ranking.png"}),
            ("plot_ablation_curves", (result["ablation_curves"], result["circuit_keep_acc"], result["circuit_size"],
                                      base["acc"]), {"path": out / "ablation_curves.png"})]
    if basis is not None:
        hidden_power = f["hidden_power_a"] + f["hidden_power_b"]
        many = r["causal_order"][:64].tolist()
        reindexed = torch.stack([reindex_by_frequency(hidden[..., n], f["neuron_frequency"][n]) for n in many])
        jobs += [("plot_fourier_spectrum", (f["frequencies"], f["embed_power"].numpy(), hidden_power.numpy(),
                                            f["key_frequencies"], fourier.key_threshold(hidden_power)),
                  {"path": out / "fourier_spectrum.png", "basis_name": basis.name}),
                 ("plot_neuron_clusters", (f["neuron_fractions"].numpy(), f["neuron_frequency"], f["neuron_cluster"],
                                           f["key_frequencies"]), {"path": out / "neuron_clusters.png"}),
                 ("plot_frequency_ablation", (f["frequency_ablation"], base), {"path": out / "frequency_ablation.png"}),
                 ("plot_neuron_overview", (reindexed.numpy(), [f"#{i + 1}: n{n}, k={f['neuron_frequency'][n]}"
                                                               for i, n in enumerate(many)]),
                  {"path": out / "activation_overview.png", "axes_names": axes})]
    jobs.append(("plot_component_ablation", (result["components"], base), {"path": out / "component_ablation.png"}))
    if "transformer" in result:
        t = result["transformer"]
        jobs.append(("plot_attention_patterns", (t["attention"].numpy(), t["head_ablations"]),
                     {"path": out / "attention_patterns.png"}))
    return jobs


def write_plots(model, grid, result: dict, out: Path, top: int = 16) -> list[Path]:
    """Draw every plot of the analysis into `out`; returns their paths."""
    return plots.draw(plot_jobs(model, grid, result, out, top))


def write_results(analysis: dict, checkpoint, out: Path) -> None:
    """analysis_summary.json and neuron_ranking.json of an analyze_checkpoint result."""
    write_json(out / "analysis_summary.json", analysis["summary"])
    write_json(out / "neuron_ranking.json", {"checkpoint": str(checkpoint), "run_id": analysis["summary"]["run_id"],
                                             "neurons": neuron_table(analysis["result"])})


def run(checkpoint="checkpoints/model_final.pth", results_dir="results", draws: int = 5, progress: bool = True):
    """Analyse a checkpoint and write the JSON files and plots; returns (summary, plot paths)."""
    steps = tqdm(total=3, desc="analysis", disable=not progress)
    analysis = analyze_checkpoint(checkpoint, draws, progress)  # raises CheckpointError before anything is written
    steps.update()
    write_results(analysis, checkpoint, Path(results_dir))
    steps.update()
    paths = write_plots(analysis["model"], analysis["grid"], analysis["result"], Path(results_dir))
    steps.update()
    steps.close()
    return analysis["summary"], paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Mechanistic analysis of a trained checkpoint (ToyMLP or transformer).")
    parser.add_argument("--checkpoint", default="checkpoints/model_final.pth", help="checkpoint to analyse (train.py's, or a TransformerLens grokking-demo file)")
    parser.add_argument("--results-dir", default="results", help="folder for the JSON files and plots")
    parser.add_argument("--draws", type=int, default=5, help="random neuron sets per k in the ablation curves")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--progress", action="store_true",
                        help="instead: progress measures over the snapshots next to --checkpoint, or inside a "
                             "TransformerLens grokking-demo file (see progress.py)")
    args = parser.parse_args(argv)
    if args.progress and Path(args.checkpoint).is_file():
        try:
            load_checkpoint(args.checkpoint)
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.progress:
        path = Path(args.checkpoint)
        folder = path if path.is_dir() or run_snapshots(path) else path.parent  # a demo file holds its snapshots
        flags = ["--checkpoint-dir", str(folder), "--results-dir", args.results_dir]
        return progress.main(flags + (["--quiet"] if args.quiet else []))
    try:
        check_output_dir(args.results_dir, "--results-dir")
        summary, paths = run(args.checkpoint, args.results_dir, args.draws, progress=not args.quiet)
    except (CheckpointError, OutputDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(findings(summary)))
    print("Plots: " + ", ".join(str(p) for p in paths))
    out = Path(args.results_dir)
    print(f"Numbers: {out / 'analysis_summary.json'}, {out / 'neuron_ranking.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
