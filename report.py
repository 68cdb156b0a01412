"""An interactive report of a run: one self-contained HTML page (plotly, works offline from file://).

    python report.py                                             # checkpoints/ + results/ -> results/report.html
    python report.py --checkpoint-dir /tmp/c --results-dir /tmp/r

Reads what the other scripts wrote: checkpoints/model_final.pth (its history) and snapshots/ (train.py),
results/analysis_summary.json and neuron_ranking.json (interpretability.py), results/progress_measures.json
(interpretability.py --progress). A part whose input is missing says which command fills it.
In a notebook: build_report(checkpoint_dir, results_dir) -> path, or any *_figure function on plain data.
"""
import argparse
import base64
import html
import json
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from analysis import attention, fourier
from analysis.circuit import Grid, grid_activations, hidden_input_power, model_key_frequencies, token_embedding
from analysis.neurons import reindex_by_frequency
from analysis.progress_measures import describe
from analysis.summary import findings
from config import ARCH_FLAGS
from core.checkpoint import CheckpointError, load_model, run_snapshots
from core.utils import OutputDirError, atomic_write, check_output_dir
from dataset import SYMBOLS
from sweeps.database import SweepDBError
from sweeps.page import SweepPageError, build_sweep_page

TRAIN, TEST, KEY, OTHER = "#1f77b4", "#ff7f0e", "#d62728", "#9e9e9e"
NEURON_BYTES = 6_000_000  # the explorer's share of the page: 32 neurons at p = 113, fewer for a larger p
TRAINING_PHASE_COLORS = {"memorization": "rgba(31,119,180,0.12)", "circuit formation": "rgba(255,215,0,0.18)",
                "clean-up": "rgba(44,160,44,0.14)"}


# ---------------------------------------------------------------- inputs: plain data from the files

def load_run(checkpoint_dir="checkpoints", results_dir="results") -> dict:
    """Everything the report reads; a missing or unreadable input is None (its note says why)."""
    ckpt_dir, res = Path(checkpoint_dir), Path(results_dir)
    run = {"checkpoint_dir": ckpt_dir, "results_dir": res, "notes": {}}
    for name in ("training_summary", "analysis_summary", "neuron_ranking", "progress_measures"):
        try:
            run[name] = json.loads((res / f"{name}.json").read_text())
        except (OSError, ValueError):  # missing or unreadable: that part names the command that writes it
            run[name] = None
    run["model"] = run["ckpt"] = run["grid"] = None
    try:
        run["model"], run["ckpt"] = load_model(ckpt_dir if ckpt_dir.is_file() else ckpt_dir / "model_final.pth")
        cfg = run["ckpt"]["config"]
        run["grid"] = Grid(cfg["p"], cfg["op"], run["ckpt"]["train_idx"], run["ckpt"]["test_idx"])
    except CheckpointError as err:
        run["notes"]["model"] = str(err)
    run["snapshots"] = run_snapshots(ckpt_dir) if run["ckpt"] is not None else []
    run["keys"] = ((run["analysis_summary"] or {}).get("key_frequencies")
                   or (model_key_frequencies(run["model"], run["grid"]) if run["model"] is not None else []))
    return run


def command(run: dict, which: str) -> str:
    """The command that fills a missing part, with this run's folders where they are not the defaults."""
    ckpt, res = str(run["checkpoint_dir"]), str(run["results_dir"])
    flags = {"train": f" --checkpoint-dir {ckpt} --results-dir {res}",
             "analysis": f" --checkpoint {ckpt}/model_final.pth --results-dir {res}",
             "progress": f" --progress --checkpoint {ckpt} --results-dir {res}"}[which]
    base = {"train": "python train.py", "analysis": "python interpretability.py",
            "progress": "python interpretability.py"}[which]
    if (ckpt, res) == ("checkpoints", "results"):
        flags = " --progress" if which == "progress" else ""
    return base + flags


def snapshot_epoch(snapshot) -> int:
    """A snapshot's epoch without loading it: train.py names its files epoch_NNNNN.pth; a demo file's are dicts."""
    return snapshot["epoch"] if isinstance(snapshot, dict) else int(Path(snapshot).stem.split("_")[-1])


