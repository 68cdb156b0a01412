"""Clock or pizza? The two measures of Zhong, Liu, Tegmark, Andreas (NeurIPS 2023), "The Clock and the
Pizza" (arXiv 2306.17844), for ToyMLP and the 1-layer transformer.

    Clock:  Q_abc = sum_k cos(w_k (a + b - c))                          (angles of a and b are added)
    Pizza:  Q_abc = sum_k |cos(w_k (a - b) / 2)| cos(w_k (a + b - c))   (the MLP reads E_a + E_b)

gradient symmetricity s_g (Def. 4.1): mean over random triples (a, b, c) of
    cos_sim(dQ_abc / dE_a, dQ_abc / dE_b), gradients with respect to the two operands' token embeddings.
    A pizza reads only E_a + E_b, so the two gradients coincide (s_g near 1); a clock multiplies
    functions of a and b, so they differ (the paper's clock: 0.33).
distance irrelevance q (Def. 4.2): with L[i, j] the correct logit on input (i, j),
    q = mean_d std_i L[i, i + d] / std(all L).
    A pizza's correct logit depends on the distance j - i (the |cos| factor), so within a distance it
    hardly varies (q near 0); a clock's does not depend on it (q near 1).

ToyMLP reads [E_a, E_b] through separate parts of W_in, so its s_g compares W_in_a g with W_in_b g: it
reaches 1 only where the two parts act alike on the shared embedding (the paper's pizza, a transformer
whose constant attention gives both operands the same weight, scores 0.9937).

    clock_or_pizza(model, p)  -> {"gradient_symmetricity", "distance_irrelevance", "verdict", ...}
"""
import functools
import math
import random

import numpy as np
import torch

# The paper's numbers ([Pizza-paper] and [Pizza-code] in ../shared/RESEARCH.md, section 2).
# Phase-diagram thresholds, Fig. 7 caption: runs are classified by s_g > 98 % and q < 0.6.
PIZZA_MIN_SYMMETRICITY = 0.98  # s_g above this points to pizza
PIZZA_MAX_IRRELEVANCE = 0.6  # q below this points to pizza
# Reference values, section 4.1.1 (s_g) and 4.1.2 (q): Model A (constant attention) is a pizza, Model B
# (standard attention) a clock; the notebook eval-main.ipynb gives s_g 0.99367 and q 0.1717 for Model A.
REFERENCE = {"pizza (Model A)": {"gradient_symmetricity": 0.9937, "distance_irrelevance": 0.17},
             "clock (Model B)": {"gradient_symmetricity": 0.3336, "distance_irrelevance": 0.85}}
PIZZA_Q_RANGE, CLOCK_Q_RANGE = (0.0, 0.4), (0.4, 1.0)  # typical q ranges, section 4.1.2
THRESHOLD_TEXT = ("Zhong et al. 2023 (Fig. 7): pizza if s_g > 0.98 and q < 0.6, clock if s_g <= 0.98 and "
                  "q >= 0.6; their pizza s_g 99.37 % q 0.17, their clock s_g 33.36 % q 0.85")

N_TRIPLES, TRIPLE_SEED = 100, 42  # footnote 3 and the notebook: 100 triples, random.Random(42)
EXACT_SHUFFLE_MAX = 2_000_000  # shuffle all p^3 triples up to this many (p <= 125); sample beyond
CONSTANT_RTOL = 1e-5  # std(L) below this share of max |L| is rounding: L counts as constant (q = 1)
COMMUTATIVE_OPS = ("add", "mul")


def shuffled_prefix(total: int, n: int, seed: int) -> list[int]:
    """The first n of list(range(total)) after random.Random(seed).shuffle, computed in numpy: the same
    numbers, about 5x faster than shuffling 1.4 M indices in Python (p = 113).

    shuffle swaps position i with j_i = randbelow(i + 1) for i = total - 1 down to 1. randbelow(m) takes 32-bit
    words of the Mersenne Twister, keeps each word's top m.bit_length() bits and rejects values >= m; numpy's
    MT19937 started from the same state gives the same words (shuffle_draws). Then the value that ends at
    position q is found by undoing the swaps for that position alone (undo_swaps)."""
    draws = shuffle_draws(total, seed)
    swapped_with = np.zeros(total, np.int64)  # swapped_with[i] = j_i (i >= 1)
    swapped_with[1:] = draws[::-1]
    return undo_swaps(swapped_with, min(n, total))


