"""Phases of a run (after Liu et al. 2022) and the phase diagram over two swept settings.

    python phase_diagram.py train_frac weight_decay --db results/sweep.sqlite --where lr=0.03

phase() is the rule; phase_cells() summarises rows (dicts with the two settings, 'phase', 'grokking_epoch'
and 'grokking_delay', as sweep_db.flat_row gives them) per cell; plot_phase_diagram() draws those cells;
draw_phase_diagram() does both from a sweep database, without training anything.
"""
import argparse
import statistics
import sys
import textwrap
from collections import Counter
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from train import Config  # noqa: E402

ACC = 0.99  # the repo's bar for memorized (train) and generalized (test), as in train.py's summary
GROKKING_RATIO = 10.0  # grokking: 99 % test at least this many times later than 99 % train
PHASES = ("comprehension", "grokking", "memorization", "confusion", "diverged")
COLORS = {"comprehension": "#a6dba0", "grokking": "#92c5de", "memorization": "#f4a582", "confusion": "#d9d9d9",
          "diverged": "#636363", "tie": "#ffffff"}
PHASE_RULE = (f"memorization: train accuracy reached {ACC:.0%} but test accuracy never did within the run's "
              f"epochs; confusion: train accuracy never reached {ACC:.0%} (nor test); grokking: both reached, "
              f"test at least {GROKKING_RATIO:g}x as late as train (grokking_epoch / memorization_epoch >= "
              f"{GROKKING_RATIO:g}); comprehension: test reached with a smaller delay, or without train "
              f"reaching {ACC:.0%} (label noise); diverged: the loss became non-finite")


def phase(memorization_epoch, grokking_epoch, ratio: float = GROKKING_RATIO) -> str:
    """The phase of one run from its memorization epoch (first evaluation with train accuracy >= 99 %) and its
    grokking epoch (first with test accuracy >= 99 %), None where never reached within the run's epochs.

    Liu et al. 2022 (App. A) call a run comprehension, grokking, memorization or confusion by whether train and
    validation accuracy pass 90 % within 10^5 steps and whether validation lags train by >= 10^3 steps. Our
    default run memorizes by epoch ~20 and groks by ~460 (full batch, one step per epoch): a 440-step gap that
    their rule calls comprehension, although test lags train 23x. So we keep their four names and the 99 %
    bar of train.py, and replace the absolute gap by a delay ratio, the bar this repo uses for "it groks":
    - confusion: train never reaches 99 % (and test never does: a run whose test passes 99 % without train
      doing so, as with label noise, generalized without memorizing first and counts as comprehension);
    - memorization: train reaches 99 %, test never does within the run's epochs (it may grok later);
    - grokking: both reach 99 %, and grokking_epoch / memorization_epoch >= ratio (10: exactly 10x groks);
    - comprehension: both reach 99 % with a smaller ratio (test follows train closely).
    """
    if grokking_epoch is None:
        return "confusion" if memorization_epoch is None else "memorization"
    if memorization_epoch is None:
        return "comprehension"
    return "grokking" if grokking_epoch >= ratio * memorization_epoch else "comprehension"


def phase_of_history(history: dict, ratio: float = GROKKING_RATIO) -> str:
    """phase() with the epochs read off a train.py history (first evaluation with accuracy >= 99 %)."""
    def first(key):
        return next((e for e, v in zip(history["epoch"], history[key]) if v >= ACC), None)
    return phase(first("train_acc"), first("test_acc"), ratio)


