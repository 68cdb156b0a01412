"""Open a trained network (ToyMLP or the 1-layer transformer) and measure how it computes (a + b) mod p.

    python interpretability.py                                   # checkpoints/model_final.pth -> results/
    python interpretability.py --checkpoint checkpoints/snapshots/epoch_00100.pth --results-dir results/e100

Writes results/analysis_summary.json, neuron_ranking.json and the plots listed at the end of the run.
Every function takes a model (and data) in memory, so a notebook can call them directly.
"""
import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import clock_pizza
import fourier
import plots
import transformer_analysis
from circuit import (NEURON_FRACTION, REMOVAL_LOSS_RATIO, Grid, fourier_analysis, frequency_ablation,  # noqa: F401
                     frequency_removal, grid_activations, hidden_input_power, key_frequency_losses,
                     logits_function, model_key_frequencies, non_key_removal, operand_power, select_key_frequencies,
                     token_embedding)
from component_ablation import component_ablations
from checkpoint import CheckpointError, load_model
from model import cross_entropy_of_margins, margins
from utils import OutputDirError, available_bytes, check_output_dir, provenance, write_json

ABLATION_KS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CACHE_BYTES = 2**22  # row_blocks


def ablated_logits(logits, hidden, readout, neurons, values) -> torch.Tensor:
    """The logits with the neurons' activations `hidden` (rows, d_hidden) replaced by `values`: a
    (d_hidden,) vector (their mean, or 0) or one row per input.

    The neurons (hidden_post) feed the logits linearly through readout = model.neuron_readout(), so
    this is the hooked forward pass (model.ablate_neurons) in one matmul; tests check they agree.
    The ablation loops take a faster route to the same losses (margin_update; tests check it)."""
    neurons = torch.as_tensor(neurons, dtype=torch.long)
    return logits + (values[..., neurons] - hidden[:, neurons]) @ readout[neurons]


def margin_update(delta, readout, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Changing k neurons by delta (rows, k), read out to the logits by readout (k, p), moves every
    margin z_c - z_y (model.margins) by u_c - u_y, u = delta @ readout: the margins plus left @ right,
    left = [delta, -u_y] (rows, k + 1), right = [readout; 1] (k + 1, p). Updating the margins this way,
    a block of rows at a time that stays in cache, makes about a third of the passes over memory of
    ablated_logits + cross_entropy_per_row (single-neuron ablations 2.9x faster at p = 1009)."""
    u_y = torch.linalg.vecdot(delta, readout.T.contiguous()[y])[:, None]  # rows of readout.T: a fast gather
    return torch.cat([delta, -u_y], 1), torch.cat([readout, readout.new_ones(1, readout.shape[1])])


def row_blocks(table: torch.Tensor) -> list[slice]:
    """table's rows in blocks of about CACHE_BYTES (a block's updated margins stay in cache)."""
    rows = max(1, CACHE_BYTES // max(1, table[0].nbytes))
    return [slice(start, start + rows) for start in range(0, len(table), rows)]


def ablation_sums(margin, hidden, readout, y, neurons, values) -> torch.Tensor:
    """(2,) float64: the loss and correct count summed over the rows of margin = margins(logits, y) with
    the neurons set to values[neurons] (ablated_logits then cross_entropy_per_row; tests check they agree)."""
    left, right = margin_update(values[neurons] - hidden[:, neurons], readout[neurons], y)
    sums = [cross_entropy_of_margins(torch.addmm(margin[rows], left[rows], right)) for rows in row_blocks(margin)]
    return torch.stack([sum(loss.sum() for loss, _ in sums), sum(correct.sum() for _, correct in sums).double()])


def chunk_runs(model, grid, progress: str | None = None):
    """(labels, logits, hidden_post) of the data set's pairs, one chunk of pairs (Grid.chunks) at a time."""
    for part in tqdm(grid.chunks(grid.split["all"]), desc=progress, disable=progress is None, leave=False):
        logits, cache = model.run_with_cache(grid.a[grid.rows[part]], grid.b[grid.rows[part]])
        yield grid.y[part], logits, cache["hidden_post"]


