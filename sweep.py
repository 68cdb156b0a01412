"""Train over several seeds and primes with otherwise default settings; print and save a table.

    python sweep.py                                  # seeds 0-9 at p = 113
    python sweep.py --primes 53 59 71 97 127 149 --seeds 0 1 2 3 4 5 6 7 8 9
    python sweep.py --arch transformer --analyze     # the transformer with its own defaults

Each run writes its checkpoints into a temporary folder; only results/sweep.json is kept.
"""
import argparse
import statistics
import sys
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

from tqdm import tqdm

from train import ARCH_DEFAULTS, ARCH_FLAGS, Config, NonFiniteLoss, train
from utils import OutputDirError, check_output_dir, provenance, write_json


def sweep(primes, seeds, base: Config = Config(), analyze: bool = False) -> list[dict]:
    """Train each (p, seed); with analyze, also run interpretability.run and progress.run on it."""
    rows = []
    runs = [(p, s) for p in primes for s in seeds]
    for p, seed in tqdm(runs, desc="sweep", unit="run"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = replace(base, p=p, seed=seed, checkpoint_dir=f"{tmp}/checkpoints", results_dir=f"{tmp}/results")
            try:
                s = train(cfg, progress=False)
            except NonFiniteLoss:
                rows.append({"p": p, "seed": seed, "diverged": True})
                tqdm.write(f"p {p:4d} seed {seed:2d} | diverged (non-finite loss)")
                continue
            row = {k: s[k] for k in ("memorization_epoch", "grokking_epoch", "grokking_delay", "seconds_to_grok",
                                     "epochs_run", "final_train_acc", "final_test_acc", "final_test_loss",
                                     "wall_seconds", "ms_per_step", "corrupted_pairs", "clean_train_acc",
                                     "corrupted_true_acc", "corrupted_fit_acc")} | {"p": p, "seed": seed}
            if analyze:
                row |= analysis_row(cfg)
        rows.append(row)
        tqdm.write(format_row(row))
    return rows


def analysis_row(cfg: Config) -> dict:
    import interpretability
    import progress

    summary, _ = interpretability.run(f"{cfg.checkpoint_dir}/model_final.pth", cfg.results_dir, progress=False)
    replay = progress.run(cfg.checkpoint_dir, cfg.results_dir, progress=False)
    if summary["basis"] is None:  # no Fourier analysis (mul or div mod a composite): only what needs none
        return {"basis": None, "circuit_size": summary["circuit_size"], "key_frequencies": []}
    keep = ("key_frequencies", "key_frequency_candidates", "key_frequency_power_fraction", "circuit_size",
            "restricted_loss", "excluded_loss", "train_loss", "test_loss", "logit_variance_explained",
            "neurons_unassigned")
    row = {k: summary[k] for k in keep} | replay["phases"] | {f"onset_{k}": v for k, v in replay["onsets"].items()}
    row["basis"] = summary["basis"]["name"]
    row |= {k: summary["clock_pizza"][k] for k in ("gradient_symmetricity", "distance_irrelevance", "verdict")}
    row["all_pairs_loss"] = summary["losses"]["all"]["loss"]  # what the restricted loss (all pairs) compares with
    row["ranking_spearman"] = summary["neuron_importance"]["ranking_agreement"]["spearman"]
    row["worst_key_frequency_ablation_acc"] = min(r["acc"] for r in summary["frequency_ablation"][:-1])
    row["non_key_ablation_acc"] = summary["frequency_ablation"][-1]["acc"]
    return row


def format_row(r: dict) -> str:
    delay = f"{r['grokking_delay']:5.1f}x" if r["grokking_delay"] else "  none"
    line = (f"p {r['p']:4d} seed {r['seed']:2d} | memorized {r['memorization_epoch']} | grokked {r['grokking_epoch']} "
            f"({delay}) | final test acc {r['final_test_acc']:.1%} | {r['epochs_run']} epochs, {r['wall_seconds']:.1f} s")
    if r.get("basis"):
        line += (f" | keys {r['key_frequencies']} ({r['key_frequency_power_fraction']:.0%}; spectrum alone "
                 f"{r['key_frequency_candidates']}) | {r['verdict']} (s_g {r['gradient_symmetricity']:.2f}, "
                 f"q {r['distance_irrelevance']:.2f}) | circuit "
                 f"{r['circuit_size']} | restricted {r['restricted_loss']:.2g} excluded {r['excluded_loss']:.2g} | "
                 f"logit var {r['logit_variance_explained']:.1%} | clean-up {r['cleanup_start']}-{r['cleanup_end']} | "
                 "first 2x moves: " + ", ".join(f"{k[6:]} {r[k]}" for k in sorted(
                     (k for k in r if k.startswith("onset_")), key=lambda k: (r[k] is None, r[k] or 0))))
    return line


def mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Grokking epochs over seeds and primes (defaults otherwise).")
    parser.add_argument("--primes", type=int, nargs="+", default=[113], help="moduli to train on")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="init seeds")
    parser.add_argument("--arch", choices=ARCH_FLAGS, default="mlp",
                        help="architecture; its defaults (train.ARCH_DEFAULTS) apply before --set")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="override train.py settings for every run, e.g. --set lr=0.01 weight_decay=3")
    parser.add_argument("--analyze", action="store_true", help="also run the analysis and progress measures")
    parser.add_argument("--out", default="results/sweep.json", help="where to write the table")
    args = parser.parse_args(argv)
    types = {f.name: f.type for f in fields(Config)}
    try:
        overrides = {name: types[name](value) for name, value in (item.split("=", 1) for item in args.set)}
    except (KeyError, ValueError):
        parser.error(f"--set takes NAME=VALUE pairs with names from train.py's Config, got {args.set}")
    try:
        check_output_dir(Path(args.out).parent, "--out")
    except OutputDirError as err:
        parser.error(str(err))
    base = replace(Config(**ARCH_DEFAULTS[args.arch]), arch=args.arch, **overrides)
    rows = sweep(args.primes, args.seeds, base=base, analyze=args.analyze)
    print("\n   p | memorization epoch | grokking epoch | delay (grok/mem) | min delay | final test acc | wall s")
    for p in args.primes:
        rs = [r for r in rows if r["p"] == p and not r.get("diverged")]
        if not rs:
            print(f"{p:4d} | every run diverged")
            continue
        delays = [r["grokking_delay"] for r in rs]
        print(f"{p:4d} | {mean_std(r['memorization_epoch'] for r in rs):>18} | "
              f"{mean_std(r['grokking_epoch'] for r in rs):>14} | {mean_std(delays):>16} | "
              f"{min((d for d in delays if d), default=0):9.1f} | "
              f"{min(r['final_test_acc'] for r in rs):14.1%} | {mean_std(r['wall_seconds'] for r in rs)}")
    if args.analyze:
        print("\n   p | key frequencies (count) | their power share | circuit size | restricted loss | "
              "excluded loss | logit variance explained | clean-up starts")
        for p in args.primes:
            rs = [r for r in rows if r["p"] == p and r.get("basis")]  # not diverged, and a Fourier analysis
            if not rs:
                continue
            print(f"{p:4d} | {mean_std(len(r['key_frequencies']) for r in rs):>23} | "
                  f"{mean_std(100 * r['key_frequency_power_fraction'] for r in rs):>16}% | "
                  f"{mean_std(r['circuit_size'] for r in rs):>12} | "
                  f"{min(r['restricted_loss'] for r in rs):.1e}-{max(r['restricted_loss'] for r in rs):.1e} | "
                  f"{mean_std(r['excluded_loss'] for r in rs):>13} | "
                  f"{mean_std(100 * r['logit_variance_explained'] for r in rs):>23}% | "
                  f"{mean_std(r['cleanup_start'] for r in rs)}")
        print("\n   p | seed | memorized | clean-up starts | clean-up ends | grokked | first 2x move after memorization: "
              "embedding Gini up | restricted loss down | excluded loss up | test loss down")
        for r in (r for r in rows if r.get("basis")):
            print(f"{r['p']:4d} | {r['seed']:4d} | {r['memorization_epoch']!s:>9} | {r['cleanup_start']!s:>15} | "
                  f"{r['cleanup_end']!s:>13} | {r['grokking_epoch']!s:>7} | {r['onset_fourier_gini']!s:>17} | "
                  f"{r['onset_restricted_loss']!s:>20} | {r['onset_excluded_loss']!s:>16} | {r['onset_test_loss']!s:>14}")
    write_json(args.out, {"runs": rows, "config": vars(args) | {"base": asdict(base)},
                          **provenance()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
