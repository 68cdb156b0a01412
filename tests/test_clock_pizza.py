"""Known-answer tests for clock_pizza: hand-built clocks and pizzas, hand-computed q, and gradients
checked against finite differences."""
import array
import itertools
import json
import math
import random

import numpy as np
import pytest
import torch

from analysis import clock_pizza as cp
from analysis.circuit import Grid
from analysis.summary import analyze
from core.transformer import Transformer
from dataset import make_data
from handbuilt import (
    discrete_log_model,
    fourier_transformer,
    handbuilt_model,
    handbuilt_transformer,
    pizza_model,
    pizza_weights,
)
from model import ToyMLP

P = 59  # the paper's modulus
KEYS = [17, 3, 44]  # the paper's Model A frequencies (2 pi / 59 * {17, 3, 44})


def all_pairs(p):
    return torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)


# ---------------------------------------------------------------- the hand-built clock and pizza


def test_handbuilt_clock_is_a_clock():
    model, _ = handbuilt_model(P, KEYS)
    L = cp.correct_logit_grid(model, P)
    assert torch.allclose(L, torch.full_like(L, 4 * 5.0 * len(KEYS)), atol=1e-4)  # constant: a perfect clock
    result = cp.clock_or_pizza(model, P)
    assert result["distance_irrelevance"] == 1.0  # the documented convention for a constant L
    assert result["gradient_symmetricity"] < 0.5
    assert result["verdict"] == "clock"


def test_clock_symmetricity_is_the_mean_cosine_of_the_operand_difference():
    """Q = 4 s sum_k cos(w_k(a + b - c)), bilinear in the circle coordinates: dQ/dE_a per key is
    (cos w(b-c), -sin w(b-c)) and dQ/dE_b is (cos w(a-c), -sin w(a-c)), blocks of equal norm, so
    cos_sim = mean_k cos(w_k (a - b)) exactly."""
    model, _ = handbuilt_model(P, KEYS)
    triples = cp.random_triples(P)
    expected = np.mean([np.mean([math.cos(2 * math.pi * k * (a - b) / P) for k in KEYS]) for a, b, _ in triples])
    assert cp.gradient_symmetricity(model, triples) == pytest.approx(expected, abs=1e-5)


def test_clock_with_a_sum_dependent_bias_has_q_one_without_the_constant_rule():
    """b_U adds bias[c] to every logit, so L[a, b] = const + bias[(a + b) mod p]: for odd p, a fixed
    distance d meets every sum (2i + d covers Z_p), so each group's std is the overall std: q = 1."""
    model, _ = handbuilt_model(P, KEYS)
    with torch.no_grad():
        model.b_U.copy_(torch.randn(P, generator=torch.Generator().manual_seed(0)))
    L = cp.correct_logit_grid(model, P)
    assert L.std() > 0.1  # not the constant case
    assert cp.distance_irrelevance(L) == pytest.approx(1.0, abs=1e-6)
    assert cp.clock_or_pizza(model, P)["verdict"] == "clock"


def test_handbuilt_pizza_computes_addition_and_is_a_pizza():
    model = pizza_model(P, KEYS)
    a, b = all_pairs(P)
    with torch.no_grad():
        assert (model(a, b).argmax(1) == (a + b) % P).all()
    result = cp.clock_or_pizza(model, P)
    assert result["gradient_symmetricity"] == pytest.approx(1.0, abs=1e-6)  # dQ/dE_a = dQ/dE_b exactly
    assert result["distance_irrelevance"] < 0.1  # L depends on a - b, up to the aliasing
    assert result["verdict"] == "pizza"


def test_handbuilt_pizza_logits_follow_the_pizza_formula():
    """The construction is what its docstring says: the logits are (2 M / 3 pi) times
    sum_k |cos(w_k (a - b) / 2)| cos(w_k (a + b - c)), to within the aliasing."""
    directions = 32
    model = pizza_model(P, KEYS, directions)
    a, b = all_pairs(P)
    with torch.no_grad():
        logits = model(a, b).double()
    c = torch.arange(P, dtype=torch.float64)
    formula = sum(torch.cos(torch.pi * k * (a - b).double() / P).abs()[:, None]
                  * torch.cos(2 * torch.pi * k * ((a + b).double()[:, None] - c) / P) for k in KEYS)
    assert torch.allclose(logits, 2 * directions / (3 * math.pi) * formula, atol=0.02 * logits.abs().max())