def phase_of_row(row: dict) -> str:
    """The phase of a sweep row (a diverged run has no epochs)."""
    if row.get("diverged"):
        return "diverged"
    return phase(row["memorization_epoch"], row["grokking_epoch"])


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def phase_cells(rows: list[dict], x: str, y: str, ignore=("seed",)) -> dict:
    """Summarise rows per (x, y) cell: run count, phase counts, the majority phase ('tie' when two or more
    phases share the top count), and the medians of the grokking epoch and the grokking delay over the runs
    whose test accuracy reached 99 % (None if none did).

    Rows must not differ in any other setting than x, y and `ignore` (the seeds, which a cell summarises):
    a cell would mix settings otherwise. Returns {"x": sorted x values, "y": sorted y values, "cells":
    {(x value, y value): summary}}."""
    if not rows:
        raise ValueError("no runs to draw")
    missing = [name for name in (x, y) if any(name not in r for r in rows)]
    if missing:
        raise ValueError(f"the runs have no setting {missing[0]!r}: name train.py Config fields")
    settings = [f.name for f in fields(Config)]
    varying = [k for k in settings if k not in (x, y, *ignore) and len({repr(r.get(k)) for r in rows}) > 1]
    if varying:
        values = sorted({r.get(varying[0]) for r in rows}, key=_sort_key)
        raise ValueError(f"the runs also differ in {', '.join(varying)} (e.g. {varying[0]} = "
                         f"{', '.join(map(str, values))}): choose one value of each, so a cell holds one setting")
    groups = {}
    for r in rows:
        groups.setdefault((r[x], r[y]), []).append(r)
    cells = {}
    for key, rs in groups.items():
        counts = Counter(r["phase"] for r in rs)
        top = max(counts.values())
        leaders = [ph for ph in PHASES if counts.get(ph) == top]
        epochs = [r["grokking_epoch"] for r in rs if r.get("grokking_epoch") is not None]
        delays = [r["grokking_delay"] for r in rs if r.get("grokking_delay") is not None]
        cells[key] = {"n": len(rs), "counts": dict(counts), "phase": leaders[0] if len(leaders) == 1 else "tie",
                      "median_grokking_epoch": statistics.median(epochs) if epochs else None,
                      "median_delay": statistics.median(delays) if delays else None}
    return {"x": sorted({k[0] for k in cells}, key=_sort_key), "y": sorted({k[1] for k in cells}, key=_sort_key),
            "cells": cells}


def _axis_label(name: str) -> str:
    help = {f.name: f.metadata.get("help", "") for f in fields(Config)}.get(name, "")
    short = help.split(";")[0].split(", in ")[0].split(" (")[0]
    return f"{name} ({short})" if short else name


def _cell_text(cell: dict) -> str:
    n, counts = cell["n"], cell["counts"]
    lines = [f"{counts[ph]}/{n} {ph}" for ph in PHASES if ph in counts]
    if cell["median_grokking_epoch"] is not None:
        lines.append(f"epoch {cell['median_grokking_epoch']:g}")
    if cell["median_delay"] is not None:
        lines.append(f"delay {cell['median_delay']:.1f}x")
    return "\n".join(lines)


def plot_phase_diagram(data: dict, x: str, y: str, path, title: str = "") -> None:
    """Draw phase_cells() output: one square per (x, y) cell, coloured by its majority phase (hatched white
    for a tie), with the phase counts, the median epoch of 99 % test accuracy and the median delay in it."""
    xs, ys, cells = data["x"], data["y"], data["cells"]
    fig, ax = plt.subplots(figsize=(2.2 * len(xs) + 3.2, 1.3 * len(ys) + 1.8))
    for i, xv in enumerate(xs):
        for j, yv in enumerate(ys):
            cell = cells.get((xv, yv))
            if cell is None:
                ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor="white", edgecolor="0.6", lw=0.5))
                ax.text(i, j, "no runs", ha="center", va="center", fontsize=8, color="0.5")
                continue
            ph = cell["phase"]
            ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor=COLORS[ph], edgecolor="white", lw=2))
            if ph == "tie":  # the hatch takes the edge colour: a second, unfilled rectangle draws it in grey
                ax.add_patch(plt.Rectangle((i - 0.48, j - 0.48), 0.96, 0.96, fill=False, edgecolor="0.7", lw=0,
                                           hatch="//"))
            ax.text(i, j, _cell_text(cell), ha="center", va="center", fontsize=8,
                    color="white" if ph == "diverged" else "black",
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1} if ph == "tie" else None)
    ax.set(xlim=(-0.5, len(xs) - 0.5), ylim=(-0.5, len(ys) - 0.5), xticks=range(len(xs)), yticks=range(len(ys)),
           xlabel=_axis_label(x), ylabel=_axis_label(y))
    ax.set_xticklabels([f"{v:g}" if isinstance(v, float) else str(v) for v in xs])
    ax.set_yticklabels([f"{v:g}" if isinstance(v, float) else str(v) for v in ys])
    seen = {c["phase"] for c in cells.values()}
    handles = [Patch(facecolor=COLORS[ph], edgecolor="0.5", label=ph) for ph in PHASES  # Liu's four always
               if ph != "diverged" or ph in seen]
    if "tie" in seen:
        handles.append(Patch(facecolor="white", edgecolor="0.5", hatch="//", label="tie (no majority)"))
    ax.legend(handles=handles, title="majority phase\nover the seeds", loc="upper left", bbox_to_anchor=(1.02, 1),
              fontsize=8, title_fontsize=8, frameon=False)
    ax.text(1.02, 0.0, f"In each cell: runs per phase;\nepoch: median epoch at which\ntest accuracy reached {ACC:.0%};\n"
                       f"delay: median of that epoch /\nthe epoch train reached {ACC:.0%}\n(both over the runs that\n"
                       f"reached {ACC:.0%} test).",
            transform=ax.transAxes, fontsize=7.5, va="bottom", ha="left")
    ax.set_title(title or f"Phases over {x} and {y}", fontsize=10)
    fig.text(0.01, -0.02, textwrap.fill("Phases: " + PHASE_RULE + ".", 180), fontsize=7, va="top")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def diagram_title(rows: list[dict], x: str, y: str) -> str:
    """'Phases of ToyMLP on (a + b) mod 113 over train_frac x weight_decay, 2 seeds per cell' from the rows."""
    from dataset import SYMBOLS
    from train import ARCH_NAMES

    def only(key):
        values = {r.get(key) for r in rows}
        return values.pop() if len(values) == 1 else None

    arch, op, p = only("arch"), only("op"), only("p")
    what = ARCH_NAMES.get(arch, "runs") if arch else "runs"
    task = f" on (a {SYMBOLS.get(op, op)} b) mod {p}" if op and p is not None and "p" not in (x, y) else ""
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
    listed = (f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1))
              else ", ".join(map(str, seeds[:8])) + (", ..." if len(seeds) > 8 else ""))
    per_cell = f", {len(seeds)} seeds per cell ({listed})" if seeds else ""
    return f"Phases of {what}{task} over {x} × {y}{per_cell}"