def rank_neurons(model, grid, progress=False) -> dict:
    """Rank neurons by activation variance over the grid and by the loss increase when each is
    mean-ablated (causal); zero-ablation effects are reported too. Chunk by chunk over the pairs."""
    readout, hidden_all = model.neuron_readout(), grid_hidden(model, grid)
    d = hidden_all.shape[1]
    mean = hidden_all.mean(0)
    variance = fourier.by_column_groups(lambda part: part.double().var(0), hidden_all)
    sums = torch.zeros(2 * d + 1, 2, dtype=torch.float64)  # loss, correct: the model, each neuron at its mean, at 0
    for y, logits, hidden in chunk_runs(model, grid, "single-neuron ablations" if progress else None):
        margin = margins(logits, y)
        for start, values in ((1, mean), (1 + d, torch.zeros_like(mean))):
            for n in range(d):
                sums[start + n] += ablation_sums(margin, hidden, readout, y, [n], values)
        loss, correct = cross_entropy_of_margins(margin)
        sums[0] += torch.stack([loss.sum(), correct.sum().double()])
    scores = sums / len(grid.split["all"])
    (base_loss, base_acc), mean_scores, zero_scores = scores[0].tolist(), scores[1:d + 1], scores[d + 1:]
    mean_loss, zero_loss = mean_scores[:, 0], zero_scores[:, 0]
    causal_order = torch.argsort(mean_loss - base_loss, descending=True)
    activation_order = torch.argsort(variance, descending=True)
    return {
        "base_loss": base_loss, "base_acc": base_acc,
        "activation_variance": variance, "mean_ablation_loss_increase": mean_loss - base_loss,
        "mean_ablation_acc": mean_scores[:, 1], "zero_ablation_loss_increase": zero_loss - base_loss,
        "zero_ablation_acc": zero_scores[:, 1], "causal_order": causal_order, "activation_order": activation_order,
        "agreement": ranking_agreement(activation_order, causal_order),
    }


def grid_hidden(model, grid) -> torch.Tensor:
    """(p*p, d_hidden): hidden_post over all pairs (grid rows), computed chunk by chunk."""
    return grid_activations(model, grid)["hidden_post"].reshape(grid.p**2, -1)


