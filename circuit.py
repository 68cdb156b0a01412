"""The Fourier circuit of a model, measured over all p*p input pairs (a Grid): its key frequencies
(spectrum candidates that matter), neuron clusters, logit fit, restricted and excluded losses and
frequency ablations, in the op's basis (fourier.basis_for). Shared by interpretability.py (the whole
analysis) and progress.py (the same measures over a run's snapshots); both import it, it imports neither.
"""
import torch

import fourier
from component_ablation import embedding_with
from dataset import make_table
from model import cross_entropy_per_row


class Grid:
    """All p*p input pairs (a major, b minor) and, for the pairs the op defines, labels and splits;
    and the op's Fourier basis (fourier.basis_for), or None with the reason in no_basis."""

    def __init__(self, p: int, op: str, train_idx: torch.Tensor, test_idx: torch.Tensor):
        self.p, self.op = p, op
        self.a, self.b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
        ta, tb, self.y = make_table(p, op)  # rows of the data set (div lacks b = 0)
        self.rows = ta * p + tb  # each data-set row's position in the grid
        self.split = {"all": torch.arange(len(self.y)), "train": train_idx, "test": test_idx}
        try:
            self.basis, self.no_basis = fourier.basis_for(p, op), None
        except fourier.NoBasis as err:
            self.basis, self.no_basis = None, str(err)
        self.in_basis = torch.zeros(p * p, dtype=torch.bool)  # the pairs the basis covers (mul: no 0 operand)
        if self.basis is not None:
            self.in_basis[self.basis.grid_rows(p)] = True

    def pairs(self, split: str, in_basis: bool = False) -> torch.Tensor:
        """The data-set rows of a split; with in_basis only those whose pair the basis covers."""
        idx = self.split[split]
        return idx[self.in_basis[self.rows[idx]]] if in_basis else idx

    def accuracy(self, logits_grid: torch.Tensor, split: str = "all") -> float:
        """Share of the split's pairs whose correct logit is strictly the largest (as loss_acc counts
        them), without the cost of the loss."""
        idx = self.split[split]
        logits, y = logits_grid[self.rows[idx]], self.y[idx]
        at_least_correct = (logits >= logits.gather(-1, y[:, None])).sum(-1)  # 1: only the correct one
        return (at_least_correct == 1).double().mean().item()

    def loss_acc(self, logits_grid: torch.Tensor, split: str = "all", in_basis: bool = False) -> tuple[float, float]:
        idx = self.pairs(split, in_basis)
        loss, correct = cross_entropy_per_row(logits_grid[self.rows[idx]], self.y[idx])
        return loss.mean().item(), correct.double().mean().item()


def token_embedding(model) -> torch.Tensor:
    """(p, width): the embedding rows of the p number tokens (the transformer's row p is "=")."""
    return model.W_E[:model.p]


