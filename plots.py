"""Plot functions: each takes arrays and a path, writes one PNG and closes its figure."""
import multiprocessing
import textwrap
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

TRAIN_COLOR, TEST_COLOR = "tab:blue", "tab:orange"


def _mark_epochs(ax, memorization_epoch, grokking_epoch):
    if memorization_epoch is not None:
        ax.axvline(memorization_epoch, color=TRAIN_COLOR, ls="--", lw=1, label=f"memorized (epoch {memorization_epoch})")
    if grokking_epoch is not None:
        ax.axvline(grokking_epoch, color=TEST_COLOR, ls="--", lw=1, label=f"grokked (epoch {grokking_epoch})")


def _save(fig, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_training_curves(history: dict, memorization_epoch, grokking_epoch, path, title: str = "") -> None:
    """Loss (log-log), accuracy and weight norm against epoch, with the two key epochs marked."""
    epochs = history["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), gridspec_kw={"wspace": 0.3})
    ax = axes[0]
    ax.plot(epochs, history["train_loss"], color=TRAIN_COLOR, label="train")
    ax.plot(epochs, history["test_loss"], color=TEST_COLOR, label="test")
    ax.set(xscale="log", yscale="log", xlabel="epoch (log scale)", ylabel="cross-entropy loss (log scale)",
           title="Loss")
    ax = axes[1]
    ax.plot(epochs, [100 * x for x in history["train_acc"]], color=TRAIN_COLOR, label="train")
    ax.plot(epochs, [100 * x for x in history["test_acc"]], color=TEST_COLOR, label="test")
    ax.set(xscale="log", xlabel="epoch (log scale)", ylabel="accuracy (%)", ylim=(-2, 102),
           title="Accuracy (grokking: test rises long after train)")
    ax = axes[2]
    ax.plot(epochs, history["weight_norm"], color="tab:green")
    ax.set(xscale="log", xlabel="epoch (log scale)", ylabel="sum of squared weights",
           title="Weight norm (falls in a grokking run's clean-up)")
    for ax in axes:
        _mark_epochs(ax, memorization_epoch, grokking_epoch)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="center right")
    fig.suptitle(title or "Training curves")
    _save(fig, path)


def plot_neuron_heatmaps(acts, labels, path, axes_names=("a", "b"), cols: int = 4) -> None:
    """acts: (n, p, p) activations of n neurons over (a, b) (rows a); one heatmap each, one colour scale.
    axes_names: what the rows and columns index (for mul/div, the discrete logarithms of a and b)."""
    n = len(acts)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False, layout="constrained")
    vmin, vmax = float(acts.min()), float(acts.max())  # one colour scale, so panels compare directly
    ticks = [t for t in MaxNLocator(6, integer=True).tick_values(0, acts.shape[-1] - 1) if 0 <= t < acts.shape[-1]]
    for (row, col), ax in np.ndenumerate(axes):
        bottom = (row + 1) * cols + col >= n  # the lowest panel of its column: axes labelled on the outer panels
        ax.set_xticks(ticks if bottom else [])
        ax.set_yticks(ticks if col == 0 else [])
        ax.set_xlabel(axes_names[1] if bottom else "", fontsize=8)
        ax.set_ylabel(axes_names[0] if col == 0 else "", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax, act, label in zip(axes.flat, acts, labels):
        im = ax.imshow(act, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(label, fontsize=8)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="activation (hidden_post)")
    fig.suptitle(f"Activations of the most important neurons (causal rank) over all inputs ({', '.join(axes_names)})\n"
                 "fine periodic grids: each neuron follows one frequency k (activation_overview.png re-orders "
                 "the inputs so that it shows as one smooth wave)", fontsize=10)
    _save(fig, path)


def tile_panels(acts, cols: int, max_side: int = 256):
    """(mosaic, corners, side): the (n, h, w) panels, each scaled from its min (0) to its max (1) and thinned
    to at most max_side points a side, tiled row by row into one float32 image drawn with origin="lower" (the
    first row on top), with NaN gaps between panels and room above each for a title. corners[i]: the (x, y)
    of panel i's lower left corner in the mosaic; side: (height, width) of a panel there."""
    n = len(acts)
    rows = max(1, -(-n // cols))
    stride = -(-max(acts.shape[1:]) // max_side)
    thinned = acts[:, ::stride, ::stride]
    low, high = thinned.min(axis=(1, 2), keepdims=True), thinned.max(axis=(1, 2), keepdims=True)
    scaled = (thinned - low) / np.where(high > low, high - low, 1)
    height, width = scaled.shape[1:]
    step_x, step_y = width + max(2, width // 25), height + max(6, height // 5)
    mosaic = np.full((rows * step_y, cols * step_x), np.nan, dtype=np.float32)
    corners = []
    for i, panel in enumerate(scaled):
        row, col = divmod(i, cols)
        x, y = col * step_x, (rows - 1 - row) * step_y
        mosaic[y:y + height, x:x + width] = panel
        corners.append((x, y))
    return mosaic, corners, (height, width)


def plot_neuron_overview(acts, labels, path, axes_names=("a", "b"), cols: int = 8) -> None:
    """Many neurons at a glance, each re-indexed by its own frequency; colours scaled per neuron. One image of
    tiled panels (tile_panels), not one axes per panel: 64 small axes took most of the drawing time."""
    rows = max(1, -(-len(acts) // cols))
    mosaic, corners, (height, width) = tile_panels(acts, cols)
    fig, ax = plt.subplots(figsize=(1.9 * cols, 2.0 * rows + 1), layout="constrained")
    ax.imshow(mosaic, origin="lower", cmap=plt.get_cmap("viridis").with_extremes(bad="white"),
              interpolation="nearest")
    for (x, y), label in zip(corners, labels):
        ax.text(x + width / 2, y + height * 1.02, label, ha="center", va="bottom", fontsize=7)
    ax.set_axis_off()
    fig.supxlabel(f"k·({axes_names[1]}) mod n  (each panel re-indexed by its neuron's frequency k)", fontsize=9)
    fig.supylabel(f"k·({axes_names[0]}) mod n", fontsize=9)
    fig.suptitle("Top neurons by causal rank, inputs re-ordered so a frequency-k wave looks like frequency 1\n"
                 "(colour: activation, yellow high, purple low, scaled per panel)", fontsize=10)
    _save(fig, path)


def plot_neuron_ranking(variance, mean_increase, zero_increase, agreement, path) -> None:
    floor = 1e-9  # log axes: smaller (or negative) increases are drawn at this floor
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"wspace": 0.3})
    ax = axes[0]
    ax.scatter(variance, mean_increase.clip(min=floor), s=10, alpha=0.7)
    ax.set(xscale="log", yscale="log", xlabel="activation variance over all inputs (log scale)",
           ylabel=f"loss increase when mean-ablated (log; < {floor:g} drawn at it)",
           title=f"Activation vs causal importance per neuron\nSpearman {agreement['spearman']:.2f}, "
                 f"top-10 overlap {agreement['top10_overlap']:.0%}")
    ax = axes[1]
    rank = range(1, len(mean_increase) + 1)
    ax.plot(rank, sorted(mean_increase.clip(min=floor), reverse=True), label="mean ablation")
    ax.plot(rank, sorted(zero_increase.clip(min=floor), reverse=True), label="zero ablation")
    ax.set(xscale="log", yscale="log", xlabel="neuron rank (log scale)", ylabel="loss increase (log scale)",
           title="Single-neuron ablation: loss increase, sorted")
    ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def plot_ablation_curves(curves, keep_acc, circuit_size, base_acc, path) -> None:
    """Accuracy when the top-k neurons are ablated (left) or are the only ones kept (right)."""
    ks = curves["k"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, mode, title in ((axes[0], "ablate", "Mean-ablate k neurons"),
                            (axes[1], "keep", "Keep only k neurons (mean-ablate the rest)")):
        c = curves[mode]
        x = [k + 0.5 for k in ks]  # shift by 0.5 so k = 0 fits on the log axis
        ax.plot(x, [100 * a for a in c["top_acc"]], "o-", label="top k by causal rank")
        mean, std = [100 * a for a in c["random_acc_mean"]], [100 * s for s in c["random_acc_std"]]
        ax.errorbar(x, mean, yerr=std, fmt="s--", capsize=3, label="k random neurons (mean ± std)")
        ax.axhline(100 * base_acc, color="gray", lw=1, ls=":", label="unablated model")
        ax.set(xscale="log", xlabel="k + 0.5 (log scale)", ylabel="accuracy on all pairs (%)", title=title,
               ylim=(-2, 102))
        ax.grid(alpha=0.3, which="both")
    axes[1].plot([k + 0.5 for k in range(len(keep_acc))], [100 * a for a in keep_acc], lw=1, alpha=0.6,
                 color="tab:blue", label="top k, every k")
    if circuit_size is not None:
        axes[1].axvline(circuit_size + 0.5, color="tab:red", ls="--", label=f"circuit size {circuit_size} (99%)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    _save(fig, path)


def plot_fourier_spectrum(freqs, embed_power, hidden_power, keys, threshold, path, basis_name: str = "Z_p") -> None:
    """Power per frequency of the embedding and of the neurons' input (both operands summed: what the
    key-frequency rule reads), with the rule's threshold (absolute power, same units as hidden_power)."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for ax, power, name, title in ((axes[0], embed_power, "embedding W_E", "Embedding: power per frequency"),
                                   (axes[1], hidden_power, "operands a + b",
                                    "Input to the hidden neurons: power per frequency")):
        share = power / power.sum()
        lowest = float(share[share > 0].min()) if (share > 0).any() else 1.0
        ax.bar(freqs, share, width=0.8, label=name)
        # log scale: the key frequencies stand orders of magnitude above the rest
        ax.set(xlabel=f"frequency k over {basis_name} (w_k = 2πk/n)", ylabel="share of power, log scale (constant excluded)",
               title=title, yscale="log", ylim=(max(lowest / 2, 1e-12), 1.5))
        for k in keys:
            ax.axvspan(k - 0.5, k + 0.5, color="tab:red", alpha=0.12)
        ax.grid(alpha=0.3, axis="y")
    axes[1].axhline(threshold / hidden_power.sum(), color="tab:red", ls="--", lw=1,
                    label="candidate threshold (10x the median): above it and not shaded = dropped, it does not matter")
    for ax in axes:
        ax.legend(fontsize=8, title=f"key frequencies (shaded): {keys or 'none'}", title_fontsize=8,
                  loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    _save(fig, path)


def plot_neuron_clusters(fractions, neuron_freq, cluster, keys, path) -> None:
    """fractions: (d_hidden, n_freq) share of each neuron's variance per frequency; rows sorted by cluster."""
    order = sorted(range(len(cluster)), key=lambda n: (cluster[n] is None, cluster[n] or 0, -fractions[n].max()))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    im = ax.imshow(fractions[order], aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest",
                   extent=(0.5, fractions.shape[1] + 0.5, len(order) - 0.5, -0.5))
    fig.colorbar(im, ax=ax, label="share of the neuron's variance")
    ax.set(xlabel="frequency k", ylabel="neuron (sorted by cluster)",
           title="Each neuron's variance by frequency (a, b and a·b terms of w_k)")
    ax = axes[1]
    labels = [str(k) for k in keys] + ["none"]
    counts = [cluster.count(k) for k in keys] + [cluster.count(None)]
    ax.bar(labels, counts, color=["tab:blue"] * len(keys) + ["tab:gray"])
    ax.set(xlabel="key frequency (none: < 50% in one key frequency)", ylabel="number of neurons",
           title="Neurons per frequency cluster")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def plot_frequency_ablation(results, base, path) -> None:
    names = ["none removed"] + [r["ablation"] for r in results]
    accs = [100 * base["acc"]] + [100 * r["acc"] for r in results]
    losses = [base["loss"]] + [r["loss"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    axes[0].bar(names, accs, color=["tab:gray"] + ["tab:blue"] * len(results))
    axes[0].set(ylabel="accuracy on all pairs (%)", ylim=(0, 102), title="Accuracy after removing frequencies from W_E")
    axes[1].bar(names, losses, color=["tab:gray"] + ["tab:orange"] * len(results))
    axes[1].set(ylabel="loss on all pairs (log scale)", yscale="log", title="Loss after removing frequencies from W_E")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


TRAINING_PHASE_COLORS = {"memorization": "tab:blue", "circuit formation": "gold", "clean-up": "tab:green"}


def plot_progress_measures(series, phases, grokking_epoch, keys, path) -> None:
    """Four panels on one epoch axis, with the three phases shaded."""
    epochs = series["epoch"]
    series = {k: [float("nan") if v is None else v for v in vs] for k, vs in series.items()}  # None: not measured
    fig, axes = plt.subplots(2, 2, figsize=(14, 8.5), sharex=True)
    ax = axes[0, 0]
    ax.plot(epochs, series["train_loss"], color=TRAIN_COLOR, label="train loss")
    ax.plot(epochs, series["test_loss"], color=TEST_COLOR, label="test loss")
    ax.plot(epochs, series["restricted_loss"], color="tab:purple", label="restricted loss (key freqs only, all pairs)")
    ax.plot(epochs, series["excluded_loss"], color="tab:red", label="excluded loss (key freqs removed, train)")
    ax.set(yscale="log", ylabel="cross-entropy loss (log scale)", title=f"Losses (key frequencies {keys})")
    ax = axes[0, 1]
    ax.plot(epochs, [100 * a for a in series["train_acc"]], color=TRAIN_COLOR, label="train")
    ax.plot(epochs, [100 * a for a in series["test_acc"]], color=TEST_COLOR, label="test")
    ax.set(ylabel="accuracy (%)", ylim=(-2, 102), title="Accuracy")
    ax = axes[1, 0]
    ax.plot(epochs, series["fourier_gini"], color="tab:brown", marker=".")
    ax.set(ylabel="Gini coefficient (0 = flat, 1 = one frequency)", ylim=(0, 1),
           title="Concentration of the embedding's Fourier power")
    ax = axes[1, 1]
    ax.plot(epochs, series["weight_norm"], color="tab:green", marker=".")
    ax.set(ylabel="sum of squared weights", title="Weight norm")
    end = epochs[-1]
    memorized, start = phases["memorization_end"], phases["cleanup_start"]
    spans = [("memorization", 0, memorized)]
    if phases.get("generalized"):  # no phase after memorization is named for a run that did not generalize
        spans += [("circuit formation", memorized, start if start is not None else end),
                  ("clean-up", start, (phases["cleanup_end"] or end) if start is not None else None)]
    for ax in axes.flat:
        for name, start, stop in spans:
            if start is not None and stop is not None:
                ax.axvspan(start, stop, color=TRAINING_PHASE_COLORS[name], alpha=0.12, label=f"{name} ({start}-{stop})")
        if grokking_epoch is not None:
            ax.axvline(grokking_epoch, color="k", ls=":", lw=1, label=f"test acc 99% (epoch {grokking_epoch})")
        ax.set_xscale("symlog", linthresh=10)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[1]:
        ax.set_xlabel("epoch (log scale above 10)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    axes[0, 1].legend(fontsize=7, loc="center left")
    fig.suptitle("Progress measures over training snapshots: memorization, circuit formation, clean-up")
    fig.tight_layout()
    _save(fig, path)


def plot_attention_patterns(patterns, head_ablations, path) -> None:
    """patterns: (n_heads, 2, p, p) attention from "=" to a and to b over (a, b); one row per head,
    titled with the accuracy when the head is mean-ablated."""
    n_heads = len(patterns)
    fig, axes = plt.subplots(n_heads, 2, figsize=(7.5, 3.2 * n_heads), squeeze=False, layout="constrained")
    for h, (row, ablation) in enumerate(zip(axes, head_ablations)):
        for ax, w, target in zip(row, patterns[h], ("a", "b")):
            im = ax.imshow(w, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"head {h}: '=' attends to {target} (mean {w.mean():.0%})\n"
                         f"head mean-ablated: accuracy {ablation['acc']:.1%}", fontsize=9)
            ax.set(xlabel="b", ylabel="a")
    fig.colorbar(im, ax=axes, shrink=0.5, label="attention weight")
    fig.suptitle("Attention from the '=' position to each operand, over all inputs (a, b)", fontsize=11)
    _save(fig, path)


def plot_component_ablation(rows, base, path) -> None:
    """One bar pair (zero, mean ablation) per component: accuracy and loss on all pairs, the model's own
    as a dashed line. rows: analysis.components.component_ablations."""
    names = [r["component"] for r in rows]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.2 + 0.38 * len(rows)), sharey=True, layout="constrained")
    for ax, metric, scale, label in ((axes[0], "acc", 100, "accuracy on all pairs (%)"),
                                     (axes[1], "loss", 1, "loss on all pairs (log scale)")):
        for offset, mode, color in ((-0.2, "zero", "tab:red"), (0.2, "mean", "tab:blue")):
            ax.barh(y + offset, [scale * r[f"{mode}_{metric}"] for r in rows], height=0.38, color=color,
                    label=f"{mode}-ablated")
        ax.axvline(scale * base[metric], color="k", ls="--", lw=1, label="the model, nothing ablated")
        ax.set(xlabel=label)
        ax.grid(alpha=0.3, axis="x")
    axes[1].set_xscale("log")
    axes[0].set(xlim=(0, 102), yticks=y, yticklabels=names)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle("Each component replaced by 0 (zero) or by its mean over all inputs (mean)\n"
                 "(a bias's mean is itself; a frequency averages to 0 over the tokens, so its two bars agree)",
                 fontsize=10)
    _save(fig, path)


REGIME_COLORS = {"comprehension": "#a6dba0", "grokking": "#92c5de", "memorization": "#f4a582", "confusion": "#d9d9d9",
          "diverged": "#636363", "tie": "#ffffff"}


def _cell_text(cell: dict, regimes) -> str:
    n, counts = cell["n"], cell["counts"]
    lines = [f"{counts[r]}/{n} {r}" for r in regimes if r in counts]
    if cell["median_grokking_epoch"] is not None:
        lines.append(f"epoch {cell['median_grokking_epoch']:g}")
    if cell["median_delay"] is not None:
        lines.append(f"delay {cell['median_delay']:.1f}x")
    return "\n".join(lines)


def plot_phase_diagram(data: dict, path, x_label: str, y_label: str, title: str, regimes, rule: str,
                       bar: float) -> None:
    """Draw sweeps.regimes.regime_cells() output: one square per (x, y) cell, coloured by its majority run regime
    (hatched white for a tie), with the regime counts, the median epoch of `bar` test accuracy and the median
    delay in it; regimes: their order in the legend; rule: the regime rule, printed below the plot."""
    xs, ys, cells = data["x"], data["y"], data["cells"]
    fig, ax = plt.subplots(figsize=(2.2 * len(xs) + 3.2, 1.3 * len(ys) + 1.8))
    for i, xv in enumerate(xs):
        for j, yv in enumerate(ys):
            cell = cells.get((xv, yv))
            if cell is None:
                ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor="white", edgecolor="0.6", lw=0.5))
                ax.text(i, j, "no runs", ha="center", va="center", fontsize=8, color="0.5")
                continue
            regime = cell["regime"]
            ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor=REGIME_COLORS[regime], edgecolor="white", lw=2))
            if regime == "tie":  # the hatch takes the edge colour: a second, unfilled rectangle draws it in grey
                ax.add_patch(plt.Rectangle((i - 0.48, j - 0.48), 0.96, 0.96, fill=False, edgecolor="0.7", lw=0,
                                           hatch="//"))
            ax.text(i, j, _cell_text(cell, regimes), ha="center", va="center", fontsize=8,
                    color="white" if regime == "diverged" else "black",
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1} if regime == "tie" else None)
    ax.set(xlim=(-0.5, len(xs) - 0.5), ylim=(-0.5, len(ys) - 0.5), xticks=range(len(xs)), yticks=range(len(ys)),
           xlabel=x_label, ylabel=y_label)
    ax.set_xticklabels([f"{v:g}" if isinstance(v, float) else str(v) for v in xs])
    ax.set_yticklabels([f"{v:g}" if isinstance(v, float) else str(v) for v in ys])
    seen = {c["regime"] for c in cells.values()}
    handles = [Patch(facecolor=REGIME_COLORS[r], edgecolor="0.5", label=r) for r in regimes  # Liu's four always
               if r != "diverged" or r in seen]
    if "tie" in seen:
        handles.append(Patch(facecolor="white", edgecolor="0.5", hatch="//", label="tie (no majority)"))
    ax.legend(handles=handles, title="majority run regime\nover the seeds", loc="upper left", bbox_to_anchor=(1.02, 1),
              fontsize=8, title_fontsize=8, frameon=False)
    ax.text(1.02, 0.0, f"In each cell: runs per regime;\nepoch: median epoch at which\ntest accuracy reached {bar:.0%};\n"
                       f"delay: median of that epoch /\nthe epoch train reached {bar:.0%}\n(both over the runs that\n"
                       f"reached {bar:.0%} test).",
            transform=ax.transAxes, fontsize=7.5, va="bottom", ha="left")
    ax.set_title(title, fontsize=10)
    fig.text(0.01, -0.02, textwrap.fill("Run regimes: " + rule + ".", 180), fontsize=7, va="top")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_accelerators(boards: dict, path, title: str, budget: int, uncounted: str = "") -> None:
    """One panel per leaderboard ({board: [{"method", "steps": [epoch of 99% test per seed, None if not counted],
    "median": their median counting None as slowest (None if most are)}]}, fastest first): a dot per seed at its
    steps to 99 % test accuracy (log scale), a bar at the median, a cross at the right edge for a seed not counted:
    never got there within `budget` steps, or `uncounted` (why else)."""
    fig, axes = plt.subplots(1, len(boards), figsize=(6.2 * len(boards), 0.55 * max(map(len, boards.values())) + 1.8),
                             squeeze=False)
    rng = np.random.default_rng(0)  # vertical jitter only, so overlapping seeds stay visible
    reached = [s for rows in boards.values() for row in rows for s in row["steps"] if s is not None]
    low, high = (min(reached) if reached else budget) / 1.4, budget * 1.45
    for ax, (board, rows) in zip(axes[0], boards.items()):
        for i, row in enumerate(rows):
            if not row["steps"]:
                ax.text((low * high) ** 0.5, i, "no tuned configuration qualified", ha="center", va="center",
                        fontsize=8, color="0.45")
            steps = [s for s in row["steps"] if s is not None]
            missed = len(row["steps"]) - len(steps)
            ax.scatter(steps, i + rng.uniform(-0.18, 0.18, len(steps)), s=18, color="#2166ac", alpha=0.75, zorder=3)
            if missed:
                ax.scatter([budget * 1.25] * missed, i + rng.uniform(-0.18, 0.18, missed), marker="x", s=24,
                           color="#b2182b", zorder=3)
            if row["median"] is not None:
                ax.plot([row["median"]] * 2, [i - 0.3, i + 0.3], color="black", lw=2)
        ax.set_yticks(range(len(rows)), [r["method"] for r in rows])
        ax.set_ylim(len(rows) - 0.4, -0.6)  # fastest on top
        ax.set_xscale("log")
        ticks = [t for t in (10, 20, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000) if low <= t <= high]
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.set_xlim(low, high)
        ax.minorticks_off()
        ax.axvline(budget, color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("full-batch steps to 99% test accuracy (log scale)")
        ax.set_title(board, fontsize=10)
        ax.grid(axis="x", color="0.92", zorder=0)
    fig.suptitle(title, fontsize=10)
    fig.text(0.01, -0.01, f"Dot: one seed; bar: the median over all seeds (one not counted counts as slowest). Cross at "
                          f"the right: a seed not counted: no 99% within {budget:,} steps (dashed line)"
                          + (f" or {uncounted}" if uncounted else "") + ".", fontsize=8, va="top")
    _save(fig, path)


def draw(jobs) -> list[Path]:
    """Run plot jobs (name of a function of this module, its arguments, its keyword arguments with the `path`
    it writes); returns the paths."""
    for name, args, kwargs in jobs:
        globals()[name](*args, **kwargs)
    return [kwargs["path"] for _, _, kwargs in jobs]


def draw_in_background(jobs):
    """draw(jobs) in a child process (forked: the jobs' arrays are not copied), so that the caller's next steps
    overlap with the drawing, which is matplotlib only. Returns the process (None where the platform cannot
    fork, as on Windows: then it has drawn them already); finish_drawing(process) before the files are needed."""
    if "fork" not in multiprocessing.get_all_start_methods():
        draw(jobs)
        return None
    process = multiprocessing.get_context("fork").Process(target=draw, args=(jobs,))
    process.start()
    return process


def finish_drawing(process) -> None:
    """Wait for a draw_in_background process; raise if it failed (its traceback is on stderr)."""
    if process is None:
        return
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"drawing the plots failed in a child process (exit code {process.exitcode})")