def ranking_agreement(order_1: torch.Tensor, order_2: torch.Tensor) -> dict:
    """Spearman rank correlation of two orderings and the overlap of their top 10 and top 10%."""
    n = len(order_1)
    rank_1, rank_2 = torch.empty(n), torch.empty(n)
    rank_1[order_1], rank_2[order_2] = torch.arange(n, dtype=torch.float), torch.arange(n, dtype=torch.float)
    spearman = 1 - 6 * float(((rank_1 - rank_2) ** 2).sum()) / (n * (n**2 - 1)) if n > 1 else 1.0
    top = max(n // 10, 1)
    overlap = lambda k: len(set(order_1[:k].tolist()) & set(order_2[:k].tolist())) / k  # noqa: E731
    return {"spearman": spearman, "top10_overlap": overlap(min(10, n)), f"top{top}_overlap": overlap(top)}


def ablation_curves(model, grid, causal_order, draws: int = 5, seed: int = 0) -> dict:
    """Mean-ablate the top-k neurons (causal order) or k random ones; and keep only the top k or
    k random ones (mean-ablating the rest). Accuracy and loss on all pairs; random: mean and std."""
    readout, mean = model.neuron_readout(), grid_hidden(model, grid).mean(0)
    d = len(mean)
    gen = torch.Generator().manual_seed(seed)
    ks = sorted({k for k in ABLATION_KS if k <= d} | {d})
    sets = {}  # (mode, "top" or "random") -> per k, the neuron sets set to their mean
    for mode in ("ablate", "keep"):
        chosen = lambda order, k: order[:k] if mode == "ablate" else order[k:]  # noqa: E731
        sets[mode, "top"] = [[chosen(causal_order, k)] for k in ks]
        sets[mode, "random"] = [[chosen(torch.randperm(d, generator=gen), k) for _ in range(draws)] for k in ks]
    flat = [neurons for per_k in sets.values() for group in per_k for neurons in group]

    sums = torch.zeros(len(flat), 2, dtype=torch.float64)  # loss, correct
    for y, logits, hidden in chunk_runs(model, grid):
        margin = margins(logits, y)
        for v, neurons in enumerate(flat):
            sums[v] += ablation_sums(margin, hidden, readout, y, neurons, mean)
    scores = iter((sums / len(grid.split["all"])).tolist())
    out = {"k": ks}
    for mode in ("ablate", "keep"):
        top = [next(scores) for _ in ks]
        rand = torch.tensor([[next(scores) for _ in range(draws)] for _ in ks],  # (len(ks), draws, 2): loss, acc
                            dtype=torch.float64)
        out[mode] = {"top_loss": [t[0] for t in top], "top_acc": [t[1] for t in top],
                     "random_loss_mean": rand[..., 0].mean(1).tolist(),  # std: the spread of these draws (0 for one)
                     "random_loss_std": rand[..., 0].std(1, correction=0).tolist(),
                     "random_acc_mean": rand[..., 1].mean(1).tolist(),
                     "random_acc_std": rand[..., 1].std(1, correction=0).tolist()}
    return out


def circuit_size(model, grid, causal_order, threshold: float = 0.99) -> tuple[int | None, list[float]]:
    """Smallest k whose top-k neurons (causal order), with all others mean-ablated, keep accuracy
    >= threshold on all pairs. Also returns the accuracy for every k = 0..d_hidden."""
    order = causal_order.tolist()
    readout, mean = model.neuron_readout().double()[order], fourier.mean_float64(grid_hidden(model, grid), 0)[order]
    correct, every = torch.zeros(len(order) + 1, dtype=torch.long), torch.arange(len(order))
    for y, logits, hidden in chunk_runs(model, grid):
        hidden = hidden.double()[:, order]
        margin = margins(ablated_logits(logits.double(), hidden, readout, every, mean), y)  # every neuron at its mean
        updates = [margin_update(hidden[:, [k]] - mean[k], readout[[k]], y) for k in range(len(order))]  # k given back
        for rows in row_blocks(margin):
            block, ok = margin[rows], torch.empty(len(order) + 1, len(y[rows]), dtype=torch.bool)
            torch.lt(block.amax(-1), 0, out=ok[0])
            for k, (left, right) in enumerate(updates):
                torch.lt(block.addmm_(left[rows], right).amax(-1), 0, out=ok[k + 1])
            correct += ok.sum(1)
    accs = (correct.double() / len(grid.split["all"])).tolist()
    size = next((k for k, acc in enumerate(accs) if acc >= threshold), None)
    return size, accs


def analyze(model, grid, draws: int = 5, progress: bool = False, phase=None) -> dict:
    """The whole analysis of a model in memory; returns plain data plus tensors for the plots.
    phase(name, run) -> run(), if given, wraps each step (bench_analysis.py times them)."""
    phase = phase or (lambda name, run: run())
    with torch.no_grad():
        ranking = phase("rank_neurons", lambda: rank_neurons(model, grid, progress))
        order = ranking["causal_order"]
        curves = phase("ablation_curves", lambda: ablation_curves(model, grid, order, draws))
        size, keep_accs = phase("circuit_size", lambda: circuit_size(model, grid, order))
        losses = phase("losses", lambda: {split: dict(zip(("loss", "acc"), grid.score(model, split)))
                                          for split in ("all", "train", "test")})
    f = phase("fourier_analysis", lambda: fourier_analysis(model, grid))
    result = {"losses": losses, "ranking": ranking, "ablation_curves": curves, "circuit_size": size,
              "circuit_keep_acc": keep_accs, "fourier": f,
              "components": phase("component_ablations", lambda: component_ablations(model, grid, f["key_frequencies"]))}
    if grid.basis is not None:
        result["clock_pizza"] = phase("clock_pizza", lambda: clock_pizza.clock_or_pizza(
            model, grid.p, grid.op, correct_logit=correct_logit_in_basis(model, grid)))
    if transformer_analysis.has_attention(model):
        result["transformer"] = phase("transformer", lambda: transformer_analysis.analyze(model, grid, f["key_frequencies"]))
    return result


def correct_logit_in_basis(model_or_logits, grid) -> torch.Tensor:
    """(n, n): the correct class's logit on the pair at positions (i, j) of the grid's basis; from a model
    (run chunk by chunk) or its (p*p, p) logits over the grid."""
    basis, logits_of = grid.basis, logits_function(model_or_logits, grid)
    correct = basis.tokens[fourier.combination(basis.n, basis.op).reshape(-1)]
    rows = basis.grid_rows(grid.p)
    with torch.no_grad():
        parts = [logits_of(rows[part]).gather(1, correct[part, None]) for part in grid.basis_chunks()]
    return torch.cat(parts).reshape(basis.n, basis.n)


def structure(f: dict) -> str:
    """'clear', 'weak' or 'none'; 'not applicable' where the basis has too few frequencies for the
    rule, 'no known basis' where the op has none."""
    if f.get("no_basis"):
        return "no known basis"
    if len(f["frequencies"]) < fourier.MIN_FREQUENCIES:
        return "not applicable"
    if not f["key_frequencies"]:
        return "none"
    return "clear" if f["key_frequency_power_fraction"] >= fourier.STRONG_FRACTION else "weak"


def summarize(result: dict, checkpoint: str, config: dict, run_id: str | None = None) -> dict:
    """The JSON-ready summary: plain numbers and lists only."""
    r, f = result["ranking"], result["fourier"]
    top = r["causal_order"][:20].tolist()
    summary = {
        "checkpoint": checkpoint, "run_id": run_id, "config": config, **provenance(),
        "losses": result["losses"], **fourier_summary(f), "structure": structure(f),
        "neuron_importance": {
            "top20_causal": top,
            "top20_loss_increase": r["mean_ablation_loss_increase"][top].tolist(),
            "top20_by_activation_variance": r["activation_order"][:20].tolist(),
            "ranking_agreement": r["agreement"],
        },
        "ablations": {"single_neuron_max_loss_increase": {
                          "mean": float(r["mean_ablation_loss_increase"].max()),
                          "zero": float(r["zero_ablation_loss_increase"].max())},
                      "single_neuron_min_acc": {"mean": float(r["mean_ablation_acc"].min()),
                                                "zero": float(r["zero_ablation_acc"].min())},
                      **result["ablation_curves"]},
        "circuit_size": result["circuit_size"],
        "train_loss": result["losses"]["train"]["loss"], "test_loss": result["losses"]["test"]["loss"],
        "component_ablations": result["components"],
    }
    if "clock_pizza" in result:
        summary["clock_pizza"] = result["clock_pizza"]
    if "transformer" in result:
        t = result["transformer"]
        summary["attention"] = [{"head": h, "mean_to_a": float(w[0].mean()), "mean_to_b": float(w[1].mean()),
                                 "mean_to_eq": float((1 - w[0] - w[1]).mean()), **ablation}
                                for h, (w, ablation) in enumerate(zip(t["attention"], t["head_ablations"]))]
        if "residual_key_directions" in t:
            summary["residual_key_directions"] = t["residual_key_directions"]
    return summary


def fourier_summary(f: dict) -> dict:
    """The Fourier part of the summary: which basis, the key frequencies and what rests on them."""
    if f["basis"] is None:
        return {"basis": None, "no_basis": f["no_basis"], "key_frequencies": []}
    basis = f["basis"]
    return {
        "basis": {"name": basis.name, "n": basis.n, "op": basis.op, "generator": basis.generator,
                  "pairs": "all pairs" if basis.generator is None else
                  "pairs without a 0 operand (0 has no logarithm); the model's loss on the others is in losses"},
        "key_frequencies": f["key_frequencies"],
        "key_frequency_power_fraction": f["key_frequency_power_fraction"],
        "key_frequency_rule": f"a candidate holds >= {fourier.KEY_RATIO:g} x the median frequency's hidden-input power "
                              f"(and >= 1e-6 of the total; needs >= {fourier.MIN_FREQUENCIES} frequencies); it is key "
                              f"if >= 1 neuron has >= {NEURON_FRACTION:.0%} of its variance in it, or removing it from "
                              f"the embedding multiplies the loss by >= {REMOVAL_LOSS_RATIO:g}",
        "key_frequency_candidates": f["key_frequency_candidates"],
        "key_frequency_evidence": f["key_frequency_evidence"],
        "embed_key_power_fraction": f["embed_key_power_fraction"],
        "neurons_per_key_frequency": {k: f["neuron_cluster"].count(k) for k in f["key_frequencies"]},
        "neurons_unassigned": f["neuron_cluster"].count(None),
        "restricted_loss": f["restricted_loss"], "restricted_acc": f["restricted_acc"],
        "excluded_loss": f["excluded_loss"], "excluded_acc": f["excluded_acc"],
        "logit_variance_explained": f["logit_variance_explained"],
        "logit_alphas": f["logit_alphas"],
        "frequency_ablation": f["frequency_ablation"],
    }


def neuron_table(result: dict) -> list[dict]:
    r, f = result["ranking"], result["fourier"]
    causal_rank = torch.empty_like(r["causal_order"])
    causal_rank[r["causal_order"]] = torch.arange(len(causal_rank))
    act_rank = torch.empty_like(r["activation_order"])
    act_rank[r["activation_order"]] = torch.arange(len(act_rank))
    no_basis = [None] * len(causal_rank)
    return [{"neuron": n, "causal_rank": int(causal_rank[n]), "activation_rank": int(act_rank[n]),
             "mean_ablation_loss_increase": float(r["mean_ablation_loss_increase"][n]),
             "zero_ablation_loss_increase": float(r["zero_ablation_loss_increase"][n]),
             "activation_variance": float(r["activation_variance"][n]),
             "dominant_frequency": f.get("neuron_frequency", no_basis)[n],
             "dominant_frequency_fraction": f.get("neuron_frequency_fraction", no_basis)[n],
             "cluster": f.get("neuron_cluster", no_basis)[n]} for n in r["causal_order"].tolist()]


def axis_names(basis) -> tuple[str, str]:
    """How the plots name the two axes of a grid in this basis."""
    if basis is not None and basis.generator is not None:
        return f"i = log_{basis.generator} a", f"j = log_{basis.generator} b"
    return "a", "b"


def write_plots(model, grid, result: dict, out: Path, top: int = 16) -> list[Path]:
    r, f, basis = result["ranking"], result["fourier"], grid.basis
    hidden = grid_activations(model, grid)["hidden_post"]
    hidden = hidden if basis is None else basis.grid(hidden)  # heatmaps over the basis's positions
    axes = axis_names(basis)
    neurons = r["causal_order"][:top].tolist()
    labels = [f"neuron {n} (rank {i + 1})" + ("" if basis is None else f"\nfreq {f['neuron_frequency'][n]}, "
              f"{f['neuron_frequency_fraction'][n]:.0%} of var") for i, n in enumerate(neurons)]
    paths = [out / name for name in ("activation_heatmap.png", "neuron_ranking.png", "ablation_curves.png")]
    plots.plot_neuron_heatmaps(hidden[..., neurons].permute(2, 0, 1).numpy(), labels, paths[0], axes)
    plots.plot_neuron_ranking(r["activation_variance"].numpy(), r["mean_ablation_loss_increase"].numpy(),
                              r["zero_ablation_loss_increase"].numpy(), r["agreement"], paths[1])
    plots.plot_ablation_curves(result["ablation_curves"], result["circuit_keep_acc"], result["circuit_size"],
                               result["losses"]["all"]["acc"], paths[2])
    if basis is not None:
        paths += [out / name for name in ("fourier_spectrum.png", "neuron_clusters.png", "frequency_ablation.png",
                                          "activation_overview.png")]
        hidden_power = f["hidden_power_a"] + f["hidden_power_b"]
        plots.plot_fourier_spectrum(f["frequencies"], f["embed_power"].numpy(), hidden_power.numpy(),
                                    f["key_frequencies"], fourier.key_threshold(hidden_power), paths[3], basis.name)
        plots.plot_neuron_clusters(f["neuron_fractions"].numpy(), f["neuron_frequency"], f["neuron_cluster"],
                                   f["key_frequencies"], paths[4])
        plots.plot_frequency_ablation(f["frequency_ablation"], result["losses"]["all"], paths[5])
        many = r["causal_order"][:64].tolist()
        reindexed = [reindex_by_frequency(hidden[..., n], f["neuron_frequency"][n]) for n in many]
        plots.plot_neuron_overview(torch.stack(reindexed).numpy(), [f"#{i + 1}: n{n}, k={f['neuron_frequency'][n]}"
                                                                    for i, n in enumerate(many)], paths[6], axes)
    paths.append(out / "component_ablation.png")
    plots.plot_component_ablation(result["components"], result["losses"]["all"], paths[-1])
    if "transformer" in result:
        t = result["transformer"]
        paths.append(out / "attention_patterns.png")
        plots.plot_attention_patterns(t["attention"].numpy(), t["head_ablations"], paths[-1])
    return paths


def reindex_by_frequency(act: torch.Tensor, k: int) -> torch.Tensor:
    """act (n, n) over the positions (a, b) of Z_n, with rows and columns sorted by the phase k*a mod n
    (stable): for k invertible mod n, row j holds a = j / k, so cos(w_k a) = cos(2 pi j / n) and a
    frequency-k neuron shows as one smooth wave; when k shares a factor d with n (mul's Z_112 has
    many such k), the d positions of each phase sit side by side and the wave has steps."""
    order = torch.argsort((k * torch.arange(act.shape[0])) % act.shape[0], stable=True)
    return act[order][:, order]


def findings(summary: dict) -> list[str]:
    """A few plain sentences on what was found."""
    acc = summary["losses"]["test"]["acc"]
    lines = [f"Model: test accuracy {acc:.1%}, train accuracy {summary['losses']['train']['acc']:.1%}."]
    p, op = summary["config"]["p"], summary["config"]["op"]
    basis = summary.get("basis", {"name": f"Z_{p}", "n": p, "op": op, "generator": None})  # older summaries: Z_p
    keys, dropped = summary["key_frequencies"], summary.get("key_frequency_candidates", [])
    if basis is None:
        lines.append(f"No Fourier analysis: {summary['no_basis']}.")
    elif basis["generator"] is not None:
        how = "a*b = g^(i+j) is addition" if basis["op"] == "add" else "a/b = g^(i-j) is subtraction"
        lines.append(f"Basis: discrete logarithms base g = {basis['generator']} (the smallest primitive root), "
                     f"so {how} over Z_{basis['n']}; frequencies k are over Z_{basis['n']}, "
                     f"on the {basis['n']}^2 pairs without a 0 operand.")
    if summary["structure"] == "not applicable":
        lines.append(f"Z_{basis['n']} has only {basis['n'] // 2} frequencies: the key-frequency rule (power >= "
                     f"{fourier.KEY_RATIO:g}x the median) needs at least {fourier.MIN_FREQUENCIES}, so it is not applied.")
    elif summary["structure"] == "none":
        lines.append("No clear frequency structure found: no frequency stands out of the spectrum and matters "
                     "(expected for an untrained or memorizing-only model).")
    elif basis is not None:
        sign = "-" if basis["op"] == "sub" else "+"
        i, j = ("i", "j") if basis["generator"] is not None else ("a", "b")
        lines.append(f"Key frequencies {keys} hold {summary['key_frequency_power_fraction']:.0%} of the neurons' "
                     f"input power ({summary['structure']} structure); "
                     f"{sum(summary['neurons_per_key_frequency'].values())} neurons are tied to one of them.")
        lines.append(f"A sum of cos(w_k({i}{sign}{j}-c)) over them explains {summary['logit_variance_explained']:.0%} "
                     f"of the logits' variance. Restricted loss (key directions only, "
                     f"{'all pairs' if basis['generator'] is None else 'pairs without 0'}) "
                     f"{summary['restricted_loss']:.3g} vs {summary['losses']['all']['loss']:.3g} unrestricted; "
                     f"excluded loss (key directions removed, train set) {summary['excluded_loss']:.3g} "
                     f"vs train loss {summary['train_loss']:.3g}.")
    dropped = [k for k in dropped if k not in keys]
    if dropped:
        lines.append(f"Not key despite standing out of the spectrum (no neuron cluster, and removing each raises "
                     f"the loss < {REMOVAL_LOSS_RATIO:g}x): {dropped}.")
    if "attention" in summary:
        heads = "; ".join(f"head {h['head']}: {h['mean_to_a']:.0%} to a, {h['mean_to_b']:.0%} to b, "
                          f"mean-ablated acc {h['acc']:.1%}" for h in summary["attention"])
        lines.append(f"Attention from '=' (averaged over all pairs): {heads}.")
    if "residual_key_directions" in summary:
        r = summary["residual_key_directions"]
        lines.append(f"Residual stream at '=': the key-frequency terms hold {r['key_variance_share']:.0%} of its "
                     f"variance; keeping only them gives accuracy {r['keep_key_acc']:.1%} (loss "
                     f"{r['keep_key_loss']:.3g}), removing them {r['remove_key_acc']:.1%} (loss {r['remove_key_loss']:.3g}).")
    if "clock_pizza" in summary:
        c = summary["clock_pizza"]
        lines.append(f"Clock or pizza (Zhong et al. 2023): gradient symmetricity {c['gradient_symmetricity']:.3f}, "
                     f"distance irrelevance {c['distance_irrelevance']:.3f}: {c['verdict']}"
                     + (f" (pizza if s_g > {c['thresholds']['pizza_if_symmetricity_above']:g} and q < "
                        f"{c['thresholds']['pizza_if_irrelevance_below']:g}, clock if neither)."
                        if c["verdict"] in ("clock", "pizza") else "."))
    worst = max(summary.get("component_ablations", []), key=lambda r: r["mean_loss"], default=None)
    if worst is not None:
        lines.append(f"Component ablations: mean-ablating {worst['component']} hurts most (accuracy "
                     f"{worst['mean_acc']:.1%}, loss {worst['mean_loss']:.3g}); the whole table is in the summary "
                     "and component_ablation.png.")
    size = summary["circuit_size"]
    lines.append(f"Circuit size: {size} neurons kept (the rest mean-ablated) retain >= 99% accuracy."
                 if size is not None else "No set of neurons retains 99% accuracy (the model itself does not reach it).")
    return lines


def analysis_bytes(model) -> int:
    """Peak memory of the analysis, estimated: chunked over the pairs, it holds at most a few (p^2, d_hidden)
    activation grids (hidden_post, hidden_pre) and one chunk's tables at a time, so it grows as p^2."""
    return 3 * 4 * model.p**2 * model.neuron_readout().shape[0] + 16 * fourier.CHUNK_BYTES


def check_analysis_memory(model) -> None:
    """Raise CheckpointError (one sentence) if the analysis of the model would not fit in memory."""
    need, have = analysis_bytes(model), available_bytes(torch.device("cpu"))
    if need > 0.8 * have:
        raise CheckpointError(f"analysing this p = {model.p} model needs about {need / 2**30:.1f} GB and this machine "
                              f"has {have / 2**30:.1f} GB available")


def run(checkpoint="checkpoints/model_final.pth", results_dir="results", draws: int = 5, progress: bool = True):
    """Analyse a checkpoint and write the JSON files and plots; returns (summary, plot paths)."""
    model, ckpt = load_model(checkpoint)  # raises CheckpointError before anything is written
    cfg = ckpt["config"]
    check_analysis_memory(model)
    grid = Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"])
    steps = tqdm(total=3, desc="analysis", disable=not progress)
    result = analyze(model, grid, draws, progress=progress)
    steps.update()
    out = Path(results_dir)
    summary = summarize(result, str(checkpoint), cfg, ckpt.get("run_id"))
    write_json(out / "analysis_summary.json", summary)
    write_json(out / "neuron_ranking.json", {"checkpoint": str(checkpoint), "run_id": ckpt.get("run_id"),
                                             "neurons": neuron_table(result)})
    steps.update()
    paths = write_plots(model, grid, result, out)
    steps.update()
    steps.close()
    return summary, paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Mechanistic analysis of a trained checkpoint (ToyMLP or transformer).")
    parser.add_argument("--checkpoint", default="checkpoints/model_final.pth", help="checkpoint to analyse")
    parser.add_argument("--results-dir", default="results", help="folder for the JSON files and plots")
    parser.add_argument("--draws", type=int, default=5, help="random neuron sets per k in the ablation curves")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--progress", action="store_true",
                        help="instead: progress measures over the snapshots next to --checkpoint (see progress.py)")
    args = parser.parse_args(argv)
    if args.progress:
        import progress  # imports this module, so only here

        folder = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
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