def test_pizza_and_clock_in_the_transformer():
    """The same circuits behind the transformer's two position-only heads (tests/handbuilt.py): the
    gradients at positions 0 and 1 of hook_embed are the MLP's gradients for E_a and E_b."""
    clock, _ = fourier_transformer(P, KEYS)
    mlp_clock, _ = handbuilt_model(P, KEYS)
    triples = cp.random_triples(P)
    assert cp.gradient_symmetricity(clock, triples) == pytest.approx(
        cp.gradient_symmetricity(mlp_clock, triples), abs=1e-5)
    assert cp.clock_or_pizza(clock, P)["verdict"] == "clock"

    W_E, W_in, W_U = pizza_weights(P, KEYS)
    pizza, _ = handbuilt_transformer(W_E.float(), W_in.float(), torch.zeros(W_in.shape[1]), W_U.float(),
                                     torch.zeros(P), "relu")
    result = cp.clock_or_pizza(pizza, P)
    assert result["gradient_symmetricity"] > 0.999
    assert result["distance_irrelevance"] < 0.1
    assert result["verdict"] == "pizza"


# ---------------------------------------------------------------- distance irrelevance by hand


def test_q_of_a_function_of_the_distance_is_zero():
    n = 7
    f = torch.randn(n, generator=torch.Generator().manual_seed(1))
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    assert cp.distance_irrelevance(f[(j - i) % n]) == pytest.approx(0.0, abs=1e-12)
    assert cp.distance_irrelevance(f[(i + j) % n], sign=-1) == pytest.approx(0.0, abs=1e-12)
    # the pizza formula's correct logit, sum_k |cos(w_k (a - b)/2)|, depends on the distance only
    i, j = torch.arange(P)[:, None], torch.arange(P)[None, :]
    pizza_L = sum(torch.cos(torch.pi * k * (i - j).double() / P).abs() for k in KEYS)
    assert cp.distance_irrelevance(pizza_L) == pytest.approx(0.0, abs=1e-12)


def test_q_of_a_3x3_matrix_computed_by_hand():
    """L[i, j] = f(j - i) + g(i + j) mod 3 with f = (0, 0, 3), g = (0, 1, 2):
    each distance group holds {0, 1, 2} + const, std sqrt(2/3); all of L: 0 1 5 / 4 2 0 / 2 3 1,
    mean 2, variance 24/9 = 8/3. q = sqrt(2/3) / sqrt(8/3) = 1/2.
    Grouped by sums (sign=-1) each group holds f's values {0, 0, 3} + const, std sqrt(2): q = sqrt(3)/2."""
    L = torch.tensor([[0.0, 1, 5], [4, 2, 0], [2, 3, 1]])
    assert cp.distance_irrelevance(L) == pytest.approx(0.5, abs=1e-12)
    assert cp.distance_irrelevance(L, sign=-1) == pytest.approx(math.sqrt(3) / 2, abs=1e-12)
    assert cp.distance_irrelevance(L.T) == pytest.approx(0.5, abs=1e-12)  # j - i or i - j: the same groups


def test_q_matches_the_notebook_recipe_for_odd_p():
    """eval-main.ipynb: oo[(a+b)%C][(a-b)%C] = L[a, b]; q = mean(std(oo, axis=0)) / std(oo.flatten())."""
    n = 11
    L = np.random.default_rng(0).normal(size=(n, n))
    oo = np.zeros((n, n))
    for a, b in itertools.product(range(n), repeat=2):
        oo[(a + b) % n][(a - b) % n] = L[a, b]
    assert cp.distance_irrelevance(L) == pytest.approx(np.mean(np.std(oo, axis=0)) / np.std(oo.flatten()), abs=1e-12)


def test_q_conventions_and_bad_input():
    assert cp.distance_irrelevance(torch.full((5, 5), 3.0)) == 1.0  # exactly constant: 0/0 -> 1
    assert cp.distance_irrelevance(torch.zeros(5, 5)) == 1.0
    nearly = 3.0 + 1e-7 * torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    assert cp.distance_irrelevance(nearly) == 1.0  # rounding noise is not structure
    with pytest.raises(ValueError, match="square"):
        cp.distance_irrelevance(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="sign"):
        cp.distance_irrelevance(torch.zeros(3, 3), sign=2)


