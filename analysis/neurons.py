"""Which neurons matter: single-neuron ablations ranked against activation variance, ablation curves, and
the circuit size (the fewest neurons that keep 99 % accuracy with the rest mean-ablated).

Ablations do not rerun the model: the neurons (hidden_post) feed the logits linearly through
model.neuron_readout(), so setting k neurons to other values moves every margin z_c - z_y by a
rank-(k + 1) update, added a block of rows at a time (row_blocks) right before that block's loss is taken.

    rank_neurons(model, grid) -> {"causal_order", "mean_ablation_loss_increase", ...}
    ablation_curves(model, grid, causal_order); circuit_size(model, grid, causal_order)
"""
import torch
from tqdm import tqdm

from analysis import fourier
from analysis.circuit import grid_activations
from model import cross_entropy_of_margins, margins

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



def reindex_by_frequency(act: torch.Tensor, k: int) -> torch.Tensor:
    """act (n, n) over the positions (a, b) of Z_n, with rows and columns sorted by the phase k*a mod n
    (stable): for k invertible mod n, row j holds a = j / k, so cos(w_k a) = cos(2 pi j / n) and a
    frequency-k neuron shows as one smooth wave; when k shares a factor d with n (mul's Z_112 has
    many such k), the d positions of each phase sit side by side and the wave has steps."""
    order = torch.argsort((k * torch.arange(act.shape[0])) % act.shape[0], stable=True)
    return act[order][:, order]
