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

import interpretability
from analysis import circuit
from analysis.summary import analysis_bytes, analyze
from core.checkpoint import load_model

WHOLE = ("clock_pizza", "write_plots")  # phases run whole: the correct logit over every position pair; the plots


def peak_mb() -> int:
    return next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))


def measure(checkpoint: str, chunks: int, out: Path) -> None:
    model, ckpt = load_model(checkpoint)
    cfg = ckpt["config"]
    grid = circuit.Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"])
    whole, scale = circuit.Grid.chunks, {}

    def first_chunks(self, index=None):  # a split's loop stops early; grids over all pairs do not
        pieces = whole(self, index)
        if index is not None:
            scale[len(index)] = len(pieces) / min(chunks, len(pieces))
            pieces = pieces[:chunks]
        return pieces

    def phase(name, run):
        whole_phase = name in WHOLE
        circuit.Grid.chunks = whole if whole_phase else first_chunks
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak
        start = time.perf_counter()
        value = run()
        seconds = time.perf_counter() - start
        factor = 1 if whole_phase else max(scale.values(), default=1)
        print(f"{name:20s} {seconds:7.1f} s, x {factor:.1f} -> about {seconds * factor / 60:6.1f} min in full; "
              f"peak {peak_mb():,} MB resident", flush=True)
        return value

    print(f"p = {grid.p}: {len(grid.chunks())} chunks of pairs; estimated peak (analysis_bytes) "
          f"{analysis_bytes(model) / 2**30:.1f} GB")
    try:
        result = analyze(model, grid, phase=phase)
        out.mkdir(parents=True, exist_ok=True)
        phase("write_plots", lambda: interpretability.write_plots(model, grid, result, out))
    finally:
        circuit.Grid.chunks = whole
    f = result["fourier"]
    if f["basis"] is not None:  # neither depends on the cut-short loops
        clusters = Counter(k for k, share in zip(f["neuron_frequency"], f["neuron_frequency_fraction"])
                           if circuit.in_cluster(share))
        print(f"spectrum candidates {f['key_frequency_candidates']}; neurons with >= {circuit.NEURON_FRACTION:.0%} "
              f"of their variance in one frequency: {dict(sorted(clusters.items()))}")
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