def test_q_of_a_matrix_whose_std_is_one():
    """A +-1 checkerboard, L[i, j] = (-1)^(j - i): all of L has std exactly 1 (mean 0, every square 1),
    and each distance group is constant, so q = 0 (a std of 1 is nothing special)."""
    i, j = torch.arange(4)[:, None], torch.arange(4)[None, :]
    L = (-1.0) ** (j - i)
    assert L.double().std(correction=0) == 1.0
    assert cp.distance_irrelevance(L) == 0.0


def test_q_at_the_rounding_bound_counts_as_constant():
    """The constant rule is std <= CONSTANT_RTOL * max |L|, bound included. L = 100000 on the diagonal,
    99998 off it: mean 99999, every deviation +-1, std exactly 1 = 1e-5 * 100000. Each distance group is
    constant (q would be 0), but at the bound L counts as constant: q = 1."""
    assert cp.CONSTANT_RTOL * 100000.0 == 1.0  # exact in float64: the bound is reached, not crossed
    L = torch.tensor([[100000.0, 99998.0], [99998.0, 100000.0]], dtype=torch.float64)
    assert L.std(correction=0) == 1.0
    assert cp.distance_irrelevance(L) == 1.0


# ---------------------------------------------------------------- gradients


def finite_difference_gradients(model, triples, eps=1e-6):
    """(dQ/dE_a, dQ/dE_b) by central differences: hooks that add +-eps to one coordinate of one
    operand's embedding (no detach/requires_grad involved). model in float64."""
    transformer = cp.is_transformer(model)
    d = model.d_model if transformer else model.d_embed
    out = []
    for a, b, c in triples:
        rows = [(operand, k, s) for operand in (0, 1) for k in range(d) for s in (1, -1)]
        delta = torch.zeros(len(rows), 2, d, dtype=torch.float64)
        for r, (operand, k, s) in enumerate(rows):
            delta[r, operand, k] = s * eps
        if transformer:
            hooks = {"hook_embed": lambda x, delta=delta: x + torch.cat([delta, torch.zeros_like(delta[:, :1])], 1)}
        else:
            hooks = {"embed_a": lambda x, delta=delta: x + delta[:, 0], "embed_b": lambda x, delta=delta: x + delta[:, 1]}
        n = len(rows)
        with torch.no_grad():
            q = model.run_with_hooks(torch.full((n,), a), torch.full((n,), b), hooks=hooks)[:, c]
        out.append(((q[0::2] - q[1::2]) / (2 * eps)).reshape(2, d))
    grads = torch.stack(out)  # (triples, operand, d)
    return grads[:, 0], grads[:, 1]


@pytest.mark.parametrize("arch", ["transformer", "mlp"])
def test_hook_gradients_match_finite_differences(arch):
    torch.manual_seed(0)
    p = 7
    model = (Transformer(p, d_model=8, n_heads=2, d_mlp=16) if arch == "transformer"
             else ToyMLP(p, d_embed=6, d_hidden=16)).double().eval()
    triples = [(0, 1, 2), (3, 5, 1), (6, 6, 4), (2, 4, 6)]
    t = torch.tensor(triples)
    grad_a, grad_b = cp.embedding_gradients(model, t[:, 0], t[:, 1], t[:, 2])
    fd_a, fd_b = finite_difference_gradients(model, triples)
    assert torch.allclose(grad_a, fd_a, atol=1e-7) and torch.allclose(grad_b, fd_b, atol=1e-7)
    assert not torch.allclose(grad_a, grad_b, atol=1e-3)  # a random network: the operands differ
    expected = torch.nn.functional.cosine_similarity(fd_a, fd_b).mean().item()
    assert cp.gradient_symmetricity(model, triples) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("arch", ["transformer", "mlp"])