def shuffle_draws(total: int, seed: int, block: int = 1 << 16) -> np.ndarray:
    """randbelow(i + 1) for i = total - 1 down to 1, as random.Random(seed).shuffle draws them. Which step
    word t serves is t minus the words rejected before it, a recurrence solved per block of words by iterating
    to its fixed point (each round settles at least one more word; about 8 rounds per block in practice)."""
    state = random.Random(seed).getstate()[1]
    words = np.random.MT19937()
    words.state = {"bit_generator": "MT19937", "state": {"key": np.array(state[:624], np.uint32), "pos": state[624]}}
    steps = total - 1
    draws = np.empty(steps, np.int64)
    done, t = 0, np.arange(block)
    while done < steps:
        word = words.random_raw(block).astype(np.int64)
        rejected_before = np.zeros(block, np.int64)
        while True:
            step = done + t - rejected_before  # the step each word serves
            bound = total - np.minimum(step, steps - 1)  # randbelow(i + 1) with i = total - 1 - step
            value = word >> (32 - np.frexp(bound.astype(np.float64))[1])  # the top bound.bit_length() bits
            rejected = value >= bound
            settled = np.concatenate(([0], np.cumsum(rejected)[:-1]))
            if np.array_equal(settled, rejected_before):
                break
            rejected_before = settled
        kept = value[~rejected & (step < steps)]
        draws[done:done + len(kept)] = kept
        done += len(kept)
    return draws


def undo_swaps(swapped_with: np.ndarray, n: int) -> list[int]:
    """Where the values at positions 0..n-1 started, after swapping position i with swapped_with[i] for
    i = len - 1 down to 1. Undone in reverse (i upwards), position q first moves to swapped_with[q] at step q,
    then to every later step i that swaps i with where it is."""
    index = np.arange(len(swapped_with))
    moves = (swapped_with != index) & (index > 0)
    next_step = np.full(len(swapped_with), len(swapped_with))  # next_step[v]: the first step i > v swapping v
    np.minimum.at(next_step, swapped_with[moves], index[moves])
    small = np.flatnonzero(moves & (swapped_with < n))  # the steps that swap a position below n
    starts = []
    for q in range(n):
        position = swapped_with[q] if moves[q] else q
        later = small[(small > q) & (swapped_with[small] == position)]
        if len(later):
            position = later[0]
            while next_step[position] < len(swapped_with):
                position = next_step[position]
        starts.append(int(position))
    return starts


