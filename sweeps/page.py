"""The sweep page: one self-contained HTML file (plotly.js embedded, works offline from file://) that explores a
sweep database.

    python report.py --sweep results/sweep.sqlite          # -> results/sweep.html (beside the database)
    build_sweep_page("results/sweep.sqlite", out=None)     # in a notebook; returns the page's path

The page shows the phase diagram of the runs as a heatmap over two swept settings (Config fields that take more
than one value across the database's runs, the seed aside), picked from two dropdowns. A cell pools the runs that
share its two values (over the seeds and every other swept setting) and is coloured by their majority run regime;
its hover lists the runs per regime, the median grokking epoch and the median delay (sweeps.regimes.regime_cells).
Clicking a cell draws the train and test accuracy of its runs against the epoch. A database with one swept
setting gets a one-row diagram; one whose runs differ only in seed is refused (SweepPageError).

Every view is computed here and embedded as JSON; the page's JavaScript only swaps views (Plotly.react). Each
history is cut to at most MAX_POINTS evaluations (evenly spaced, plus the memorization and grokking epochs) and
the accuracies are rounded to ACCURACY_DIGITS decimals.
"""
import html
import json
from pathlib import Path

from plotly.offline import get_plotlyjs

from core.utils import ACCURACY_BAR, atomic_write, first_epoch_at
from plots import REGIME_COLORS, _cell_text
from sweeps import database
from sweeps.regimes import REGIME_RULE, REGIMES, _axis_label, diagram_title, regime_cells

MAX_POINTS = 200  # evaluations kept per run's curves
ACCURACY_DIGITS = 4
ONE_ROW = "(all runs)"  # the vertical "setting" of a one-setting sweep: every run in one row
CELL_CODES = (*REGIMES, "tie")  # heatmap value of a cell = index of its majority regime here


class SweepPageError(ValueError):
    """A database the page cannot show (one sentence)."""


# ---------------------------------------------------------------- data: the database's runs as plain rows

def load_runs(db_path) -> list[dict]:
    """The stored runs of the sweep database at db_path, histories included (SweepDBError if it is none)."""
    conn = database.connect(db_path, create=False)
    try:
        runs = database.get_runs(conn)
    finally:
        conn.close()
    if not runs:
        raise SweepPageError(f"{db_path} holds no runs: run the sweep first")
    return runs


def swept_settings(rows: list[dict]) -> list[str]:
    """The run-deciding Config fields (database.KEY_FIELDS) that take more than one value over flat rows, the seed
    aside (a cell summarises the seeds), in Config order."""
    return [name for name in database.KEY_FIELDS
            if name != "seed" and len({repr(r.get(name)) for r in rows}) > 1]