def test_each_triple_gets_its_own_gradient(arch):
    """The batch is one forward and one backward of the summed logits: the rows must not mix."""
    torch.manual_seed(1)
    p = 11
    model = (Transformer(p, d_model=16, n_heads=2, d_mlp=32) if arch == "transformer"
             else ToyMLP(p, d_embed=8, d_hidden=32)).eval()
    t = torch.tensor(cp.random_triples(p, 20))
    grad_a, grad_b = cp.embedding_gradients(model, t[:, 0], t[:, 1], t[:, 2])
    for r in range(len(t)):
        one_a, one_b = cp.embedding_gradients(model, t[r:r + 1, 0], t[r:r + 1, 1], t[r:r + 1, 2])
        assert torch.allclose(grad_a[r], one_a[0], atol=1e-6) and torch.allclose(grad_b[r], one_b[0], atol=1e-6)


def operand_network(b_weight: float) -> ToyMLP:
    """A random ReLU ToyMLP whose b part of W_in is b_weight times its a part (always-active neurons)."""
    torch.manual_seed(2)
    model = ToyMLP(13, d_embed=8, d_hidden=32)
    d = model.d_embed
    with torch.no_grad():
        model.W_in[d:] = b_weight * model.W_in[:d]
        model.b_in.fill_(100.0)  # every neuron active: gradients never vanish
    return model.eval()


def test_a_network_that_ignores_b_has_zero_b_gradient_and_symmetricity_zero():
    """The zero-gradient convention: cos_sim with a zero vector counts as 0. Also proves a and b are not
    swapped: the a gradient is the non-zero one."""
    model = operand_network(0.0)
    t = torch.tensor(cp.random_triples(13, 30))
    grad_a, grad_b = cp.embedding_gradients(model, t[:, 0], t[:, 1], t[:, 2])
    assert (grad_b == 0).all() and (grad_a.norm(dim=1) > 0).all()
    assert cp.gradient_symmetricity(model, t) == 0.0


class DetachedB(ToyMLP):
    """A ToyMLP whose forward uses a detached copy of E_b: b's embedding takes no part in the graph
    (autograd has no gradient for it at all, not even a zero one)."""

    def run_with_hooks(self, a, b, hooks=None, cache=None):
        hooks = dict(hooks or {})
        hook_b = hooks.pop("embed_b", lambda x: x)
        hooks["embed_b"] = lambda x: hook_b(x).detach()
        return super().run_with_hooks(a, b, hooks, cache)


def test_an_operand_outside_the_graph_has_zero_gradient():
    """dQ/dE_b of a network that never differentiates through E_b is zero (a documented convention, not
    an error), dQ/dE_a is the usual one, and s_g is 0."""
    torch.manual_seed(5)
    model = ToyMLP(7, d_embed=4, d_hidden=8).eval()
    detached = DetachedB(7, d_embed=4, d_hidden=8)
    detached.load_state_dict(model.state_dict())
    t = torch.tensor([(0, 1, 2), (3, 5, 1), (6, 6, 4)])
    grad_a, grad_b = cp.embedding_gradients(detached.eval(), t[:, 0], t[:, 1], t[:, 2])
    assert (grad_b == 0).all()
    assert torch.allclose(grad_a, cp.embedding_gradients(model, t[:, 0], t[:, 1], t[:, 2])[0])
    assert cp.gradient_symmetricity(detached, t) == 0.0


def test_symmetric_and_antisymmetric_operands():
    """W_in's b part = a part: the net reads E_a + E_b, s_g = 1; b part = -(a part): it reads E_a - E_b,
    dQ/dE_b = -dQ/dE_a, s_g = -1 (the cosine keeps its sign)."""
    triples = cp.random_triples(13, 30)
    assert cp.gradient_symmetricity(operand_network(1.0), triples) == pytest.approx(1.0, abs=1e-6)
    assert cp.gradient_symmetricity(operand_network(-1.0), triples) == pytest.approx(-1.0, abs=1e-6)


def test_cosine_or_zero():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, -1.0], [0.0, 3.0]])
    assert cp.cosine_or_zero(x, y).tolist() == pytest.approx([1.0, 0.0, -1.0, 0.0])
    # rows are the last dimension: a single pair of vectors is one row, 3-4-5 triangles: 24 / 25
    assert cp.cosine_or_zero(torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])).item() == pytest.approx(24 / 25)


