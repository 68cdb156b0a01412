"""Laws and hand-computed answers for analysis/fourier.py.

Every expected value here comes from construction: a slow direct formula written in the test (loops
over tokens or over (a, b) pairs, explicit cos/sin), or a number worked out by hand in a comment.
Nothing is checked against the output of the function under test.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.fourier import (
    combination,
    excluded_logits,
    fourier_basis,
    frequencies,
    frequency_of_rows,
    gini,
    key_frequencies,
    key_threshold,
    logit_fit,
    neuron_frequency_fractions,
    power_fraction,
    power_per_frequency,
    remove_frequencies,
    restricted_logits,
    split_logits,
    trig_directions,
)

LAW = settings(max_examples=40, deadline=None)
SEEDS = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------- slow direct formulas (the references)

def wave(p, k, kind, phase=0.0):
    """[cos|sin](2 pi k x / p + phase) for x = 0 .. p-1, one math call per token."""
    f = math.cos if kind == "cos" else math.sin
    return torch.tensor([f(2 * math.pi * k * x / p + phase) for x in range(p)], dtype=torch.float64)


def unit(v):
    return v / math.sqrt(sum(float(t) ** 2 for t in v))


def s_of(p, a, b, op):
    return (a - b) % p if op == "sub" else (a + b) % p


def grid_table(p, f):
    """(p*p, p) table with row a*p + b (a major, b minor) and column c holding f(a, b, c)."""
    return torch.tensor([[f(a, b, c) for c in range(p)] for a in range(p) for b in range(p)], dtype=torch.float64)


def grid_acts(p, fs):
    """(p, p, n) activations: neuron i is fs[i](a, b)."""
    return torch.tensor([[[f(a, b) for f in fs] for b in range(p)] for a in range(p)], dtype=torch.float64)


def random_table(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def expected_labels(p):
    labels = ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        labels += [f"cos {k}", f"sin {k}"]
    if p % 2 == 0:
        labels.append(f"cos {p // 2}")
    return labels


@st.composite
def p_and_keys(draw, p_min=3, p_max=16):
    p = draw(st.integers(p_min, p_max))
    keys = draw(st.lists(st.integers(1, p // 2), unique=True, max_size=p // 2))
    return p, sorted(keys)


# ---------------------------------------------------------------- the basis

@LAW
@given(st.integers(2, 130))
def test_basis_is_square_float64_and_orthonormal_for_any_p(p):
    basis, labels = fourier_basis(p)
    assert basis.dtype == torch.float64 and basis.shape == (p, p) and len(labels) == p
    torch.testing.assert_close(basis @ basis.T, torch.eye(p, dtype=torch.float64), rtol=0, atol=1e-10)


@LAW
@given(st.integers(2, 130))
def test_each_label_names_its_row(p):
    basis, labels = fourier_basis(p)
    assert labels == expected_labels(p)
    for row, label in zip(basis, labels):
        if label == "const":
            expected = torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)
        else:
            kind, k = label.split()
            expected = unit(wave(p, int(k), kind))
        torch.testing.assert_close(row, expected, rtol=0, atol=1e-10)


@LAW
@given(st.integers(2, 130))
def test_frequency_of_rows_reads_the_frequency_off_each_row(p):
    expected = [0] + [k for k in range(1, (p - 1) // 2 + 1) for _ in (0, 1)] + ([p // 2] if p % 2 == 0 else [])
    assert frequency_of_rows(p).tolist() == expected


def test_small_bases_by_hand():
    assert fourier_basis(2)[1] == ["const", "cos 1"]  # the Nyquist cosine (1, -1)/sqrt 2, no sine
    torch.testing.assert_close(fourier_basis(2)[0], torch.tensor([[1.0, 1.0], [1.0, -1.0]],
                                                                  dtype=torch.float64) / math.sqrt(2))
    assert frequency_of_rows(2).tolist() == [0, 1]
    assert frequency_of_rows(5).tolist() == [0, 1, 1, 2, 2]
    assert frequency_of_rows(6).tolist() == [0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize("p, expected", [(2, [1]), (3, [1]), (4, [1, 2]), (7, [1, 2, 3]), (8, [1, 2, 3, 4])])
def test_frequencies_by_hand(p, expected):
    assert frequencies(p) == expected


@LAW
@given(st.integers(2, 130))
def test_frequencies_are_those_named_by_the_labels(p):
    named = {int(lab.split()[1]) for lab in fourier_basis(p)[1] if lab != "const"}
    assert frequencies(p) == sorted(named) and len(frequencies(p)) == p // 2


# ---------------------------------------------------------------- spectra

@LAW
@given(st.integers(2, 60), st.integers(1, 4), SEEDS)
def test_power_per_frequency_obeys_parseval(p, n, seed):
    """The frequencies 1..p//2 together hold exactly the variance about each column's mean."""
    table = random_table(seed, p, n) + 3.0  # an offset, which the constant row must absorb
    power = power_per_frequency(table)
    assert power.shape == (p // 2,) and (power >= 0).all()
    centred = table - table.mean(0)
    assert math.isclose(float(power.sum()), float((centred**2).sum()), rel_tol=1e-9)


@pytest.mark.parametrize("p", [7, 8])
def test_power_of_planted_waves_by_hand(p):
    # a column A cos(w_k x + phi) holds A^2 p / 2 at k (sum over x of cos^2 is p/2), and the offset 5 none
    table = torch.stack([5 + 3 * wave(p, 1, "cos", 0.4), 2 * wave(p, 2, "sin")], dim=1)
    expected = torch.zeros(p // 2, dtype=torch.float64)
    expected[0], expected[1] = 9 * p / 2, 4 * p / 2
    torch.testing.assert_close(power_per_frequency(table), expected, rtol=0, atol=1e-9)


def test_nyquist_power_by_hand():
    # cos(pi x) = (-1)^x over 8 tokens: sum of squares 8, all at k = 4
    table = torch.tensor([(-1.0) ** x for x in range(8)]).view(8, 1)
    torch.testing.assert_close(power_per_frequency(table), torch.tensor([0, 0, 0, 8.0], dtype=torch.float64))


# ---------------------------------------------------------------- key frequencies

@pytest.mark.parametrize("power, expected", [
    ([1.0, 2.0, 3.0, 100.0], 20.0),  # even count: torch's lower median 2 (not 2.5), x 10
    ([3.0, 1.0, 2.0], 20.0),  # odd count: the middle value 2
    ([0.0, 0.0, 0.0, 4.0], 4e-6),  # median 0: the floor, 1e-6 of the total
    ([0.0, 0.0, 1.0, 2.0e7, 3.0e7 - 1], 50.0),  # median 1 gives 10; the floor, 1e-6 x 5e7 = 50, wins
])
def test_key_threshold_by_hand(power, expected):
    assert math.isclose(key_threshold(torch.tensor(power, dtype=torch.float64)), expected, rel_tol=1e-12)


@pytest.mark.parametrize("power, expected", [
    ([1.0, 1.0, 1.0, 10.0], [4]),  # exactly KEY_RATIO x the median reaches the threshold
    ([1.0, 1.0, 1.0, 9.99], []),
    ([10.0, 1.0, 1.0, 1.0], [1]),  # frequencies are 1-based
    ([1.0, 2.0, 3.0, 25.0], [4]),  # 25 >= 10 x 2 (lower median); 2.5 would give 25 too, so also:
    ([1.0, 2.0, 3.0, 24.0], [4]),
    ([1.0, 3.0, 3.0, 25.0], []),  # lower median 3: 25 < 30
    ([0.0, 0.0, 9.0], [3]),  # three frequencies are enough
    ([0.0, 5.0], []),  # two are not: no median can single one out
    ([5.0], []),
    ([0.0, 0.0, 0.0, 0.0], []),  # no power at all
    ([0.0, 0.0, 0.0, 0.5], [4]),  # a small total is still a spectrum
    ([0.0, 0.0, 0.0, 1.0, 1e-7], [4]),  # median 0: the floor 1e-6 keeps rounding noise out
    ([0.0, 0.0, 0.0, 1.0, 2e-6], [4, 5]),
])
def test_key_frequencies_by_hand(power, expected):
    assert key_frequencies(torch.tensor(power, dtype=torch.float64)) == expected


@LAW
@given(st.integers(3, 60), st.data())
def test_key_frequencies_pick_exactly_the_planted_ones(n, data):
    """Background powers within a factor 3 of each other and fewer than half planted: the median is a
    background value, and every planted power exceeds 10x the largest background."""
    planted = data.draw(st.lists(st.integers(1, n), unique=True, max_size=(n - 1) // 2))
    background = data.draw(st.lists(st.floats(0.5, 1.5), min_size=n, max_size=n))
    strong = data.draw(st.lists(st.floats(16.0, 1e4), min_size=n, max_size=n))
    power = torch.tensor([strong[i] if i + 1 in planted else background[i] for i in range(n)],
                         dtype=torch.float64)
    assert key_frequencies(power) == sorted(planted)


@pytest.mark.parametrize("power, keys, expected", [
    ([1.0, 2.0, 3.0, 4.0], [2, 4], 0.6),  # (2 + 4) / 10
    ([1.0, 2.0, 3.0, 4.0], [1], 0.1),
    ([1.0, 2.0, 3.0, 4.0], [], 0.0),
    ([0.0, 0.0, 0.0], [1], 0.0),  # no power: no share (not 0 / 0)
    ([0.25, 0.25], [1], 0.5),  # a total below 1 is still a total
])
def test_power_fraction_by_hand(power, keys, expected):
    assert math.isclose(power_fraction(torch.tensor(power, dtype=torch.float64), keys), expected, rel_tol=1e-12)


@LAW
@given(st.integers(1, 30), st.data())
def test_power_fractions_of_a_partition_add_up_to_one(n, data):
    power = torch.tensor(data.draw(st.lists(st.floats(0.01, 100.0), min_size=n, max_size=n)), dtype=torch.float64)
    part = data.draw(st.lists(st.integers(1, n), unique=True))
    rest = [k for k in range(1, n + 1) if k not in part]
    assert math.isclose(power_fraction(power, part) + power_fraction(power, rest), 1.0, rel_tol=1e-9)
    assert math.isclose(power_fraction(power, list(range(1, n + 1))), 1.0, rel_tol=1e-9)


# ---------------------------------------------------------------- neuron frequencies

def w(p, k):
    return 2 * math.pi * k / p


def planted_neurons(p):
    """(activation function of (a, b), expected share per frequency 1..p//2), for p = 7 (keys 1, 2, 3)."""
    c, s = math.cos, math.sin
    return [
        (lambda a, b: 5 + c(w(p, 1) * a), {1: 1.0}),  # an offset does not count
        (lambda a, b: 0.1 * s(w(p, 2) * b), {2: 1.0}),  # a small variance is still all in k = 2
        (lambda a, b: 2 * c(w(p, 1) * a) + c(w(p, 3) * b), {1: 0.8, 3: 0.2}),  # powers 4 : 1
        (lambda a, b: -c(w(p, 3) * a) + c(w(p, 3) * b), {3: 1.0}),  # coefficients of opposite sign
        (lambda a, b: c(w(p, 2) * (a + b)), {2: 1.0}),  # products cos.cos - sin.sin of the same k
        (lambda a, b: c(w(p, 1) * a) * c(w(p, 2) * b), {}),  # a product of two frequencies is neither
        (lambda a, b: 3.0, {}),  # dead
        (lambda a, b: 1e-7 * c(w(p, 1) * a), {}),  # variance ~5e-15 < 1e-12: dead too
    ]


def test_neuron_frequency_fractions_of_planted_neurons():
    p = 7
    fs, shares = zip(*planted_neurons(p))
    expected = torch.tensor([[share.get(k, 0.0) for k in (1, 2, 3)] for share in shares], dtype=torch.float64)
    out = neuron_frequency_fractions(grid_acts(p, fs))
    assert out.shape == (len(fs), 3)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_neuron_frequency_fractions_with_a_nyquist_frequency():
    p = 8  # k = 4: cos(pi a) = (-1)^a, no sine
    fs = [lambda a, b: (-1.0) ** a + (-1.0) ** b, lambda a, b: math.sin(w(p, 3) * b) + 0.5]
    out = neuron_frequency_fractions(grid_acts(p, fs))
    expected = torch.tensor([[0, 0, 0, 1.0], [0, 0, 1.0, 0]], dtype=torch.float64)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_a_neuron_at_the_variance_floor_is_live_and_one_below_it_dead():
    """One neuron, p = 2: h at (0, 0), 0 elsewhere. Its variance over the 4 inputs is (3h/4)^2 + 3 (h/4)^2
    over 3 = h^2 / 4: exactly the floor 1e-12 for h = 2e-6. Its terms, products of (-1)^a and (-1)^b, are
    all k = 1."""
    at_floor = torch.tensor([[2e-6, 0.0], [0.0, 0.0]], dtype=torch.float64).view(2, 2, 1)
    assert float(at_floor.reshape(4, 1).var(0)) == 1e-12  # the precondition, as torch rounds it
    torch.testing.assert_close(neuron_frequency_fractions(at_floor).double(), torch.ones(1, 1, dtype=torch.float64))
    below = at_floor * 0.99
    assert neuron_frequency_fractions(below).tolist() == [[0.0]]


@LAW
@given(st.integers(3, 12), st.integers(1, 6), SEEDS, st.randoms(use_true_random=False))
def test_neuron_frequency_fractions_are_shares_and_follow_a_permutation(p, n, seed, rng):
    acts = random_table(seed, p, p, n) * torch.linspace(0.05, 3.0, n, dtype=torch.float64)
    out = neuron_frequency_fractions(acts)
    assert out.shape == (n, p // 2)
    assert (out >= 0).all() and (out <= 1 + 1e-6).all() and (out.sum(1) <= 1 + 1e-5).all()
    perm = list(range(n))
    rng.shuffle(perm)
    torch.testing.assert_close(neuron_frequency_fractions(acts[..., perm]), out[perm], rtol=0, atol=1e-6)


@LAW
@given(st.integers(3, 12), st.integers(1, 4), SEEDS)
def test_a_sum_of_one_operand_functions_lies_wholly_in_the_frequencies(p, n, seed):
    """f(a) + g(b): every term is (frequency k) x const, so the shares add up to 1 per neuron."""
    f, g = random_table(seed, p, 1, n), random_table(seed + 1, 1, p, n)
    out = neuron_frequency_fractions(f + g + 2.0)
    torch.testing.assert_close(out.sum(1).double(), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the (a, b) grid

@LAW
@given(st.integers(2, 30), st.sampled_from(["add", "sub"]))
def test_combination_by_hand(p, op):
    s = combination(p, op)
    assert not s.is_floating_point()
    assert s.tolist() == [[s_of(p, a, b, op) for b in range(p)] for a in range(p)]


@pytest.mark.parametrize("op", ["mul", "div", "ADD", ""])
def test_combination_refuses_an_op_that_is_not_a_basis_op(op):
    """mul and div are analysed as add and sub of discrete logarithms (basis_for); combination never guesses."""
    with pytest.raises(ValueError, match=f"by add or sub, not '{op}'$"):
        combination(7, op)


@LAW
@given(p_and_keys(2, 20), st.sampled_from(["add", "sub"]))
def test_trig_directions_are_the_unit_waves_of_s(data, op):
    p, keys = data
    rows = []
    for k in keys:
        kinds = ["cos"] if 2 * k == p else ["cos", "sin"]
        for kind in kinds:
            f = math.cos if kind == "cos" else math.sin
            rows.append(unit(torch.tensor([f(2 * math.pi * k * s_of(p, a, b, op) / p)
                                           for a in range(p) for b in range(p)], dtype=torch.float64)))
    expected = torch.stack(rows) if rows else torch.zeros(0, p * p, dtype=torch.float64)
    dirs = trig_directions(p, keys, op)
    assert dirs.shape == expected.shape and dirs.dtype == torch.float64
    torch.testing.assert_close(dirs, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(len(rows), dtype=torch.float64), rtol=0, atol=1e-10)


def test_trig_directions_shapes_by_hand():
    assert trig_directions(5, []).shape == (0, 25)
    assert trig_directions(6, [2, 3]).shape == (3, 36)  # cos 2, sin 2, cos 3 (no sine at p/2)
    assert trig_directions(4, [2]).shape == (1, 16) and torch.isfinite(trig_directions(4, [2])).all()
    assert trig_directions(6, [2]).shape == (2, 36)


# ---------------------------------------------------------------- logit decompositions

@LAW
@given(p_and_keys(3, 11), st.sampled_from(["add", "sub"]), SEEDS)
def test_split_logits_is_an_orthogonal_projection(data, op, seed):
    p, keys = data
    logits = random_table(seed, p * p, p)
    key, rest = split_logits(logits, keys, op)
    torch.testing.assert_close(key + rest, logits, rtol=0, atol=1e-10)
    torch.testing.assert_close(split_logits(key, keys, op)[0], key, rtol=0, atol=1e-10)  # idempotent
    torch.testing.assert_close(split_logits(rest, keys, op)[0], torch.zeros_like(rest), rtol=0, atol=1e-10)
    torch.testing.assert_close((key * rest).sum(0), torch.zeros(p, dtype=torch.float64), rtol=0, atol=1e-9)
    # the relations of Nanda et al.'s restricted and excluded logits
    torch.testing.assert_close(excluded_logits(logits, keys, op), rest, rtol=0, atol=1e-10)
    torch.testing.assert_close(restricted_logits(logits, keys, op) + excluded_logits(logits, keys, op),
                               logits + logits.mean(0), rtol=0, atol=1e-10)


def planted_logits(p, op, k_key, k_other, bias):
    """bias[c] + 3 cos(w_key (s - c)) + 2 cos(w_other s), and its key part and rest by hand."""
    key = grid_table(p, lambda a, b, c: 3 * math.cos(w(p, k_key) * (s_of(p, a, b, op) - c)))
    other = grid_table(p, lambda a, b, c: 2 * math.cos(w(p, k_other) * s_of(p, a, b, op)))
    bias = torch.tensor(bias, dtype=torch.float64).view(1, p)
    return key + other + bias, key, other + bias


@pytest.mark.parametrize("op", ["add", "sub"])
def test_planted_logits_split_restrict_and_exclude_by_hand(op):
    p = 7
    logits, key, rest = planted_logits(p, op, 2, 3, [0.5, -1.0, 2.0, 0.0, 3.0, 1.0, -2.0])
    got_key, got_rest = split_logits(logits, [2], op)
    torch.testing.assert_close(got_key, key, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_rest, rest, rtol=0, atol=1e-10)
    bias = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0, 1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(restricted_logits(logits, [2], op), key + bias, rtol=0, atol=1e-10)
    torch.testing.assert_close(excluded_logits(logits, [2], op), rest, rtol=0, atol=1e-10)


def test_add_is_the_default_op():
    p = 7
    logits, key, rest = planted_logits(p, "add", 1, 3, [1.0, 0.0, -1.0, 2.0, 0.0, 0.5, 0.0])
    bias = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    torch.testing.assert_close(split_logits(logits, [1])[0], key, rtol=0, atol=1e-10)
    torch.testing.assert_close(restricted_logits(logits, [1]), key + bias, rtol=0, atol=1e-10)
    torch.testing.assert_close(excluded_logits(logits, [1]), rest, rtol=0, atol=1e-10)
    torch.testing.assert_close(trig_directions(p, [1])[0], trig_directions(p, [1], "add")[0])
    explained, alphas = logit_fit(logits, [1])
    assert math.isclose(alphas[1], 3.0, rel_tol=1e-9)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_logit_fit_on_a_planted_signal(op):
    p = 7
    offsets = random_table(5, p * p, 1)  # a per-input constant, which softmax (and the fit) ignores
    wave1 = grid_table(p, lambda a, b, c: math.cos(w(p, 1) * (s_of(p, a, b, op) - c)))
    wave3 = grid_table(p, lambda a, b, c: math.cos(w(p, 3) * (s_of(p, a, b, op) - c)))
    logits = 3 * wave1 + 0.5 * wave3 + offsets
    explained, alphas = logit_fit(logits, [1, 3], op)
    assert math.isclose(explained, 1.0, abs_tol=1e-12)
    assert alphas.keys() == {1, 3}
    assert math.isclose(alphas[1], 3.0, rel_tol=1e-9) and math.isclose(alphas[3], 0.5, rel_tol=1e-9)
    # only k = 1: the two waves have equal norms, so it explains 3^2 / (3^2 + 0.5^2) of the variance
    explained, alphas = logit_fit(logits, [1], op)
    assert math.isclose(explained, 9 / 9.25, rel_tol=1e-9) and alphas.keys() == {1}
    assert math.isclose(alphas[1], 3.0, rel_tol=1e-9)
    explained, alphas = logit_fit(logits, [2], op)  # a frequency that is absent
    assert abs(explained) < 1e-12 and abs(alphas[2]) < 1e-12
    assert logit_fit(logits, [], op) == (0.0, {})


def test_logit_fit_edge_cases_by_hand():
    p = 5
    wave2 = grid_table(p, lambda a, b, c: math.cos(w(p, 2) * ((a + b) % p - c)))
    explained, alphas = logit_fit(0.01 * wave2, [2])  # tiny logits (total variance < 1) are still fitted
    assert math.isclose(explained, 1.0, abs_tol=1e-9) and math.isclose(alphas[2], 0.01, rel_tol=1e-9)
    explained, alphas = logit_fit(-2 * wave2, [2])
    assert math.isclose(explained, 1.0, abs_tol=1e-9) and math.isclose(alphas[2], -2.0, rel_tol=1e-9)
    # logits constant per input: nothing to explain, and no 0 / 0
    offsets = (torch.arange(p * p, dtype=torch.float64) % 7 - 3).view(p * p, 1)  # integers: exact means
    assert logit_fit(offsets.expand(p * p, p), [1, 2]) == (0.0, {1: 0.0, 2: 0.0})


# ---------------------------------------------------------------- removing frequencies

@LAW
@given(p_and_keys(2, 30), st.integers(1, 3), SEEDS)
def test_remove_frequencies_removes_exactly_those_components(data, n, seed):
    p, freqs = data
    table = random_table(seed, p, n) + 1.5
    out = remove_frequencies(table, freqs)
    assert out.dtype == table.dtype and out.shape == table.shape
    before, after = power_per_frequency(table), power_per_frequency(out)
    for k in range(1, p // 2 + 1):
        expected = 0.0 if k in freqs else float(before[k - 1])
        assert math.isclose(float(after[k - 1]), expected, rel_tol=1e-9, abs_tol=1e-9)
    torch.testing.assert_close(out.mean(0), table.mean(0), rtol=0, atol=1e-10)  # the constant stays
    torch.testing.assert_close(remove_frequencies(out, freqs), out, rtol=0, atol=1e-10)


def test_remove_frequencies_by_hand_keeps_the_dtype():
    p = 7
    table = torch.stack([5 + wave(p, 1, "cos") + 2 * wave(p, 2, "sin"), wave(p, 3, "sin")], dim=1).float()
    expected = torch.stack([5 + 2 * wave(p, 2, "sin"), torch.zeros(p, dtype=torch.float64)], dim=1).float()
    out = remove_frequencies(table, [1, 3])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(remove_frequencies(table, []), table)


# ---------------------------------------------------------------- gini

def gini_by_mean_difference(values):
    """G = sum_i sum_j |x_i - x_j| / (2 n^2 mean)."""
    n = len(values)
    return sum(abs(x - y) for x in values for y in values) / (2 * n * sum(values))


@LAW
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30).filter(lambda v: sum(v) > 1e-3),
       st.randoms(use_true_random=False))
def test_gini_is_the_mean_difference_and_ignores_order(values, rng):
    expected = gini_by_mean_difference(values)
    assert math.isclose(gini(torch.tensor(values, dtype=torch.float64)), expected, rel_tol=1e-9, abs_tol=1e-12)
    shuffled = list(values)
    rng.shuffle(shuffled)
    assert math.isclose(gini(torch.tensor(shuffled)), gini(torch.tensor(values)), rel_tol=1e-9, abs_tol=1e-12)


@LAW
@given(st.integers(1, 200), st.data(), st.floats(1e-3, 1e3))
def test_gini_of_a_one_hot_vector_is_n_minus_1_over_n(n, data, height):
    v = torch.zeros(n)
    v[data.draw(st.integers(0, n - 1))] = height
    assert math.isclose(gini(v), (n - 1) / n, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("values, expected", [
    ([], 0.0),
    ([0.0, 0.0, 0.0], 0.0),  # no total: 0, not 0 / 0
    ([0.0, 0.5], 0.5),  # a total below 1 is still a total
    ([2.0, 2.0, 2.0, 2.0], 0.0),
    ([1.0, 3.0], 0.25),  # |1 - 3| x 2 / (2 x 4 x 4)
    ([[1.0, 0.0], [0.0, 0.0]], 0.75),  # flattened first
])
def test_gini_by_hand(values, expected):
    assert math.isclose(gini(torch.tensor(values)), expected, abs_tol=1e-12)