def snapshot_series(snapshots, grid, keys: list[int], measured: dict | None = None) -> list[dict]:
    """Per snapshot: epoch, the embedding's power share per frequency, key share, train/test accuracy. Taken from
    `measured` where it has the snapshot's epoch: progress_measures.json's series (the same measures of the same
    snapshots, spectra included), or train.py's history (accuracies only); the rest is measured here."""
    measured = measured or {"epoch": []}
    index = {e: i for i, e in enumerate(measured["epoch"])}
    out = []
    with torch.no_grad():
        for snapshot in snapshots:
            i = index.get(snapshot_epoch(snapshot))
            if i is not None and measured.get("embedding_power"):
                power, epoch = torch.tensor(measured["embedding_power"][i], dtype=torch.float64), measured["epoch"][i]
            else:
                model, ckpt = load_model(snapshot)
                power, epoch = fourier.power_per_frequency(grid.basis.table(token_embedding(model))), ckpt["epoch"]
            accuracies = ((measured["train_acc"][i], measured["test_acc"][i]) if i is not None else
                          (grid.score(model, "train")[1], grid.score(model, "test")[1]))  # chunk by chunk
            out.append(series_row(epoch, power, *accuracies, keys))
    return sorted(out, key=lambda s: s["epoch"])


def series_row(epoch: int, power: torch.Tensor, train_acc: float, test_acc: float, keys: list[int]) -> dict:
    return {"epoch": epoch, "share": (power / power.sum()).numpy(), "key_share": fourier.power_fraction(power, keys),
            "train_acc": train_acc, "test_acc": test_acc}


