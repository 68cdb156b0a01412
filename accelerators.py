"""The accelerators lab: every speed-up of core/optim.py against AdamW, each tuned with the same budget, then run
on fresh seeds. Two leaderboards:

    fastest   the fewest full-batch steps to 99 % test accuracy (median over seeds), any delay
    textbook  the same, among configurations that grok: test 99 % at least 10x as late as train 99 %

    python accelerators.py                                   # ToyMLP at p = 113, the CPU budget
    python accelerators.py --grid 3 --seeds 20               # the full budget (9 configurations a method)
    python accelerators.py --arch transformer --grid 3       # the transformer (hours on a CPU; use a GPU)

Tuning: each method's two main knobs (METHODS), the first --grid values of each (--grid 2: 4 configurations a
method, the same count for every method), on --tune-seeds seeds that the final runs never use (so the winner is
not picked on the seeds it is scored on). Every run is stored in the sweep database (--db; a rerun trains only
what is missing); the tables go to results/accelerators.{md,json}, the seeds' steps to results/accelerators.png,
and each method's fastest run (seed 0) is analysed as interpretability.py does (key frequencies, circuit,
clock or pizza, restricted and excluded loss).
"""
import argparse
import itertools
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from config import ARCH_DEFAULTS, Config, validate
from core.utils import provenance, write_json
from plots import plot_accelerators
from sweep import sweep
from sweeps import database
from sweeps.regimes import GROKKING_RATIO

# method: (its fixed settings, its two main knobs with their values); --grid n tries the first n of each. lr and
# weight_decay values are multiples of the architecture's default (ToyMLP: lr 0.03, weight decay 1; the transformer:
# 0.01, 0.3), the rest absolute. Each list starts at the default (for the weight norm, which has none, at 0.5); the
# next values are this lab's guesses from short ToyMLP runs at p = 113 (docs/accelerators.md).
METHODS = {
    "AdamW": ({}, {"lr": [1, 1 / 3, 10 / 3], "weight_decay": [1, 3, 0.3]}),
    "Muon": ({"optimizer": "muon"}, {"lr": [1, 10 / 3, 10], "weight_decay": [1, 0.3, 3]}),
    "Grokfast-EMA": ({"grad_filter": "ema"}, {"filter_lamb": [0.5, 2.0, 5.0], "lr": [1, 1 / 3, 1 / 10]}),
    "Grokfast-MA": ({"grad_filter": "ma"}, {"filter_lamb": [0.5, 2.0, 5.0], "lr": [1, 1 / 3, 1 / 10]}),
    "⊥Grad": ({"orthograd": True}, {"lr": [1, 1 / 3, 1 / 10], "weight_decay": [1, 0.1, 0]}),
    "StableMax": ({"loss": "stablemax"}, {"lr": [1, 1 / 3, 1 / 10], "weight_decay": [1, 0.1, 0]}),
    "Weight norm": ({"weight_decay": 0.0}, {"weight_norm": [0.5, 0.7, 0.3], "lr": [1, 1 / 3, 1 / 10]}),
}
SCALED = ("lr", "weight_decay")  # knobs given as multiples of the architecture's default
SHOWN = tuple(dict.fromkeys(name for fixed, knobs in METHODS.values() for name in [*fixed, *knobs]))  # in run lines
BOARDS = {"fastest": "fastest to 99% test accuracy (any delay)",
          "textbook": f"fastest textbook grokking (delay >= {GROKKING_RATIO:g}x)"}


