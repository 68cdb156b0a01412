"""Run regimes (after Liu et al. 2022) of the runs in a sweep, and the phase diagram over two swept settings.

A run's regime (comprehension, grokking, memorization, confusion, or diverged) comes from two epochs of its
history: regime() is the rule. These are not the training phases of one run (memorization, circuit
formation, clean-up: analysis/progress_measures.py).

    regime_cells(rows, x, y) -> per (x, y) cell: run count, regime counts, majority regime, medians
    draw_phase_diagram(db, x, y) -> regime_cells of a sweep database, drawn by plots.plot_phase_diagram
"""
import statistics
from collections import Counter
from dataclasses import fields

from config import ARCH_NAMES, Config
from core.utils import ACCURACY_BAR, first_epoch_at
from dataset import SYMBOLS
from plots import plot_phase_diagram
from sweeps import database

GROKKING_RATIO = 10.0  # grokking: 99 % test at least this many times later than 99 % train
REGIMES = ("comprehension", "grokking", "memorization", "confusion", "diverged")
REGIME_RULE = (f"memorization: train accuracy reached {ACCURACY_BAR:.0%} but test accuracy never did within the run's "
              f"epochs; confusion: train accuracy never reached {ACCURACY_BAR:.0%} (nor test); grokking: both reached, "
              f"test at least {GROKKING_RATIO:g}x as late as train (grokking_epoch / memorization_epoch >= "
              f"{GROKKING_RATIO:g}); comprehension: test reached with a smaller delay, or without train "
              f"reaching {ACCURACY_BAR:.0%} (label noise); diverged: the loss became non-finite")


def regime(memorization_epoch, grokking_epoch, ratio: float = GROKKING_RATIO) -> str:
    """The run regime of one run from its memorization epoch (first evaluation with train accuracy >= 99 %) and its
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


def regime_of_history(history: dict, ratio: float = GROKKING_RATIO) -> str:
    """regime() with the epochs read off a train.py history (first evaluation with accuracy >= 99 %)."""
    return regime(first_epoch_at(history, "train_acc"), first_epoch_at(history, "test_acc"), ratio)


def regime_of_row(row: dict) -> str:
    """The run regime of a sweep row (a diverged run has no epochs)."""
    if row.get("diverged"):
        return "diverged"
    return regime(row["memorization_epoch"], row["grokking_epoch"])


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def regime_cells(rows: list[dict], x: str, y: str, ignore=("seed",)) -> dict:
    """Summarise rows per (x, y) cell: run count, regime counts, the majority regime ('tie' when two or more
    regimes share the top count), and the medians of the grokking epoch and the grokking delay over the runs
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
        counts = Counter(r["regime"] for r in rs)
        top = max(counts.values())
        leaders = [name for name in REGIMES if counts.get(name) == top]
        epochs = [r["grokking_epoch"] for r in rs if r.get("grokking_epoch") is not None]
        delays = [r["grokking_delay"] for r in rs if r.get("grokking_delay") is not None]
        cells[key] = {"n": len(rs), "counts": dict(counts), "regime": leaders[0] if len(leaders) == 1 else "tie",
                      "median_grokking_epoch": statistics.median(epochs) if epochs else None,
                      "median_delay": statistics.median(delays) if delays else None}
    return {"x": sorted({k[0] for k in cells}, key=_sort_key), "y": sorted({k[1] for k in cells}, key=_sort_key),
            "cells": cells}


def _axis_label(name: str) -> str:
    help = {f.name: f.metadata.get("help", "") for f in fields(Config)}.get(name, "")
    short = help.split(";")[0].split(", in ")[0].split(" (")[0]
    return f"{name} ({short})" if short else name


def diagram_title(rows: list[dict], x: str, y: str) -> str:
    """'Run regimes of ToyMLP on (a + b) mod 113 over train_frac x weight_decay, 2 seeds per cell' from the rows."""
    def only(key):
        values = {r.get(key) for r in rows}
        return values.pop() if len(values) == 1 else None

    arch, op, p = only("arch"), only("op"), only("p")
    what = ARCH_NAMES.get(arch, "runs") if arch else "runs"
    task = f" on (a {SYMBOLS.get(op, op)} b) mod {p}" if op and p is not None and "p" not in (x, y) else ""
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
    listed = (f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1))
              else ", ".join(map(str, seeds[:8])) + (", ..." if len(seeds) > 8 else ""))
    per_cell = f", {len(seeds)} seed{'s' * (len(seeds) > 1)} per cell ({listed})" if seeds else ""
    return f"Run regimes of {what}{task} over {x} × {y}{per_cell}"


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
    that match `where` ({name: value or list of values}), without training; returns regime_cells()' data.
    rows: draw these flat rows instead of reading the database."""
    if rows is None:
        conn = database.connect(db, create=False) if not hasattr(db, "execute") else db
        try:
            rows = [database.flat_row(r) for r in database.get_runs(conn, history=False)]
        finally:
            if conn is not db:
                conn.close()
    rows = [r for r in rows if matches(r, where)]
    data = regime_cells(rows, x, y)
    plot_phase_diagram(data, path, _axis_label(x), _axis_label(y), diagram_title(rows, x, y), REGIMES,
                       REGIME_RULE, ACCURACY_BAR)
    return data