def operand_power(hidden_pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Power per frequency of each operand's input to the neurons, (n//2,) each, from hidden_pre
    over the basis's position pairs as (n, n, d_hidden) (basis.grid of the (p, p) grid): averaged
    over b it is a table per a, over a one per b.
    For ToyMLP, whose hidden_pre is table_a[a] + table_b[b] + b_in, these are its token tables plus
    constants, which no frequency k >= 1 sees; for the transformer, the part of each neuron's input
    that depends on one operand."""
    pre = hidden_pre.double()
    return fourier.power_per_frequency(pre.mean(1)), fourier.power_per_frequency(pre.mean(0))


def grid_cache(model, grid) -> tuple[torch.Tensor, dict]:
    """Logits (p*p, p) and the cache over all pairs, hidden_pre / hidden_post shaped (p, p, d_hidden)."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(grid.a, grid.b)
    for name in ("hidden_pre", "hidden_post"):
        cache[name] = cache[name].reshape(grid.p, grid.p, -1)
    return logits, cache


def hidden_input_power(model, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """operand_power of the model's hidden_pre over the grid basis's position pairs."""
    return operand_power(grid.basis.grid(grid_cache(model, grid)[1]["hidden_pre"]))


def model_key_frequencies(model, grid) -> list[int]:
    """The key frequencies of a model (the rule of select_key_frequencies); [] without a basis."""
    return fourier_analysis(model, grid)["key_frequencies"]


NEURON_FRACTION = 0.5  # a neuron belongs to frequency k's cluster when k holds >= this share of its variance
REMOVAL_LOSS_RATIO = 2.0  # or: removing k from the embedding multiplies the loss on all pairs by >= this


def select_key_frequencies(candidates, neuron_freq, best_fraction, removal: list[dict], base_loss) -> tuple:
    """The key-frequency rule. A candidate stands out of the spectrum (fourier.key_frequencies:
    >= KEY_RATIO x the median power); it is a key frequency only if it matters as well: at least one
    neuron is in its cluster, or removing it from the embedding raises the loss >= REMOVAL_LOSS_RATIO x.
    removal: frequency_removal of each candidate alone. Returns (keys, evidence per candidate)."""
    evidence = {}
    for k, case in zip(candidates, removal):
        neurons = sum(1 for f, share in zip(neuron_freq, best_fraction) if f == k and share >= NEURON_FRACTION)
        ratio = case["loss"] / base_loss if base_loss > 0 else float("inf")
        evidence[k] = {"neurons": neurons, "removal_loss_ratio": ratio,
                       "key": neurons >= 1 or ratio >= REMOVAL_LOSS_RATIO}
    return [k for k in candidates if evidence[k]["key"]], evidence


def fourier_analysis(model, grid) -> dict:
    """Spectra, key frequencies, neuron frequencies, logit fit, restricted/excluded losses and
    frequency ablations (see fourier.py for each definition), in the grid's basis: Z_p for add and
    sub, the discrete logarithms for mul and div. Without a basis: {"basis": None, "no_basis": why}."""
    basis = grid.basis
    if basis is None:
        return {"basis": None, "no_basis": grid.no_basis, "key_frequencies": []}
    logits, cache = grid_cache(model, grid)
    with torch.no_grad():
        embed_power = fourier.power_per_frequency(basis.table(token_embedding(model)))
    hidden_power_a, hidden_power_b = operand_power(basis.grid(cache["hidden_pre"]))
    hidden_power = hidden_power_a + hidden_power_b
    fractions = fourier.neuron_frequency_fractions(basis.grid(cache["hidden_post"]))  # (d_hidden, n//2)
    best_fraction, best = fractions.max(dim=1)
    neuron_freq = (best + 1).tolist()
    candidates = fourier.key_frequencies(hidden_power)
    singles = [frequency_removal(model, grid, [k]) for k in candidates]  # each candidate removed alone
    keys, evidence = select_key_frequencies(candidates, neuron_freq, best_fraction.tolist(), singles,
                                            grid.loss_acc(logits)[0])
    assigned = [k if k in keys and f >= NEURON_FRACTION else None for k, f in zip(neuron_freq, best_fraction)]
    in_basis = logits[basis.grid_rows(grid.p)]  # (n*n, p) rows of the position pairs
    explained, alphas = fourier.logit_fit(in_basis[:, basis.tokens], keys, basis.op)
    return {
        "basis": basis, "frequencies": fourier.frequencies(basis.n), "embed_power": embed_power,
        "hidden_power_a": hidden_power_a, "hidden_power_b": hidden_power_b,
        "key_frequency_candidates": candidates, "key_frequency_evidence": evidence, "key_frequencies": keys,
        "key_frequency_power_fraction": fourier.power_fraction(hidden_power, keys),
        "embed_key_power_fraction": fourier.power_fraction(embed_power, keys),
        "neuron_fractions": fractions, "neuron_frequency": neuron_freq,
        "neuron_frequency_fraction": best_fraction.tolist(), "neuron_cluster": assigned,
        "logit_variance_explained": explained, "logit_alphas": alphas,
        **key_frequency_losses(logits, grid, keys),
        "frequency_ablation": [s for s in singles if s["frequencies"][0] in keys] + [non_key_removal(model, grid, keys)],
    }


def key_frequency_losses(logits, grid, keys: list[int]) -> dict:
    """Nanda et al.'s restricted loss (key directions only, all pairs) and excluded loss (key
    directions removed, training pairs), with the matching accuracies. Over the pairs the basis
    covers (for mul and div: no operand 0, whose products the logarithms cannot express)."""
    rows, op = grid.basis.grid_rows(grid.p), grid.basis.op

    def in_basis(part):  # the logits with the basis pairs' rows replaced by part(their rows)
        out = logits.double().clone()
        out[rows] = part(logits[rows], keys, op)
        return out

    restricted_loss, restricted_acc = grid.loss_acc(in_basis(fourier.restricted_logits), "all", in_basis=True)
    excluded_loss, excluded_acc = grid.loss_acc(in_basis(fourier.excluded_logits), "train", in_basis=True)
    return {"restricted_loss": restricted_loss, "restricted_acc": restricted_acc,
            "excluded_loss": excluded_loss, "excluded_acc": excluded_acc}


def frequency_ablation(model, grid, keys: list[int]) -> list[dict]:
    """Accuracy and loss on all pairs after projecting frequencies out of the number tokens'
    embeddings (W_E, in the grid's basis): each key frequency alone, then every non-key frequency at once."""
    return [frequency_removal(model, grid, [k]) for k in keys] + [non_key_removal(model, grid, keys)]


def frequency_removal(model, grid, freqs: list[int], name: str | None = None) -> dict:
    """Loss and accuracy on all pairs with freqs projected out of the number tokens' embeddings."""
    with torch.no_grad():
        W_E = embedding_with(model, grid.basis, freqs, "zero")
        loss, acc = grid.loss_acc(torch.func.functional_call(model, {"W_E": W_E}, (grid.a, grid.b)))
    return {"ablation": name or f"remove {freqs[0]}", "frequencies": freqs, "loss": loss, "acc": acc}


def non_key_removal(model, grid, keys: list[int]) -> dict:
    freqs = [k for k in fourier.frequencies(grid.basis.n) if k not in keys]
    return frequency_removal(model, grid, freqs, "remove all non-key")