def _f(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class LabConfig:
    """The lab's settings (saved into accelerators.json); one flag each."""
    arch: str = _f("mlp", "architecture: mlp (ToyMLP) or transformer")
    p: int = _f(113, "modulus")
    grid: int = _f(2, "values per knob, 1 to 3: grid**2 tuning configurations a method")
    tune_seeds: int = _f(1, "tuning seeds per configuration (seeds 100, 101, ...)")
    seeds: int = _f(10, "final seeds (0 .. seeds-1) at each method's best configuration")
    epochs: int = _f(700, "budget of a run in full-batch steps (a run stops at 99 % test accuracy)")
    workers: int = _f(2, "training processes")
    db: str = _f("results/accelerators.sqlite", "the sweep database every run is stored in")
    results_dir: str = _f("results", "folder for accelerators.md, .json and .png")
    analyze: bool = _f(True, "analyse seed 0 of each method's fastest configuration")


def base_config(lab: LabConfig) -> Config:
    """The runs' common settings: train.py's defaults for the architecture, stopping at 99 % test accuracy (on a
    GPU where there is one: the device is not part of a run's key)."""
    return Config(**ARCH_DEFAULTS[lab.arch] | {"arch": lab.arch, "p": lab.p, "epochs": lab.epochs,
                                              "stop_after_grok": 1.0})


def candidates(lab: LabConfig, method: str) -> list[Config]:
    """The method's grid**2 tuning configurations (one seed: the caller adds the seeds)."""
    fixed, knobs = METHODS[method]
    base = base_config(lab)
    values = {name: [round(getattr(base, name) * v, 12) if name in SCALED else v for v in vs[:lab.grid]]
              for name, vs in knobs.items()}
    return [replace(base, **fixed, **dict(zip(values, combo))) for combo in itertools.product(*values.values())]


def seeded(cfgs: list[Config], seeds) -> list[Config]:
    return [replace(c, seed=s) for c in cfgs for s in seeds]


def median_steps(steps: list) -> float | None:
    """The median of the steps to 99 %, a run that never got there counting as infinitely slow (None when
    most never did)."""
    ranked = sorted(s if s is not None else float("inf") for s in steps)
    mid = statistics.median(ranked)
    return None if mid == float("inf") else mid


def rows_of(conn, cfgs: list[Config]) -> list[dict]:
    return [database.flat_row(r) for r in database.get_runs(conn, [database.config_hash(c) for c in cfgs],
                                                            history=False)]


def pick(conn, lab: LabConfig, method: str, board: str) -> Config | None:
    """The method's best configuration for `board`, judged on its tuning seeds (best)."""
    return best([(cfg, rows_of(conn, seeded([cfg], tuning_seeds(lab)))) for cfg in candidates(lab, method)], board)


def best(scored: list[tuple[Config, list[dict]]], board: str) -> Config | None:
    """Of (configuration, its runs' rows), the one with the fewest median steps to 99 % (median_steps); for the
    textbook board only configurations whose every run grokked (run regime grokking: a delay >= GROKKING_RATIO).
    None if no configuration qualifies; a tie goes to the first."""
    chosen, fewest = None, None
    for cfg, rows in scored:
        steps = counted_steps(rows, board)
        if board == "textbook" and None in steps:
            continue
        median = median_steps(steps)
        if median is not None and (fewest is None or median < fewest):
            chosen, fewest = cfg, median
    return chosen


def counted_steps(rows: list[dict], board: str) -> list:
    """Each run's steps to 99 % test accuracy as `board` counts them: None for a run that never got there and, on
    the textbook board, for one that did not grok (run regime grokking: a delay >= GROKKING_RATIO)."""
    return [r.get("grokking_epoch") if board == "fastest" or r["regime"] == "grokking" else None for r in rows]


def tuning_seeds(lab: LabConfig) -> range:
    return range(100, 100 + lab.tune_seeds)


def spread(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def board_row(conn, lab: LabConfig, method: str, board: str, cfg: Config | None) -> dict:
    """One line of a leaderboard: the method's chosen knobs and its final seeds' figures. On the textbook board a
    seed counts only if it grokked (delay >= GROKKING_RATIO); the others count as never reaching 99 %."""
    if cfg is None:
        return {"method": method, "config": None, "steps": [], "median": None}
    rows = rows_of(conn, seeded([cfg], range(lab.seeds)))
    knobs = {name: getattr(cfg, name) for name in METHODS[method][1]}
    steps = counted_steps(rows, board)
    return {"method": method, "config": knobs, "steps": steps, "median": median_steps(steps),
            "generalized": sum(s is not None for s in steps), "seeds": len(rows),
            "memorization": spread(r.get("memorization_epoch") for r in rows),
            "generalization": spread(steps) | {"median": median_steps(steps)},
            "delay": spread(r.get("grokking_delay") for r in rows),
            "final_test_acc": spread(r.get("final_test_acc") for r in rows),
            "seconds": spread(r.get("seconds_to_grok") for r in rows)}


ANALYSED_AFTER = 2.0  # x the grokking epoch, as the quick demo: the clean-up has begun (a run stopped at 99 % test
#                      holds a half-built circuit; train.py's 3x would add a third to the lab's time)


def analysed(cfg: Config, lab: LabConfig) -> Config:
    """The run analysed for a method: seed 0 of its fastest configuration, trained on to ANALYSED_AFTER x its
    grokking epoch."""
    return replace(cfg, seed=0, stop_after_grok=ANALYSED_AFTER, epochs=round(ANALYSED_AFTER * lab.epochs))


def analysis_of(conn, cfg: Config) -> dict | None:
    """The analysis columns of the analysed run `cfg` (sweep --analyze stored them)."""
    rows = rows_of(conn, [cfg])
    if not rows or not rows[0].get("basis"):
        return None
    r = rows[0]
    return {k: r.get(k) for k in ("key_frequencies", "circuit_size", "verdict", "restricted_loss", "excluded_loss")}


def fmt_spread(s: dict, digits: str = ".0f") -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:{digits}} [{s['min']:{digits}}-{s['max']:{digits}}]"


def markdown(boards: dict, lab: LabConfig) -> str:
    """Both leaderboards as Markdown tables (what docs/accelerators.md shows)."""
    lines = []
    for board, rows in boards.items():
        counted = "seeds at 99%" if board == "fastest" else f"seeds grokking (>= {GROKKING_RATIO:g}x)"
        lines += [f"### {BOARDS[board]}", "",
                  (f"| method | best of its tuning | {counted} | steps to 99%: median [min-max] | memorized | "
                   "delay | final test acc | seconds to 99% | keys | circuit | clock/pizza | restricted | excluded |"),
                  "|---" * 13 + "|"]
        for r in rows:
            if r["config"] is None:
                why = "reached 99% test" if board == "fastest" else "grokked on every tuning seed"
                lines.append(f"| {r['method']} | none of its configurations {why} | " + "- | " * 11)
                continue
            knobs = ", ".join(f"{k} {v:g}" for k, v in r["config"].items())
            a = r.get("analysis") or {}
            lines.append(
                f"| {r['method']} | {knobs} | {r['generalized']}/{r['seeds']} | {fmt_spread(r['generalization'])} | "
                f"{fmt_spread(r['memorization'])} | {fmt_spread(r['delay'], '.1f')} | "
                f"{fmt_spread(r['final_test_acc'], '.3f')} | {fmt_spread(r['seconds'], '.1f')} | "
                f"{a.get('key_frequencies', '-')} | {a.get('circuit_size', '-')} | {a.get('verdict', '-')} | "
                + (f"{a['restricted_loss']:.2g} | {a['excluded_loss']:.2g} |" if a else "- | - |"))
        lines.append("")
    lines.append(f"{'ToyMLP' if lab.arch == 'mlp' else 'Transformer'} at p = {lab.p}, full batch; tuning: "
                 f"{lab.grid ** 2} configurations a method on seed(s) {tuning_seeds(lab)[0]}-{tuning_seeds(lab)[-1]}; final: seeds "
                 f"0-{lab.seeds - 1}; budget {lab.epochs:,} steps a run (a seed that never reached 99% counts as "
                 "slowest in the median; on the textbook board so does a seed with a smaller delay). Steps: that "
                 "median, [min-max] over the seeds counted; the other figures: median [min-max] over the seeds that "
                 "have one (a delay needs 99% train and test). Analysis columns: seed 0 of the fastest "
                 f"configuration, trained on to {ANALYSED_AFTER:g}x its grokking epoch.")
    return "\n".join(lines) + "\n"


def run(lab: LabConfig) -> dict:
    """Tune, run the seeds, analyse; returns {"boards": {board: rows fastest first}, ...} and writes the files."""
    conn = database.connect(lab.db)
    tuning = [c for m in METHODS for c in seeded(candidates(lab, m), tuning_seeds(lab))]
    for cfg in tuning:
        validate(cfg)
    print(f"tuning: {len(METHODS)} methods x {lab.grid ** 2} configurations x {lab.tune_seeds} seeds", flush=True)
    sweep(conn, tuning, show=SHOWN, workers=lab.workers)
    chosen = {(m, b): pick(conn, lab, m, b) for m in METHODS for b in BOARDS}
    final = list({database.config_hash(c): c for c in seeded([c for c in chosen.values() if c], range(lab.seeds))}
                 .values())
    print(f"final runs: each method's best configuration per leaderboard x {lab.seeds} seeds", flush=True)
    sweep(conn, final, show=SHOWN, workers=lab.workers)
    fastest = [analysed(chosen[m, "fastest"], lab) for m in METHODS if chosen[m, "fastest"]]
    if lab.analyze and fastest:
        print("analysing each method's fastest run (seed 0)", flush=True)
        sweep(conn, fastest, analyze=True, show=SHOWN, workers=lab.workers)
    analyses = {m: analysis_of(conn, analysed(chosen[m, "fastest"], lab)) if chosen[m, "fastest"] else None
                for m in METHODS}
    boards = {}
    for board in BOARDS:
        rows = [board_row(conn, lab, m, board, chosen[m, board]) | {"analysis": analyses[m]} for m in METHODS]
        boards[board] = sorted(rows, key=lambda r: (r["median"] is None, r["median"] or 0))
    results = Path(lab.results_dir)
    title = (f"{'ToyMLP' if lab.arch == 'mlp' else 'Transformer'}, (a + b) mod {lab.p}: each method at its best of "
             f"{lab.grid ** 2} tuned configurations, {lab.seeds} fresh seeds")
    plot_accelerators({BOARDS[b]: rows for b, rows in boards.items()}, results / "accelerators.png", title, lab.epochs,
                      f"(textbook board) a delay under {GROKKING_RATIO:g}x")
    (results / "accelerators.md").write_text(markdown(boards, lab))
    write_json(results / "accelerators.json", {"lab": asdict(lab), "boards": boards, **provenance()})
    print(markdown(boards, lab))
    print(f"wrote {results / 'accelerators.md'}, {results / 'accelerators.json'}, {results / 'accelerators.png'}; "
          f"every run is in {lab.db}")
    return {"boards": boards}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(LabConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.type is bool:
            parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_false", help="do not " + f.metadata["help"])
        else:
            parser.add_argument(flag, type=f.type, default=f.default, help=f.metadata["help"].replace("%", "%%"),
                                choices=("mlp", "transformer") if f.name == "arch" else None)
    lab = LabConfig(**vars(parser.parse_args(argv)))
    if not 1 <= lab.grid <= 3 or min(lab.tune_seeds, lab.seeds, lab.epochs, lab.workers) < 1 or lab.p < 2:
        parser.error("--grid must lie in 1..3, --p be >= 2; --tune-seeds, --seeds, --epochs and --workers >= 1")
    run(lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