def matches(row: dict, where: dict | None) -> bool:
    """Whether row has, for each name in where, that value (or one of the values, given a list or tuple)."""
    for name, want in (where or {}).items():
        allowed = want if isinstance(want, (list, tuple, set)) else [want]
        if row.get(name) not in allowed:
            return False
    return True


def draw_phase_diagram(db, x: str, y: str, where: dict | None = None, path="results/phase_diagram.png",
                       rows: list[dict] | None = None) -> dict:
    """Draw the phase diagram of the runs stored in the sweep database `db` (a path or an open connection)
    that match `where` ({name: value or list of values}), without training; returns phase_cells()' data.
    rows: draw these flat rows instead of reading the database."""
    import sweep_db

    if rows is None:
        conn = sweep_db.connect(db, create=False) if not hasattr(db, "execute") else db
        try:
            rows = [sweep_db.flat_row(r) for r in sweep_db.get_runs(conn, history=False)]
        finally:
            if conn is not db:
                conn.close()
    rows = [r for r in rows if matches(r, where)]
    data = phase_cells(rows, x, y)
    plot_phase_diagram(data, x, y, path, diagram_title(rows, x, y))
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw the phase diagram of runs in a sweep database (no training). "
                                                 "Phase rule: " + PHASE_RULE + ".")
    parser.add_argument("x", help="setting on the horizontal axis (a train.py Config field, e.g. train_frac)")
    parser.add_argument("y", help="setting on the vertical axis (e.g. weight_decay)")
    parser.add_argument("--db", default="results/sweep.sqlite", help="the sweep database")
    parser.add_argument("--where", nargs="+", default=[], metavar="NAME=V1,V2",
                        help="only runs with these settings (values parsed by the Config field's type)")
    parser.add_argument("--out", default="results/phase_diagram.png", help="where to write the PNG")
    args = parser.parse_args(argv)
    import sweep  # the --set parser, so --where reads values exactly as --set does

    try:
        where = sweep.parse_sets(args.where, allow=("p", "seed", "arch"))
    except ValueError as err:
        parser.error(f"--where: {err}")
    try:
        data = draw_phase_diagram(args.db, args.x, args.y, where, args.out)
    except ValueError as err:  # SweepDBError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(data['cells'])} cells, {sum(c['n'] for c in data['cells'].values())} runs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