def neuron_activations(model, grid, neurons: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row of neuron_ranking.json: its activation over (a, b), raw and re-ordered by its frequency."""
    with torch.no_grad():
        hidden = grid_activations(model, grid)["hidden_post"]
    hidden = hidden if grid.basis is None else grid.basis.grid(hidden)  # over the basis's positions (mul: logs)
    return [(hidden[..., n["neuron"]].numpy(),
             reindex_by_frequency(hidden[..., n["neuron"]], n["dominant_frequency"]).numpy())
            for n in neurons]


# ---------------------------------------------------------------- figures: plain data in, figures out

def _f32(values) -> np.ndarray:
    """float32 (plotly sends numpy arrays as binary): half the bytes of float64, ample for a picture."""
    return np.asarray(values, dtype=np.float32)


def _typed(array: np.ndarray) -> dict:
    """A float32 array as plotly.js's typed-array spec, for data inside buttons (plotly leaves those as text)."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    return {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode(), "shape": ", ".join(map(str, a.shape))}


def add_training_phase_bands(fig, phases: dict | None, end: int, first: float = 0, log: bool = False, names: bool = True,
                    **where) -> None:
    """Shade memorization / circuit formation / clean-up (training_phases) on the x axis in `where`,
    named at the top (log: a log axis, where plotly places annotations, unlike shapes, by log10 of the epoch)."""
    if not phases or phases.get("memorization_end") is None:
        return
    memorized, start, stop = phases["memorization_end"], phases["cleanup_start"], phases["cleanup_end"]
    spans = [("memorization", first, memorized)]
    if phases.get("generalized"):
        spans.append(("circuit formation", memorized, start if start is not None else end))
        if start is not None:
            spans.append(("clean-up", start, stop if stop is not None else end))
    for name, x0, x1 in spans:  # shapes take the epoch, annotations on a log axis its log10
        fig.add_vrect(x0=max(x0, first), x1=x1, fillcolor=TRAINING_PHASE_COLORS[name], line_width=0, layer="below", **where)
        if names:
            fig.add_annotation(x=np.log10(max(x0, first)) if log else x0, y=1, yref="y domain", text=name,
                               showarrow=False, xanchor="left", yanchor="top", font_size=10, **where)


def training_figure(history: dict, phases: dict | None = None) -> go.Figure:
    """Loss (log-log), accuracy and weight norm against epoch, phases shaded (epoch 0 left out: log axis)."""
    keep = [i for i, e in enumerate(history["epoch"]) if e > 0]
    col = lambda key: _f32([history[key][i] for i in keep])  # noqa: E731
    epochs = col("epoch")
    fig = make_subplots(1, 3, subplot_titles=("Loss (log-log)", "Accuracy", "Weight norm (sum of squared weights)"),
                        horizontal_spacing=0.07)
    for name, color in (("train", TRAIN), ("test", TEST)):
        fig.add_scatter(x=epochs, y=col(f"{name}_loss"), name=f"{name} loss", line_color=color, row=1, col=1,
                        hovertemplate="epoch %{x}: %{y:.3g}")
        fig.add_scatter(x=epochs, y=col(f"{name}_acc"), name=f"{name} accuracy", line_color=color, row=1, col=2,
                        line_dash="dot", hovertemplate="epoch %{x}: %{y:.1%}")
    fig.add_scatter(x=epochs, y=col("weight_norm"), name="weight norm", line_color="#2ca02c", row=1, col=3,
                    hovertemplate="epoch %{x}: %{y:.4g}")
    fig.update_xaxes(type="log", title_text="epoch (log scale)", exponentformat="power")
    fig.update_yaxes(type="log", title_text="cross-entropy (log scale)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.12], row=1, col=2)
    for c in (1, 2, 3):
        add_training_phase_bands(fig, phases, int(epochs[-1]), first=float(epochs[0]), log=True, row=1, col=c)
    fig.update_layout(height=420, hovermode="x unified", legend_orientation="h", legend_y=-0.2)
    return fig


def epoch_slider_figure(snapshots: list[dict], keys: list[int], phases: dict | None = None) -> go.Figure:
    """Left: the embedding's Fourier spectrum at the slider's epoch (key frequencies red); right: accuracy
    and the key frequencies' share over the snapshots, with the slider's epoch marked."""
    freqs = list(range(1, len(snapshots[0]["share"]) + 1))
    epochs = [s["epoch"] for s in snapshots]
    fig = make_subplots(1, 2, column_widths=[0.6, 0.4], horizontal_spacing=0.08, subplot_titles=(
        "Embedding W_E: share of Fourier power per frequency",
        "Over training (dot: the slider's epoch; shaded: the training phases)"))
    fig.add_bar(x=freqs, y=_f32(snapshots[-1]["share"]), marker_color=[KEY if k in keys else OTHER for k in freqs],
                name="power share", hovertemplate="frequency %{x}: %{y:.3g}", row=1, col=1)
    for key, name, color in (("train_acc", "train accuracy", TRAIN), ("test_acc", "test accuracy", TEST),
                             ("key_share", "key frequencies' share", KEY)):
        fig.add_scatter(x=epochs, y=_f32([s[key] for s in snapshots]), name=name, line_color=color,
                        hovertemplate="epoch %{x}: %{y:.1%}", row=1, col=2)
    point = lambda s: [s["train_acc"], s["test_acc"], s["key_share"]]  # noqa: E731
    fig.add_scatter(x=[epochs[-1]] * 3, y=point(snapshots[-1]), mode="markers", showlegend=False,
                    marker=dict(size=11, color=[TRAIN, TEST, KEY], line_width=1), row=1, col=2,
                    hovertemplate="%{y:.1%}", name="at the slider's epoch")
    title = lambda s: (f"epoch {s['epoch']}: train accuracy {s['train_acc']:.1%}, "  # noqa: E731
                       f"test accuracy {s['test_acc']:.1%}; key frequencies {keys or '(none)'} hold "
                       f"{s['key_share']:.1%} of the embedding's power")
    steps = [dict(method="update", label=str(s["epoch"]),
                  args=[{"y": [_f32(s["share"]), point(s)], "x": [freqs, [s["epoch"]] * 3]}, {"title.text": title(s)},
                        [0, 4]]) for s in snapshots]
    lowest = min(float(s["share"][s["share"] > 0].min()) for s in snapshots)
    fig.update_yaxes(type="log", range=[np.log10(lowest) - 0.3, 0.05], title_text="share (log scale)",
                     exponentformat="power", row=1, col=1)
    fig.update_xaxes(title_text="frequency k (w_k = 2πk/p)", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.05], row=1, col=2)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    add_training_phase_bands(fig, phases, epochs[-1], names=False, row=1, col=2)  # (names: in the training curves)
    fig.update_layout(height=580, title_text=title(snapshots[-1]), title_font_size=13, legend_orientation="h",
                      legend_y=-0.16, sliders=[dict(active=len(steps) - 1, steps=steps, y=-0.24,
                                                    currentvalue_prefix="epoch ", pad_t=30)])
    return fig


def neuron_label(n: dict) -> str:
    cluster = f"cluster {n['cluster']}" if n["cluster"] is not None else "no cluster (< 50% in one key frequency)"
    return (f"neuron {n['neuron']}, causal rank {n['causal_rank'] + 1}: frequency {n['dominant_frequency']} "
            f"({n['dominant_frequency_fraction']:.0%} of its variance), {cluster}; "
            f"mean-ablated: loss {n['mean_ablation_loss_increase']:+.3g}")


def neuron_figure(neurons: list[dict], acts: list[tuple[np.ndarray, np.ndarray]]) -> go.Figure:
    """A dropdown over neurons (rows of neuron_ranking.json); per neuron its activation over (a, b),
    raw and re-ordered so that its frequency k shows as one smooth wave."""
    fig = make_subplots(1, 2, horizontal_spacing=0.1, subplot_titles=(
        "activation over (a, b)", "re-ordered by its frequency k: row k·a mod p, column k·b mod p"))
    raw, reordered = acts[0]
    for c, z, tip in ((1, raw, "a %{y}, b %{x}"), (2, reordered, "k·a %{y}, k·b %{x}")):
        fig.add_heatmap(z=_f32(z), coloraxis="coloraxis", row=1, col=c, hovertemplate=tip + ": %{z:.3g}<extra></extra>")
    buttons = [dict(method="update", label=f"neuron {n['neuron']} (rank {n['causal_rank'] + 1})",
                    args=[{"z": [_typed(r), _typed(o)]}, {"title.text": neuron_label(n)}, [0, 1]])
               for n, (r, o) in zip(neurons, acts)]
    fig.update_xaxes(title_text="b", row=1, col=1)
    fig.update_yaxes(title_text="a", row=1, col=1)
    fig.update_xaxes(title_text="k·b mod p", row=1, col=2)
    fig.update_yaxes(title_text="k·a mod p", row=1, col=2)
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    fig.update_layout(height=560, title_text=neuron_label(neurons[0]), title_font_size=13, title_y=0.97,
                      coloraxis=dict(colorscale="Viridis", colorbar_title="hidden_post"), margin_t=110,
                      updatemenus=[dict(buttons=buttons, x=0, xanchor="left", y=1.2, yanchor="top")])
    return fig


def spectrum_figure(embed_power, hidden_power, keys: list[int], threshold: float) -> go.Figure:
    """Share of power per frequency of the embedding and of the neurons' input, keys marked, and the key rule's
    threshold (fourier.key_threshold of the neurons' input power)."""
    fig = make_subplots(1, 2, subplot_titles=("Embedding W_E", "Input to the hidden neurons (operands a + b)"))
    freqs = list(range(1, len(embed_power) + 1))
    for c, power in ((1, np.asarray(embed_power)), (2, np.asarray(hidden_power))):
        fig.add_bar(x=freqs, y=_f32(power / power.sum()), marker_color=[KEY if k in keys else OTHER for k in freqs],
                    showlegend=False, hovertemplate="frequency %{x}: %{y:.3g}<extra></extra>", row=1, col=c)
    level = threshold / float(np.sum(hidden_power))
    fig.add_scatter(x=[0.5, len(freqs) + 0.5], y=[level, level], mode="lines", line=dict(dash="dash", color=KEY),
                    name="key-frequency threshold (10x the median power)", row=1, col=2)
    fig.update_yaxes(type="log", title_text="share of power (log scale)", exponentformat="power")
    fig.update_xaxes(title_text="frequency k")
    fig.update_layout(height=420, title_font_size=13,
                      title_text=f"Fourier spectra of the final model; key frequencies (red): {keys or 'none'}",
                      legend_orientation="h", legend_x=0.55, legend_y=-0.2)
    return fig


def ablation_figure(ablations: dict, circuit_size, base_acc: float) -> go.Figure:
    """Accuracy when the top-k neurons (causal rank) or k random ones are mean-ablated, or are the only ones kept."""
    ks = [str(k) for k in ablations["k"]]
    fig = make_subplots(1, 2, subplot_titles=("Mean-ablate k neurons", "Keep only k neurons (mean-ablate the rest)"))
    for c, mode in ((1, "ablate"), (2, "keep")):
        a = ablations[mode]
        fig.add_scatter(x=ks, y=a["top_acc"], name="top k by causal rank", line_color=TRAIN, showlegend=c == 1,
                        mode="lines+markers", hovertemplate="k=%{x}: %{y:.1%}", row=1, col=c)
        fig.add_scatter(x=ks, y=a["random_acc_mean"], error_y=dict(array=a["random_acc_std"]),
                        name="k random (mean ± std)", line_color=TEST, line_dash="dash", showlegend=c == 1,
                        mode="lines+markers", hovertemplate="k=%{x}: %{y:.1%}", row=1, col=c)
        fig.add_hline(y=base_acc, line_dash="dot", line_color="gray", row=1, col=c)
    fig.update_xaxes(type="category", title_text="k (neurons)")
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.05], title_text="accuracy on all pairs")
    fig.update_layout(height=400, title_font_size=13, legend_orientation="h", legend_y=-0.25,
                      title_text=f"Circuit size: {circuit_size} neurons keep >= 99% accuracy "
                                 "(dotted: the unablated model)")
    return fig


