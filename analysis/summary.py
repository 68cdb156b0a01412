"""The whole analysis of one model, its JSON summary and its findings in plain sentences.

    analyze(model, grid) -> every measure: neuron ranking, ablation curves, circuit size, losses, the Fourier
                            analysis, component ablations, clock or pizza, and the transformer's attention
    summarize(result, checkpoint, config) -> the JSON-ready summary (results/analysis_summary.json)
    findings(summary) -> a few sentences; analyze_checkpoint(path) -> all of it from a checkpoint file
"""
import torch

from analysis import attention, clock_pizza, fourier
from analysis.circuit import NEURON_FRACTION, REMOVAL_LOSS_RATIO, Grid, correct_logit_in_basis, fourier_analysis
from analysis.components import component_ablations
from analysis.neurons import ablation_curves, circuit_size, rank_neurons
from core.checkpoint import CheckpointError, load_model
from core.utils import available_bytes, provenance


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
    if attention.has_attention(model):
        result["transformer"] = phase("transformer", lambda: attention.analyze(model, grid, f["key_frequencies"]))
    return result


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
        summary["attention"] = [{**ablation, "mean_to_a": float(w[0].mean()), "mean_to_b": float(w[1].mean()),
                                 "mean_to_eq": float((1 - w[0] - w[1]).mean())}
                                for w, ablation in zip(t["attention"], t["head_ablations"])]  # ablation: head, loss, acc
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


def findings(summary: dict) -> list[str]:
    """A few plain sentences on what was found."""
    acc = summary["losses"]["test"]["acc"]
    lines = [f"Model: test accuracy {acc:.1%}, train accuracy {summary['losses']['train']['acc']:.1%}."]
    p, op = summary["config"]["p"], summary["config"]["op"]
    basis = summary.get("basis", {"n": p, "op": op, "generator": None})  # older summaries: Z_p
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


def analyze_checkpoint(checkpoint="checkpoints/model_final.pth", draws: int = 5, progress: bool = False) -> dict:
    """Load a checkpoint, check the analysis fits in memory, analyse it; returns {"model", "grid", "result",
    "summary", "checkpoint" (the loaded file)} (interpretability.py writes the JSON files and plots from these)."""
    model, ckpt = load_model(checkpoint)  # raises CheckpointError before anything is written
    cfg = ckpt["config"]
    check_analysis_memory(model)
    grid = Grid(cfg["p"], cfg["op"], ckpt["train_idx"], ckpt["test_idx"])
    result = analyze(model, grid, draws, progress=progress)
    summary = summarize(result, str(checkpoint), cfg, ckpt.get("run_id"))
    return {"model": model, "grid": grid, "result": result, "summary": summary, "checkpoint": ckpt}
