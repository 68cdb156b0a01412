"""Time and peak memory of each phase of `interpretability.py` on one checkpoint, for large p.

    python bench_analysis.py --checkpoint checkpoints/model_final.pth --chunks 2

The activation grids and means run over all pairs, as in the real analysis; the loops over a split's
chunks of pairs (every ablation and loss) stop after --chunks chunks, so a p = 1009 model is measured in
minutes instead of hours: memory is the real analysis's (it holds one chunk at a time), and each phase's
time scaled by (chunks in the split / --chunks) estimates its full time from above. The numbers the
phases compute are then those of the first chunks' pairs only: for timing, not for reading. Peak
memory per phase from Linux's VmHWM, reset before each phase (/proc/self/clear_refs).
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

import circuit
import interpretability as I
from checkpoint import load_model


def peak_mb() -> int:
    return next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))


def measure(checkpoint: str, chunks: int, out: Path) -> None:
    model, ckpt = load_model(checkpoint)
    cfg = ckpt["config"]
    grid = I.Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"])
    whole, scale = circuit.Grid.chunks, {}

    def first_chunks(self, index=None):  # a split's loop stops early; grids over all pairs do not
        pieces = whole(self, index)
        if index is not None:
            scale[len(index)] = len(pieces) / min(chunks, len(pieces))
            pieces = pieces[:chunks]
        return pieces

    def phase(name, run):
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak
        start = time.perf_counter()
        value = run()
        seconds = time.perf_counter() - start
        print(f"{name:20s} {seconds:7.1f} s, x {max(scale.values(), default=1):.1f} -> about "
              f"{seconds * max(scale.values(), default=1) / 60:6.1f} min in full; peak {peak_mb():,} MB resident", flush=True)
        return value

    print(f"p = {grid.p}: {len(grid.chunks())} chunks of pairs; estimated peak (analysis_bytes) "
          f"{I.analysis_bytes(model) / 2**30:.1f} GB")
    circuit.Grid.chunks = first_chunks
    try:
        with torch.no_grad():
            ranking = phase("rank_neurons", lambda: I.rank_neurons(model, grid))
            curves = phase("ablation_curves", lambda: I.ablation_curves(model, grid, ranking["causal_order"]))
            size, keep = phase("circuit_size", lambda: I.circuit_size(model, grid, ranking["causal_order"]))
            losses = phase("losses", lambda: {s: dict(zip(("loss", "acc"), grid.score(model, s)))
                                              for s in ("all", "train", "test")})
            f = phase("fourier_analysis", lambda: I.fourier_analysis(model, grid))
            if f["basis"] is not None:  # neither depends on the cut-short loops
                clusters = Counter(k for k, share in zip(f["neuron_frequency"], f["neuron_frequency_fraction"])
                                   if share >= I.NEURON_FRACTION)
                print(f"  spectrum candidates {f['key_frequency_candidates']}; neurons with >= "
                      f"{I.NEURON_FRACTION:.0%} of their variance in one frequency: {dict(sorted(clusters.items()))}")
            components = phase("component_ablations", lambda: I.component_ablations(model, grid, f["key_frequencies"]))
            scale.clear()
            circuit.Grid.chunks = whole  # the correct logit over every position pair
            verdict = phase("clock_pizza", lambda: I.clock_pizza.clock_or_pizza(
                model, grid.p, grid.op, correct_logit=I.correct_logit_in_basis(model, grid)))
        result = {"losses": losses, "ranking": ranking, "ablation_curves": curves, "circuit_size": size,
                  "circuit_keep_acc": keep, "fourier": f, "components": components, "clock_pizza": verdict}
        out.mkdir(parents=True, exist_ok=True)
        phase("write_plots", lambda: I.write_plots(model, grid, result, out))
    finally:
        circuit.Grid.chunks = whole
    print(f"lifetime peak: {peak_mb():,} MB resident (the last phase's; each phase's is above)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/model_final.pth")
    parser.add_argument("--chunks", type=int, default=2, help="chunks of each split's loop actually run")
    parser.add_argument("--results-dir", default="results/bench_analysis", help="where the plots go")
    args = parser.parse_args(argv)
    measure(args.checkpoint, args.chunks, Path(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
