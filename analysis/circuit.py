"""The Fourier circuit of a model, measured over all p*p input pairs (a Grid): its key frequencies
(spectrum candidates that matter), neuron clusters, logit fit, restricted and excluded losses and
frequency ablations, in the op's basis (fourier.basis_for). Shared by the whole analysis (summary.py) and
the progress measures (the same measures over a run's snapshots).
Everything runs over the pairs in chunks (Grid.chunks): memory grows as p^2 x d_hidden, not as p^3.
"""
import torch

from analysis import fourier
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
        self.position = torch.full((p * p,), -1)  # each grid row's position pair in the basis (-1: none)
        if self.basis is not None:
            self.position[self.basis.grid_rows(p)] = torch.arange(self.basis.n**2)
        self.in_basis = self.position >= 0  # the pairs the basis covers (mul: no 0 operand)

    def pairs(self, split: str, in_basis: bool = False) -> torch.Tensor:
        """The data-set rows of a split; with in_basis only those whose pair the basis covers."""
        idx = self.split[split]
        return idx[self.in_basis[self.rows[idx]]] if in_basis else idx

    def loss_acc(self, logits_grid: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy of (p*p, p) logits over the grid, on every pair the op defines."""
        loss, correct = cross_entropy_per_row(logits_grid[self.rows], self.y)
        return loss.mean().item(), correct.double().mean().item()

    def chunks(self, index: torch.Tensor | None = None) -> list[torch.Tensor]:
        """index (default: all p*p grid rows) cut into pieces whose (rows, p) float32 logits take at most
        fourier.CHUNK_BYTES: the analysis holds a few such tables per piece, never the whole (p*p, p) grid."""
        index = torch.arange(self.p * self.p) if index is None else index
        return list(index.split(max(1, fourier.CHUNK_BYTES // (4 * self.p))))

    def basis_chunks(self) -> list[torch.Tensor]:
        """The basis's n*n position pairs (indices, in basis order) in chunks."""
        return self.chunks(torch.arange(self.basis.n**2))

    def scores(self, variants, split: str, in_basis: bool = False) -> list:
        """Loss and accuracy (as loss_acc) of several logit variants over a split, one chunk at a time:
        variants(pairs) yields each variant's (rows, p) logits on the grid rows `pairs` (the same number of
        variants for every chunk, so work shared by the variants is done once per chunk). [(loss, acc), ...]"""
        idx = self.pairs(split, in_basis)
        sums = []
        for part in self.chunks(idx):
            for v, logits in enumerate(variants(self.rows[part])):
                loss, correct = cross_entropy_per_row(logits, self.y[part])
                if v == len(sums):
                    sums.append([0.0, 0])
                sums[v][0] += float(loss.sum())
                sums[v][1] += int(correct.sum())
        return [(loss / len(idx), correct / len(idx)) for loss, correct in sums]

    def score(self, source, split: str = "all", in_basis: bool = False) -> tuple[float, float]:
        """loss_acc of a model (run chunk by chunk on the split's pairs), of a function pairs -> logits
        or of a (p*p, p) logits table (logits_function)."""
        logits_of = logits_function(source, self)
        with torch.no_grad():
            return self.scores(lambda pairs: [logits_of(pairs)], split, in_basis)[0]


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
    return (fourier.power_per_frequency(fourier.mean_float64(hidden_pre, 1)),
            fourier.power_per_frequency(fourier.mean_float64(hidden_pre, 0)))


def logits_function(source, grid):
    """pairs -> logits on those grid rows, from a model (run on them), a (p*p, p) logits table (its rows)
    or such a function itself."""
    if isinstance(source, torch.nn.Module):
        return lambda pairs: source(grid.a[pairs], grid.b[pairs])
    return (lambda pairs: source[pairs]) if isinstance(source, torch.Tensor) else source


def grid_activations(model, grid, names=("hidden_post",)) -> dict[str, torch.Tensor]:
    """The named activations of the cache over all p*p pairs, run chunk by chunk (the logits are never
    held for the whole grid); hidden_pre and hidden_post shaped (p, p, d_hidden)."""
    out = {}
    with torch.no_grad():
        for pairs in grid.chunks():
            cache = model.run_with_cache(grid.a[pairs], grid.b[pairs])[1]
            for name in names:  # filled in place: no second copy of the grid, no chunk's cache kept alive
                if name not in out:
                    out[name] = torch.empty(grid.p**2, *cache[name].shape[1:], dtype=cache[name].dtype)
                out[name][pairs] = cache[name]
    return {name: x.reshape(grid.p, grid.p, -1) if name in ("hidden_pre", "hidden_post") else x
            for name, x in out.items()}


def hidden_input_power(model, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """operand_power of the model's hidden_pre over the grid basis's position pairs."""
    return operand_power(grid.basis.grid(grid_activations(model, grid, ["hidden_pre"])["hidden_pre"]))


def model_key_frequencies(model, grid) -> list[int]:
    """The key frequencies of a model (the rule of select_key_frequencies); [] without a basis."""
    return fourier_analysis(model, grid)["key_frequencies"]


NEURON_FRACTION = 0.5  # a neuron belongs to frequency k's cluster when k holds >= this share of its variance
REMOVAL_LOSS_RATIO = 2.0  # or: removing k from the embedding multiplies the loss on all pairs by >= this


def in_cluster(share: float) -> bool:
    """Whether a neuron whose best frequency holds this share of its variance belongs to that frequency's cluster."""
    return share >= NEURON_FRACTION


def select_key_frequencies(candidates, neuron_freq, best_fraction, removal: list[dict], base_loss) -> tuple:
    """The key-frequency rule. A candidate stands out of the spectrum (fourier.key_frequencies:
    >= KEY_RATIO x the median power); it is a key frequency only if it matters as well: at least one
    neuron is in its cluster, or removing it from the embedding raises the loss >= REMOVAL_LOSS_RATIO x.
    removal: frequency_removal of each candidate alone. Returns (keys, evidence per candidate)."""
    evidence = {}
    for k, case in zip(candidates, removal):
        neurons = sum(1 for f, share in zip(neuron_freq, best_fraction) if f == k and in_cluster(share))
        ratio = case["loss"] / base_loss if base_loss > 0 else float("inf")
        evidence[k] = {"neurons": neurons, "removal_loss_ratio": ratio,
                       "key": neurons >= 1 or ratio >= REMOVAL_LOSS_RATIO}
    return [k for k in candidates if evidence[k]["key"]], evidence


def fourier_analysis(model, grid) -> dict:
    """Spectra, key frequencies, neuron frequencies, logit fit, restricted/excluded losses and
    frequency ablations (see fourier.py for each definition), in the grid's basis: Z_p for add and
    sub, the discrete logarithms for mul and div. Without a basis: {"basis": None, "no_basis": why}.
    Runs chunk by chunk over the pairs: it holds hidden_post over the grid, never all the logits."""
    basis = grid.basis
    if basis is None:
        return {"basis": None, "no_basis": grid.no_basis, "key_frequencies": []}
    with torch.no_grad():
        embed_power = fourier.power_per_frequency(basis.table(token_embedding(model)))
        hidden_power_a, hidden_power_b = hidden_input_power(model, grid)
        hidden_power = hidden_power_a + hidden_power_b
        hidden_post = grid_activations(model, grid)["hidden_post"]
        fractions = fourier.neuron_frequency_fractions(basis.grid(hidden_post))  # (d_hidden, n//2)
        del hidden_post
        best_fraction, best = fractions.max(dim=1)
        neuron_freq = (best + 1).tolist()
        candidates = fourier.key_frequencies(hidden_power)
        singles = [frequency_removal(model, grid, [k]) for k in candidates]  # each candidate removed alone
        keys, evidence = select_key_frequencies(candidates, neuron_freq, best_fraction.tolist(), singles,
                                                grid.score(model)[0])
        assigned = [k if k in keys and in_cluster(f) else None for k, f in zip(neuron_freq, best_fraction)]
        explained, alphas = fourier.logit_fit_chunked(lambda: basis_logit_chunks(model, grid), keys)
        losses = key_frequency_losses(model, grid, keys)
    return {
        "basis": basis, "frequencies": fourier.frequencies(basis.n), "embed_power": embed_power,
        "hidden_power_a": hidden_power_a, "hidden_power_b": hidden_power_b,
        "key_frequency_candidates": candidates, "key_frequency_evidence": evidence, "key_frequencies": keys,
        "key_frequency_power_fraction": fourier.power_fraction(hidden_power, keys),
        "embed_key_power_fraction": fourier.power_fraction(embed_power, keys),
        "neuron_fractions": fractions, "neuron_frequency": neuron_freq,
        "neuron_frequency_fraction": best_fraction.tolist(), "neuron_cluster": assigned,
        "logit_variance_explained": explained, "logit_alphas": alphas, **losses,
        "frequency_ablation": [s for s in singles if s["frequencies"][0] in keys] + [non_key_removal(model, grid, keys)],
    }


def basis_logit_chunks(model, grid):
    """The logits over the basis's position pairs in pieces: (logits (rows, n), s (rows,)) with the columns
    in position order and s the combination of each pair's positions (as fourier.logit_fit_chunked takes them)."""
    basis = grid.basis
    rows, s = basis.grid_rows(grid.p), fourier.combination(basis.n, basis.op).reshape(-1)
    for part in grid.basis_chunks():
        yield model(grid.a[rows[part]], grid.b[rows[part]])[:, basis.tokens], s[part]


def key_frequency_losses(model_or_logits, grid, keys: list[int]) -> dict:
    """Nanda et al.'s restricted loss (key directions only, all pairs) and excluded loss (key
    directions removed, training pairs), with the matching accuracies. Over the pairs the basis
    covers (for mul and div: no operand 0, whose products the logarithms cannot express).
    model_or_logits: a model (run chunk by chunk) or its (p*p, p) logits over the grid. As
    fourier.restricted_logits / excluded_logits, in two passes: the key directions' coefficients
    (and each output's mean) over all position pairs, then the losses."""
    logits_of, basis = logits_function(model_or_logits, grid), grid.basis
    rows = basis.grid_rows(grid.p)  # grid row of each position pair
    dirs = fourier.trig_directions(basis.n, keys, basis.op)  # (2K, n*n) over position pairs
    coefficients, total = torch.zeros(len(dirs), grid.p, dtype=torch.float64), 0
    with torch.no_grad():
        for part in grid.basis_chunks():
            logits = logits_of(rows[part]).double()
            coefficients += dirs[:, part] @ logits
            total = total + logits.sum(0)

        def key_part(pairs):
            return dirs[:, grid.position[pairs]].T @ coefficients

        def restricted(pairs):
            return [key_part(pairs) + total / basis.n**2]

        def excluded(pairs):
            return [logits_of(pairs).double() - key_part(pairs)]

        (restricted_loss, restricted_acc), = grid.scores(restricted, "all", in_basis=True)
        (excluded_loss, excluded_acc), = grid.scores(excluded, "train", in_basis=True)
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
        loss, acc = grid.score(lambda pairs: torch.func.functional_call(model, {"W_E": W_E}, (grid.a[pairs], grid.b[pairs])))
    return {"ablation": name or f"remove {freqs[0]}", "frequencies": freqs, "loss": loss, "acc": acc}


def non_key_removal(model, grid, keys: list[int]) -> dict:
    freqs = [k for k in fourier.frequencies(grid.basis.n) if k not in keys]
    return frequency_removal(model, grid, freqs, "remove all non-key")


def embedding_with(model, basis, freqs: list[int], mode: str) -> torch.Tensor:
    """W_E with the number tokens' component in freqs (in the basis) set to 0 or to its mean over tokens."""
    W_E = model.W_E.detach().clone()
    table = basis.table(W_E[:model.p])
    kept = fourier.remove_frequencies(table, freqs)
    part = table - kept
    W_E[basis.tokens] = kept + (0 if mode == "zero" else part.mean(0, keepdim=True))
    return W_E


def correct_logit_in_basis(model_or_logits, grid) -> torch.Tensor:
    """(n, n): the correct class's logit on the pair at positions (i, j) of the grid's basis; from a model
    (run chunk by chunk) or its (p*p, p) logits over the grid."""
    basis, logits_of = grid.basis, logits_function(model_or_logits, grid)
    correct = basis.tokens[fourier.combination(basis.n, basis.op).reshape(-1)]
    rows = basis.grid_rows(grid.p)
    with torch.no_grad():
        parts = [logits_of(rows[part]).gather(1, correct[part, None]) for part in grid.basis_chunks()]
    return torch.cat(parts).reshape(basis.n, basis.n)