def test_triples_as_a_compact_integer_array():
    """triples may be any integer array, also a compact one (p = 59 fits a byte): an int16 tensor or a
    uint8 numpy array gives the list's s_g."""
    model, _ = handbuilt_model(P, KEYS)
    triples = cp.random_triples(P, 20)
    expected = cp.gradient_symmetricity(model, triples)
    assert cp.gradient_symmetricity(model, torch.tensor(triples, dtype=torch.int16)) == expected
    assert cp.gradient_symmetricity(model, np.array(triples, dtype=np.uint8)) == expected


# ---------------------------------------------------------------- triples, grid, verdict, result


def test_random_triples_are_the_notebooks_shuffle():
    random.seed(0)  # the global RNG must play no part
    p = 7
    everything = list(itertools.product(range(p), repeat=3))
    random.Random(42).shuffle(everything)
    assert list(cp.random_triples(p)) == everything[:100]
    assert list(cp.random_triples(p, 10, seed=3)) != everything[:10]


@pytest.mark.parametrize("total, seed", [(2, 0), (8, 42), (343, 3), (10_000, 42), (113 ** 3, 42), (113 ** 3, 1)])
def test_the_numpy_shuffle_gives_pythons_numbers(total, seed):
    order = array.array("q", range(total))
    random.Random(seed).shuffle(order)
    assert cp.shuffled_prefix(total, 100, seed) == list(order[:100])


@pytest.mark.parametrize("block", [1, 2, 5, 64])
def test_the_draws_cross_blocks_of_words_as_python_draws_them(block):
    for total, seed in ((8, 0), (27, 42), (125, 3)):  # small bounds: rejections and exact hits are frequent
        rng = random.Random(seed)
        expected = [rng._randbelow(i + 1) for i in reversed(range(1, total))]  # what shuffle calls
        assert cp.shuffle_draws(total, seed, block).tolist() == expected


def test_undoing_the_swaps_finds_where_each_value_started():
    rng = np.random.default_rng(0)
    for _ in range(300):
        length = int(rng.integers(1, 12))
        swapped_with = np.array([int(rng.integers(0, i + 1)) for i in range(length)])  # many swap i with i
        swapped_with[0] = int(rng.integers(0, 50))  # position 0 takes no step of its own: its entry is ignored
        values = list(range(length))
        for i in range(length - 1, 0, -1):
            j = swapped_with[i]
            values[i], values[j] = values[j], values[i]
        n = int(rng.integers(1, length + 1))
        assert cp.undo_swaps(swapped_with, n) == values[:n]