@functools.lru_cache(maxsize=8)
def random_triples(p: int, n: int = N_TRIPLES, seed: int = TRIPLE_SEED) -> tuple[tuple[int, int, int], ...]:
    """n triples (a, b, c) of Z_p^3, chosen as the paper's notebook does: random.Random(seed).shuffle of
    all p^3 triples in lexicographic order (a slowest, c fastest), then the first n.

    The shuffle is applied to the triples' indices a*p^2 + b*p + c (the same permutation: shuffle depends only
    on the length), in numpy (shuffled_prefix). Above EXACT_SHUFFLE_MAX triples it takes
    random.Random(seed).sample(range(p^3), n) instead: also n distinct uniform triples, but not the notebook's.
    Cached: the summary asks for the same triples for every model."""
    total = p ** 3
    if total <= EXACT_SHUFFLE_MAX:
        chosen = shuffled_prefix(total, n, seed)
    else:
        chosen = random.Random(seed).sample(range(total), min(n, total))
    return tuple((i // (p * p), i // p % p, i % p) for i in chosen)


def is_transformer(model) -> bool:
    """transformer.Transformer has attention weights (hook_embed); model.ToyMLP has embed_a / embed_b."""
    return hasattr(model, "W_Q")


def embedding_gradients(model, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dQ/dE_a, dQ/dE_b), each (batch, d): the gradient of row r's logit of class c[r] with respect to
    row r's token embedding of operand a and of operand b, in one forward and one backward.

    A hook swaps the embedding output for a detached copy that requires grad (a leaf we keep);
    the backward of the sum of the chosen logits gives each row its own gradient, since no
    layer mixes the rows of a batch. Transformer: hook_embed at positions 0 (a) and 1 (b), before the
    positional embedding is added, as the paper's notebook (forward_h). ToyMLP: embed_a, embed_b."""
    leaves = {}

    def make_leaf(name):
        def hook(x):
            leaves[name] = x.detach().requires_grad_()
            return leaves[name]
        return hook

    names = ("hook_embed",) if is_transformer(model) else ("embed_a", "embed_b")
    with torch.enable_grad():
        logits = model.run_with_hooks(a, b, hooks={name: make_leaf(name) for name in names})
        chosen = logits.gather(1, c[:, None]).sum()
        grads = torch.autograd.grad(chosen, [leaves[name] for name in names], allow_unused=True)
    grads = [torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, grads)]
    if is_transformer(model):
        return grads[0][:, 0], grads[0][:, 1]
    return grads[0], grads[1]


def cosine_or_zero(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity in float64; a row where either vector is exactly zero counts as 0
    (no direction to compare: an operand the logit ignores is not 'symmetric' with one it reads)."""
    x, y = x.double(), y.double()
    norms = x.norm(dim=-1) * y.norm(dim=-1)
    dots = (x * y).sum(-1)
    return torch.where(norms > 0, dots / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(dots))


def gradient_symmetricity(model, triples) -> float:
    """s_g (Def. 4.1): mean over triples (a, b, c) of cos_sim(dQ_abc/dE_a, dQ_abc/dE_b), in [-1, 1].
    triples: a sequence of (a, b, c) or an (n, 3) integer tensor."""
    device = next(model.parameters()).device
    t = torch.as_tensor(triples, dtype=torch.long, device=device).reshape(-1, 3)
    grad_a, grad_b = embedding_gradients(model, t[:, 0], t[:, 1], t[:, 2])
    return float(cosine_or_zero(grad_a, grad_b).mean())


def distance_irrelevance(correct_logit, sign: int = +1) -> float:
    """q (Def. 4.2) of an (n, n) correct-logit matrix L[i, j]: the entries are grouped by the
    distance (j - i) mod n, the population std (ddof 0, as the notebook's np.std) is taken within each
    group, averaged over the n groups, and divided by the std of all entries.

    sign=-1 for a network that computes i - j: its pizza depends on the other combination, so the groups
    are the sums (i + j) mod n. (The notebook's oo[(a+b)%C][(a-b)%C] recipe gives the same q for odd n;
    for even n it overwrites entries, which the grouping here does not.) An L that is constant up to
    rounding (std <= CONSTANT_RTOL * max |L|), as a perfect clock's, gives q = 1.0: 0/0, and a correct
    logit that does not vary at all is irrelevant to the distance."""
    L = np.asarray(torch.as_tensor(correct_logit).detach().cpu().double())
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"distance_irrelevance needs a square (n, n) matrix, got shape {L.shape}")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 (i + j: group by j - i) or -1 (i - j: group by i + j), got {sign}")
    total = L.std()
    if total == 0 or total <= CONSTANT_RTOL * np.abs(L).max():
        return 1.0
    n = L.shape[0]
    i, d = np.arange(n)[None, :], np.arange(n)[:, None]
    j = (i + d) % n if sign == 1 else (d - i) % n  # row d of the groups: j - i = d, or i + j = d
    return float(L[np.broadcast_to(i, j.shape), j].std(axis=1).mean() / total)


def correct_logit_grid(model, p: int, op: str = "add") -> torch.Tensor:
    """(p, p): L[a, b] = the model's logit of the correct class, (a + b) mod p for add, (a - b) for sub.
    Other ops need another basis (mul/div: discrete logs): the caller builds L and passes it on."""
    if op not in ("add", "sub"):
        raise ValueError(f"correct_logit_grid covers add and sub on Z_p, not {op!r}: build L in the op's basis")
    device = next(model.parameters()).device
    a, b = torch.cartesian_prod(torch.arange(p, device=device), torch.arange(p, device=device)).unbind(1)
    y = (a + b) % p if op == "add" else (a - b) % p
    with torch.no_grad():
        logits = model(a, b)
    return logits.gather(1, y[:, None]).reshape(p, p).cpu()


def verdict(s_g: float, q: float) -> str:
    """'pizza' (s_g > 0.98 and q < 0.6), 'clock' (s_g <= 0.98 and q >= 0.6), else 'mixed/unclear (...)'
    naming where each measure points (the paper's Fig. 7 classification)."""
    if math.isnan(s_g) or math.isnan(q):
        return f"mixed/unclear (a measure is not a number: s_g {s_g}, q {q})"
    sg_pizza, q_pizza = s_g > PIZZA_MIN_SYMMETRICITY, q < PIZZA_MAX_IRRELEVANCE
    if sg_pizza and q_pizza:
        return "pizza"
    if not sg_pizza and not q_pizza:
        return "clock"
    name = {True: "pizza", False: "clock"}
    sg_text = f"s_g {s_g:.3f} {'>' if sg_pizza else '<='} {PIZZA_MIN_SYMMETRICITY} points to {name[sg_pizza]}"
    q_text = f"q {q:.3f} {'<' if q_pizza else '>='} {PIZZA_MAX_IRRELEVANCE} points to {name[q_pizza]}"
    return f"mixed/unclear ({sg_text}, {q_text})"


def clock_or_pizza(model, p: int, op: str = "add", n_triples: int = N_TRIPLES, seed: int = TRIPLE_SEED,
                   correct_logit=None) -> dict:
    """Both measures, the verdict and the thresholds, as plain floats and strings (JSON-ready).

    correct_logit: an (n, n) matrix in the op's own basis (e.g. mul re-indexed by discrete logs); by
    default correct_logit_grid(model, p, op). Ops that compute i - j (sub, div) group q by i + j.
    The triples for s_g are drawn over Z_p (the model's tokens) whatever the basis of L."""
    L = correct_logit_grid(model, p, op) if correct_logit is None else correct_logit
    s_g = gradient_symmetricity(model, random_triples(p, n_triples, seed))
    q = distance_irrelevance(L, sign=-1 if op in ("sub", "div") else 1)
    note = "" if op in COMMUTATIVE_OPS else (
        f"{op} is not commutative: a network computing it need not treat a and b alike even as a pizza "
        "(it reads E_a with a reflected E_b), so a low s_g says little; the paper's thresholds were set on addition")
    return {"gradient_symmetricity": s_g, "distance_irrelevance": q, "verdict": verdict(s_g, q),
            "thresholds": {"pizza_if_symmetricity_above": PIZZA_MIN_SYMMETRICITY,
                           "pizza_if_irrelevance_below": PIZZA_MAX_IRRELEVANCE, "text": THRESHOLD_TEXT},
            "n_triples": n_triples, "seed": seed, "note": note}