def format_value(value) -> str:
    """A setting's value as an axis label: floats as %g (0.3, 1, 1e-05), the rest as str."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def downsample(history: dict, max_points: int = MAX_POINTS) -> dict:
    """The history's epochs and train/test accuracies at no more than max_points evenly spaced evaluations, plus
    the memorization and grokking epochs (first evaluation at 99 % train / test accuracy), so the curves cross
    the bar where the run did; epoch 0 is left out (the curves' epoch axis is logarithmic)."""
    epochs = history["epoch"]
    kept = [i for i, e in enumerate(epochs) if e > 0]
    if len(kept) > max_points:
        step = (len(kept) - 1) / (max_points - 1)
        kept = sorted({kept[round(k * step)] for k in range(max_points)})
    crossings = {epochs.index(e) for e in (first_epoch_at(history, "train_acc"), first_epoch_at(history, "test_acc"))
                 if e is not None and e > 0}
    kept = sorted(set(kept) | crossings)
    return {"epoch": [epochs[i] for i in kept],
            **{key: [round(history[key][i], ACCURACY_DIGITS) for i in kept] for key in ("train_acc", "test_acc")}}


# ---------------------------------------------------------------- views: one figure per (x, y) pair

def axis_choices(settings: list[str]) -> tuple[list[str], list[str]]:
    """The settings the x and y dropdowns offer (at least one swept): every swept one, and on y ONE_ROW alone
    for a single setting."""
    return settings, (settings if len(settings) > 1 else [ONE_ROW])


def cell_place(x: str, x_value, y: str, y_value) -> str:
    """'train_frac = 0.3, weight_decay = 1' (the x part alone on a one-row diagram)."""
    return f"{x} = {format_value(x_value)}" + ("" if y == ONE_ROW else f", {y} = {format_value(y_value)}")


def heatmap(data: dict, x: str, y: str, title: str) -> dict:
    """regime_cells() output (each cell with its "runs") as a plotly figure: one heatmap cell per (x, y) value pair,
    coloured by its majority regime, its text and hover the counts and medians (plots._cell_text, as in the PNG
    diagram), and the list of cells a click looks up: a heatmap cell's customdata is its index there (-1: no runs)."""
    xs, ys = data["x"], data["y"]
    found = [(i, j, data["cells"][(xv, yv)]) for j, yv in enumerate(ys) for i, xv in enumerate(xs)
             if (xv, yv) in data["cells"]]

    def grid(values, empty):
        table = [[empty] * len(xs) for _ in ys]
        for (i, j, _), value in zip(found, values):
            table[j][i] = value
        return table

    places = [cell_place(x, xs[i], y, ys[j]) for i, j, _ in found]
    texts = [_cell_text(cell, REGIMES).replace("\n", "<br>") for *_, cell in found]
    n = len(CELL_CODES)
    trace = {"type": "heatmap", "x": [format_value(v) for v in xs], "y": [format_value(v) for v in ys],
             "z": grid([CELL_CODES.index(cell["regime"]) for *_, cell in found], None),
             "customdata": grid(range(len(found)), -1), "text": grid(texts, ""), "texttemplate": "%{text}",
             "hovertext": grid([f"<b>{p}</b><br>{t}<br><i>click: draw these runs' curves</i>"
                                for p, t in zip(places, texts)], ""),
             "hovertemplate": "%{hovertext}<extra></extra>", "zmin": -0.5, "zmax": n - 0.5, "xgap": 2, "ygap": 2,
             "colorscale": [[(k + edge) / n, REGIME_COLORS[name]] for k, name in enumerate(CELL_CODES)
                            for edge in (0, 1)],
             "colorbar": {"title": {"text": "majority<br>run regime"}, "tickvals": list(range(n)),
                          "ticktext": [*REGIMES, "tie (no majority)"]}}
    layout = {"title": {"text": title}, "template": "plotly_white", "height": max(360, 110 * len(ys) + 200),
              "margin": {"l": 90, "r": 30, "t": 80, "b": 70}, "plot_bgcolor": "#f2f2f2",
              "xaxis": {"type": "category", "title": {"text": _axis_label(x)}},
              "yaxis": {"type": "category", "title": {"text": "" if y == ONE_ROW else _axis_label(y)}}}
    cells = [{"place": p, "summary": t.replace("<br>", ", "), "runs": cell["runs"]}
             for p, t, (*_, cell) in zip(places, texts, found)]
    return {"data": [trace], "layout": layout, "cells": cells}


def view(rows: list[dict], x: str, y: str, settings: list[str]) -> dict:
    """The figure of the pair (x, y): regime_cells over the rows, pooling the seeds and the settings not on an
    axis, with each cell's run indices (positions in rows) for the curves."""
    pooled = [name for name in settings if name not in (x, y)]
    rows = [r | {"_index": i} | ({ONE_ROW: ""} if y == ONE_ROW else {}) for i, r in enumerate(rows)]
    data = regime_cells(rows, x, y, ignore=("seed", *pooled))
    for r in rows:
        data["cells"][(r[x], r[y])].setdefault("runs", []).append(r["_index"])
    title = diagram_title(rows, x, y).replace(f" × {ONE_ROW}", "")
    if pooled:
        title = (title.replace(" per cell", "")
                 + f"<br><sup>each cell pools the runs of every {', '.join(pooled)}</sup>")
    return heatmap(data, x, y, title)


def run_entry(record: dict, row: dict, settings: list[str]) -> dict:
    """What the curves plot needs of one run: its settings, regime and downsampled history (None if diverged)."""
    return {"settings": {name: format_value(row[name]) for name in (*settings, "seed")}, "regime": row["regime"],
            "history": downsample(record["history"]) if record["history"] else None}


def page_data(records: list[dict], db_path) -> dict:
    """Everything the page's script reads: the dropdowns' choices, one view per ordered (x, y) pair, the runs."""
    rows = [database.flat_row(r) for r in records]
    settings = swept_settings(rows)
    if not settings:
        raise SweepPageError(f"the runs in {db_path} differ only in their seed, so no setting can go on an axis: "
                             "sweep one with sweep.py --set NAME=V1,V2")
    xs, ys = axis_choices(settings)
    return {"db": str(db_path), "x_choices": xs, "y_choices": ys, "bar": ACCURACY_BAR,
            "views": {f"{x}|{y}": view(rows, x, y, settings) for x in xs for y in ys if x != y},
            "runs": [run_entry(rec, row, settings) for rec, row in zip(records, rows)]}


# ---------------------------------------------------------------- the page

SCRIPT = """
const D = JSON.parse(document.getElementById('sweep-data').textContent);
const xSel = document.getElementById('x-setting'), ySel = document.getElementById('y-setting');
const CONFIG = {displaylogo: false, responsive: true};
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22',
                '#17becf'];
let current = null, last = {x: null, y: null};

function fill(select, names, chosen) {
  for (const name of names) select.add(new Option(name, name, false, name === chosen));
}

function drawDiagram() {
  if (xSel.value === ySel.value) {  // one setting on both axes: swap, keeping the other choice
    (xSel.value === last.x ? xSel : ySel).value = xSel.value === last.x ? last.y : last.x;
  }
  last = {x: xSel.value, y: ySel.value};
  current = D.views[xSel.value + '|' + ySel.value];
  Plotly.react('phase-diagram', current.data, current.layout, CONFIG);
  drawCurves(null);
}

function runLabel(run) {
  return Object.entries(run.settings).filter(([k]) => k !== xSel.value && k !== ySel.value)
    .map(([k, v]) => k + ' ' + v).join(', ');
}

function drawCurves(cell) {
  const traces = [];
  let title = 'Click a cell of the phase diagram to draw its runs\\' accuracy curves here';
  if (cell) {
    const runs = cell.runs.map(i => D.runs[i]), drawn = runs.filter(r => r.history);
    drawn.forEach((run, k) => {
      const color = COLORS[k % COLORS.length], label = runLabel(run) + ' (' + run.regime + ')';
      for (const [split, dash] of [['train', 'dot'], ['test', 'solid']]) {
        traces.push({type: 'scatter', mode: 'lines', x: run.history.epoch, y: run.history[split + '_acc'],
                     name: split + ', ' + label, legendgroup: label, line: {color: color, dash: dash},
                     hovertemplate: split + ' %{y:.1%} at epoch %{x}<extra>' + label + '</extra>'});
      }
    });
    const missing = runs.length - drawn.length;
    title = cell.place + ': ' + cell.summary + (missing ? ' (' + missing + ' diverged: no curve)' : '');
  }
  Plotly.react('run-curves', traces, {
    title: {text: title}, template: 'plotly_white', height: 460, margin: {l: 70, r: 30, t: 70, b: 60},
    xaxis: {type: 'log', title: {text: 'epoch (log scale)'}, exponentformat: 'power'},
    yaxis: {title: {text: 'accuracy (dotted: train, solid: test)'}, tickformat: '.0%', range: [-0.02, 1.05]},
    shapes: [{type: 'line', xref: 'paper', x0: 0, x1: 1, y0: D.bar, y1: D.bar, line: {color: '#999', width: 1}}],
    legend: {font: {size: 11}}}, CONFIG);
}

fill(xSel, D.x_choices, D.x_choices[0]);
fill(ySel, D.y_choices, D.y_choices.find(name => name !== D.x_choices[0]));
xSel.addEventListener('change', drawDiagram);
ySel.addEventListener('change', drawDiagram);
drawDiagram();
document.getElementById('phase-diagram').on('plotly_click', event => {
  const k = event.points[0].customdata;
  if (k >= 0) drawCurves(current.cells[k]);
});
"""

CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:auto;padding:0 1em;color:#222}
label{margin-right:1.5em} select{font-size:15px;margin-left:.3em} .rule{font-size:13px;color:#555}
code{background:#f3f3f3;padding:0 .2em}"""


def render(data: dict) -> str:
    """The page's HTML: plotly.js once in the head, the data as a JSON script element, the dropdowns and plots."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no "</script>" inside the JSON
    n = len(data["runs"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sweep: {html.escape(data['db'])}</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>Sweep: {n} runs in <code>{html.escape(data['db'])}</code></h1>"
            f"<p><label>x axis<select id='x-setting'></select></label>"
            f"<label>y axis<select id='y-setting'></select></label> Hover over a cell for its runs per regime, "
            f"median grokking epoch and median delay; click it to draw its runs below.</p>"
            f"<div id='phase-diagram'></div>"
            f"<p class='rule'>Run regimes: {html.escape(REGIME_RULE)}. Epoch: median epoch of {ACCURACY_BAR:.0%} test "
            f"accuracy; delay: median of that epoch / the epoch of {ACCURACY_BAR:.0%} train accuracy (both over the "
            f"runs that reached {ACCURACY_BAR:.0%} test). Curves: at most {MAX_POINTS} evaluations per run.</p>"
            f"<div id='run-curves'></div>"
            f"<script type='application/json' id='sweep-data'>{payload}</script><script>{SCRIPT}</script>"
            f"</body></html>")


def default_out(db_path) -> Path:
    """Where the page goes by default: beside the database, same name, .html (results/sweep.html)."""
    return Path(db_path).with_suffix(".html")


def build_sweep_page(db_path, out=None) -> Path:
    """Write the sweep page of the database at db_path (default: default_out(db_path)) and return its path.
    Raises SweepDBError for a missing or foreign database, SweepPageError for one the page cannot show."""
    page = render(page_data(load_runs(db_path), db_path))
    out = Path(out) if out else default_out(db_path)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out