def test_random_triples_beyond_the_shuffle_limit(monkeypatch):
    monkeypatch.setattr(cp, "EXACT_SHUFFLE_MAX", 100)
    cp.random_triples.cache_clear()
    try:
        triples = cp.random_triples(7, 50)
        assert len(set(triples)) == 50 and all(0 <= x < 7 for t in triples for x in t)
        assert triples == tuple((i // 49, i // 7 % 7, i % 7) for i in random.Random(42).sample(range(343), 50))
    finally:
        cp.random_triples.cache_clear()


def test_correct_logit_grid_picks_the_correct_class():
    torch.manual_seed(3)
    p = 7
    model = ToyMLP(p, 4, 8).eval()
    a, b = all_pairs(p)
    with torch.no_grad():
        logits = model(a, b).reshape(p, p, p)
    add, sub = cp.correct_logit_grid(model, p, "add"), cp.correct_logit_grid(model, p, "sub")
    for x, y in [(0, 0), (2, 5), (6, 3)]:
        assert add[x, y] == logits[x, y, (x + y) % p] and sub[x, y] == logits[x, y, (x - y) % p]
    with pytest.raises(ValueError, match="basis"):
        cp.correct_logit_grid(model, p, "mul")


def test_subtraction_clock():
    """handbuilt_model(op="sub") computes a - b: its correct logit (the (a - b) class) is constant. With
    an output bias, L[a, b] = const + bias[(a - b) mod p]: for sub the groups are the sums a + b, each of
    which meets every difference, so q = 1 (grouping by a - b, as for add, would give 0)."""
    model, _ = handbuilt_model(P, KEYS, op="sub")
    L = cp.correct_logit_grid(model, P, "sub")
    assert cp.distance_irrelevance(L, sign=-1) == 1.0
    result = cp.clock_or_pizza(model, P, op="sub")
    assert result["distance_irrelevance"] == 1.0 and "not commutative" in result["note"]
    with torch.no_grad():
        model.b_U.copy_(torch.randn(P, generator=torch.Generator().manual_seed(4)))
    assert cp.clock_or_pizza(model, P, op="sub")["distance_irrelevance"] == pytest.approx(1.0, abs=1e-6)
    assert cp.distance_irrelevance(cp.correct_logit_grid(model, P, "sub"), sign=1) == pytest.approx(0.0, abs=1e-4)
    data = make_data(P, "sub", 0.3, 0)
    with torch.no_grad():  # the whole analysis reads it as sub too
        result = analyze(model, Grid(P, "sub", data.train_idx, data.test_idx), draws=1)["clock_pizza"]
    assert result["distance_irrelevance"] == pytest.approx(1.0, abs=1e-6) and "not commutative" in result["note"]


@pytest.mark.parametrize("s_g, q, expected", [
    (0.99, 0.2, "pizza"), (0.3, 0.85, "clock"),
    (0.98, 0.2, "mixed/unclear (s_g 0.980 <= 0.98 points to clock, q 0.200 < 0.6 points to pizza)"),
    (0.99, 0.6, "mixed/unclear (s_g 0.990 > 0.98 points to pizza, q 0.600 >= 0.6 points to clock)"),
])
def test_verdict(s_g, q, expected):
    assert cp.verdict(s_g, q) == expected


def test_verdict_of_nan():
    """One measure that is not a number is enough to withhold a verdict, whatever the other says."""
    nan = float("nan")
    for s_g, q in [(nan, 0.2), (0.3, nan), (nan, 0.85), (0.99, nan), (nan, nan)]:
        assert cp.verdict(s_g, q).startswith("mixed/unclear (a measure is not a number")


def test_result_is_plain_and_uses_a_given_correct_logit():
    model, _ = handbuilt_model(P, KEYS)
    i, j = torch.arange(P)[:, None], torch.arange(P)[None, :]
    distance_only = torch.cos(2 * torch.pi * (j - i).double() / P)
    result = cp.clock_or_pizza(model, P, correct_logit=distance_only)
    assert result["distance_irrelevance"] == pytest.approx(0.0, abs=1e-9)
    assert result["verdict"].startswith("mixed/unclear")  # clock-like s_g, pizza-like q
    assert json.loads(json.dumps(result)) == result
    assert result["thresholds"]["text"] == cp.THRESHOLD_TEXT
    assert result["thresholds"]["pizza_if_symmetricity_above"] == 0.98
    assert result["thresholds"]["pizza_if_irrelevance_below"] == 0.6


def test_result_uses_the_given_triples_and_reports_them():
    """n_triples and seed choose the notebook's shuffle (random.Random(seed) over all p^3 triples), and the
    hand-built clock's s_g on them is the mean of mean_k cos(w_k (a - b)) (see above). Over all p^3
    triples that mean would be 0."""
    p, keys, n, seed = 7, [1, 2], 10, 3
    model, _ = handbuilt_model(p, keys)
    everything = list(itertools.product(range(p), repeat=3))
    random.Random(seed).shuffle(everything)
    expected = np.mean([np.mean([math.cos(2 * math.pi * k * (a - b) / p) for k in keys])
                        for a, b, _ in everything[:n]])
    result = cp.clock_or_pizza(model, p, n_triples=n, seed=seed)
    assert result["gradient_symmetricity"] == pytest.approx(expected, abs=1e-6)
    assert abs(expected) > 0.05  # not the all-triples mean
    assert result["n_triples"] == n and result["seed"] == seed
    assert result["note"] == ""  # addition: nothing to add


def test_division_groups_q_by_sums():
    """A network computing i - j (div on discrete logs, as sub) groups q by i + j: an L that depends on
    i + j only has q = 0 (grouped by distance, as for mul, it would not)."""
    model, _ = discrete_log_model(7, [1], g=3, op="div")
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    f = torch.tensor([0.0, 1.0, 3.0, 2.0, 5.0, 4.0])
    L = f[(i + j) % 6]
    result = cp.clock_or_pizza(model, 7, op="div", correct_logit=L)
    assert result["distance_irrelevance"] == pytest.approx(0.0, abs=1e-12)
    assert "not commutative" in result["note"]
    assert cp.clock_or_pizza(model, 7, op="mul", correct_logit=L)["distance_irrelevance"] > 0.1