def frequency_ablation_figure(results: list[dict], base: dict) -> go.Figure:
    """Accuracy and loss after projecting frequencies out of the embedding (analysis_summary 'frequency_ablation')."""
    names = ["none removed"] + [r["ablation"] for r in results]
    fig = make_subplots(1, 2, subplot_titles=("Accuracy on all pairs", "Loss on all pairs (log scale)"))
    fig.add_bar(x=names, y=[base["acc"]] + [r["acc"] for r in results], marker_color=TRAIN, showlegend=False,
                hovertemplate="%{x}: %{y:.1%}<extra></extra>", row=1, col=1)
    fig.add_bar(x=names, y=[base["loss"]] + [r["loss"] for r in results], marker_color=TEST, showlegend=False,
                hovertemplate="%{x}: %{y:.3g}<extra></extra>", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    fig.update_layout(height=400, title_text="Removing frequencies from the embedding W_E", title_font_size=13)
    return fig


def attention_figure(patterns: np.ndarray, heads: list[dict]) -> go.Figure:
    """patterns (n_heads, 2, p, p): attention from '=' to a and to b over (a, b); heads: summary['attention']."""
    titles = [f"head {h['head']}: '=' → {t} (mean {h[f'mean_to_{t}']:.0%}); head ablated: acc {h['acc']:.1%}"
              for h in heads for t in ("a", "b")]
    fig = make_subplots(len(heads), 2, subplot_titles=titles, vertical_spacing=0.3 / len(heads))
    for h in range(len(heads)):
        for t in range(2):
            fig.add_heatmap(z=_f32(patterns[h, t]), coloraxis="coloraxis", row=h + 1, col=t + 1,
                            hovertemplate="a %{y}, b %{x}: %{z:.2f}<extra></extra>")
    fig.update_layout(height=300 * len(heads), coloraxis=dict(colorscale="Magma", cmin=0, cmax=1,
                                                              colorbar_title="attention"),
                      title_text="Attention from the '=' position to each operand", title_font_size=13)
    return fig


# ---------------------------------------------------------------- the page

def sections(run: dict, top: int = 32) -> list[tuple[str, str, object]]:
    """(title, one-line description, figure or a note saying which command fills the part)."""
    model, ckpt, grid, analysis = run["model"], run["ckpt"], run["grid"], run["analysis_summary"]
    prog, ranking = run["progress_measures"], run["neuron_ranking"]
    missing = lambda which, what: f"Missing {what}: run `{command(run, which)}`."  # noqa: E731
    no_model = missing("train", "checkpoints") + (f" ({run['notes']['model']})" if "model" in run["notes"] else "")
    phases = prog.get("training_phases") if prog else None
    out = [("Training curves", "Hover for values; shaded: the training phases of progress_measures.json."
            + ("" if prog else " " + missing("progress", "training phases")),
            training_figure(ckpt["history"], phases) if ckpt else no_model)]
    fig = (no_model if grid is None else missing("train", "snapshots") if not run["snapshots"] else
           f"No Fourier analysis: {grid.no_basis}." if grid.basis is None else None)
    if fig is None:
        try:
            same_run = prog and ckpt and prog.get("run_id") == ckpt.get("run_id")  # its measures are this run's
            # else train.py's history has the accuracies (against the labels trained on: true ones without noise)
            measured = (prog["series"] if same_run else None if ckpt["config"].get("label_noise") else ckpt["history"])
            series = snapshot_series(run["snapshots"], grid, run["keys"], measured)
            fig = epoch_slider_figure(series, run["keys"], phases)
        except CheckpointError as err:
            fig = f"Could not read the snapshots: {err}"
    out.append(("Epoch slider", "Drag the slider: the embedding's spectrum at each training snapshot.", fig))
    if ranking and model is not None:
        top = min(top, max(1, NEURON_BYTES // (grid.p ** 2 * 11)))  # 2 heatmaps of float32 in base64 per neuron
        neurons = ranking["neurons"][:top]
        fig = neuron_figure(neurons, neuron_activations(model, grid, neurons))
    else:
        fig = missing("analysis", "neuron_ranking.json") if model is not None else no_model
    out.append(("Neuron explorer", f"Pick one of the top {top} neurons by causal rank (dropdown, top left). Left: its "
                "activation over all pairs, a fine periodic grid; right: the same values re-ordered by its "
                "frequency k, where it shows as one smooth wave.", fig))
    fig = no_model
    if model is not None and grid.basis is None:
        fig = f"No Fourier analysis: {grid.no_basis}."
    elif model is not None:
        with torch.no_grad():
            embed = fourier.power_per_frequency(grid.basis.table(token_embedding(model))).numpy()
            power_a, power_b = hidden_input_power(model, grid)
        hidden = (power_a + power_b).numpy()
        fig = spectrum_figure(embed, hidden, run["keys"], fourier.key_threshold(torch.from_numpy(hidden)))
    out.append(("Fourier spectrum", f"The final model's power per frequency over "
                f"{grid.basis.name if grid is not None and grid.basis is not None else 'Z_p'}.", fig))
    out.append(("Ablation curves", "Mean-ablating neurons by causal rank vs at random.",
                ablation_figure(analysis["ablations"], analysis["circuit_size"], analysis["losses"]["all"]["acc"])
                if analysis else missing("analysis", "analysis_summary.json")))
    out.append(("Frequency ablation", "Each key frequency removed from the embedding, then all the others.",
                frequency_ablation_figure(analysis["frequency_ablation"], analysis["losses"]["all"])
                if analysis and "frequency_ablation" in analysis else
                f"No Fourier analysis: {analysis['no_basis']}." if analysis else missing("analysis", "analysis_summary.json")))
    if ckpt and ckpt["config"]["model"].get("arch") == "transformer":
        fig = (attention_figure(attention.attention_patterns(model, grid).numpy(), analysis["attention"])
               if analysis and "attention" in analysis else missing("analysis", "analysis_summary.json"))
        out.append(("Attention heads", "Each head's attention from '=' to a and b over all pairs.", fig))
    return out


def findings_html(run: dict) -> str:
    t, a, prog = run["training_summary"], run["analysis_summary"], run["progress_measures"]
    lines = []
    if t:
        lines.append(f"Memorized (train accuracy >= 99%) at epoch {t['memorization_epoch']}; "
                     f"generalized (test accuracy >= 99%) at epoch {t['grokking_epoch']}; "
                     f"{t['epochs_run']} epochs run.")
    lines += [describe(prog)] if prog else [f"Missing training phases: run `{command(run, 'progress')}`."]
    lines += findings(a) if a else [f"Missing analysis: run `{command(run, 'analysis')}`."]
    if a and run["ckpt"] and a.get("run_id") != run["ckpt"].get("run_id"):
        lines.append(f"Warning: analysis_summary.json is of run {a.get('run_id')}, the checkpoint of run "
                     f"{run['ckpt'].get('run_id')}: rerun `{command(run, 'analysis')}`.")
    return "<ul>" + "".join(f"<li>{_md(line)}</li>" for line in lines) + "</ul>"


def config_html(run: dict) -> str:
    config = (run["training_summary"] or {}).get("config") or (run["ckpt"] or {}).get("config")
    if not config:
        return f"<p class='missing'>{_md('Missing config: run `' + command(run, 'train') + '`.')}</p>"
    other_arch = {f for flags in ARCH_FLAGS.values() for f in flags} - set(ARCH_FLAGS.get(config.get("arch"), ()))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in config.items()
                   if not isinstance(v, dict) and k not in other_arch)  # only the run's architecture's fields
    return f"<table>{rows}</table>"


def _md(text: str) -> str:
    """Escape, then `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:1.6em} .missing{color:#a33} code{background:#f3f3f3;padding:0 .2em}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:2px 8px;text-align:left}
nav a{margin-right:1em}"""


def render(run: dict, top: int = 32) -> str:
    parts = sections(run, top)
    nav = " ".join(f"<a href='#{_slug(t)}'>{t}</a>" for t, _, _ in parts)
    body = []
    for title, about, content in parts:
        if isinstance(content, go.Figure):
            content.update_layout(template="plotly_white", margin_l=60, margin_r=30)
            if content.layout.margin.t is None:
                content.update_layout(margin_t=70)
            div = pio.to_html(content, include_plotlyjs=False, full_html=False, div_id=_slug(title) + "-plot",
                              config={"displaylogo": False, "responsive": True})
            about = _md(about)
        else:
            div, about = "", f"<span class='missing'>{_md(content)}</span>"
        body.append(f"<section id='{_slug(title)}'><h2>{title}</h2><p>{about}</p>{div}</section>")
    cfg = (run["ckpt"] or {}).get("config") or {}
    name = f"(a {SYMBOLS.get(cfg.get('op'), '?')} b) mod {cfg.get('p', '?')}, {cfg.get('arch', '?')}" if cfg else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Grokking report {html.escape(name)}</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>Grokking report: {html.escape(name)}</h1>"
            f"<p>checkpoints: <code>{html.escape(str(run['checkpoint_dir']))}</code>, "
            f"results: <code>{html.escape(str(run['results_dir']))}</code></p><nav>{nav}</nav>"
            f"<section id='findings'><h2>Findings</h2>{findings_html(run)}</section>{''.join(body)}"
            f"<section id='config'><h2>Config</h2>{config_html(run)}</section></body></html>")


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def build_report(checkpoint_dir="checkpoints", results_dir="results", out=None, top: int = 32) -> Path:
    """Write the report (default results_dir/report.html) and return its path."""
    out = Path(out) if out else Path(results_dir) / "report.html"
    page = render(load_run(checkpoint_dir, results_dir), top)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write an interactive, self-contained HTML report of a run.")
    parser.add_argument("--checkpoint-dir", "--checkpoint", default="checkpoints",
                        help="folder with model_final.pth and snapshots/, or a TransformerLens grokking-demo file")
    parser.add_argument("--results-dir", default="results", help="folder with the JSON files; report.html goes here")
    parser.add_argument("--neurons", type=int, default=32, help="neurons in the explorer (top by causal rank)")
    parser.add_argument("--sweep", metavar="DB", help="instead of a run's report: the page of this sweep database "
                        "(sweeps/page.py), written beside it (results/sweep.sqlite -> results/sweep.html)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.sweep:
            path = build_sweep_page(args.sweep)
        else:
            check_output_dir(args.results_dir, "--results-dir")
            path = build_report(args.checkpoint_dir, args.results_dir, top=args.neurons)
    except (OutputDirError, OSError, SweepDBError, SweepPageError) as err:  # the last two: a database it cannot show
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s): "
          f"open it in a browser (file://{path.resolve()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
