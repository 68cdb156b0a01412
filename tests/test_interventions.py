"""Interventions and helpers of model.py checked against answers known by construction: the hand-built
Fourier network (tests/handbuilt.py), weights set by hand, and float64 formulas written out here."""
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.checkpoint import build_model
from handbuilt import handbuilt_model
from model import HOOK_NAMES, ToyMLP, _uniform, ablate_neurons, cross_entropy_per_row, patch, sum_squared_weights

LAW = settings(max_examples=40, deadline=None)
P, KEYS, SCALE = 7, [1, 3], 5.0


def grid(p):
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    return a, b


def handbuilt_logits(p, keys, scale, a, b):
    """What the hand-built network computes: 4 scale sum_k cos(w_k (a + b - c)), written out."""
    return torch.tensor([[4 * scale * sum(math.cos(2 * math.pi * k * (x + y - c) / p) for k in keys)
                          for c in range(p)] for x, y in zip(a.tolist(), b.tolist())])


def small_model(seed=0, p=5, activation="relu"):
    torch.manual_seed(seed)
    return ToyMLP(p, d_embed=3, d_hidden=6, activation=activation)


# ---------------------------------------------------------------- the hand-built network

def test_handbuilt_network_computes_its_formula():
    model, _ = handbuilt_model(P, KEYS, SCALE)
    a, b = grid(P)
    with torch.no_grad():
        expected = handbuilt_logits(P, KEYS, SCALE, a, b)
        torch.testing.assert_close(model(a, b), expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(model.run_with_hooks(a, b), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablating_one_frequencys_neurons_removes_exactly_its_term(mode):
    """Each key's eight neurons carry its whole term. The two neurons of a pair, (x + y)^2 and (x - y)^2,
    both average 1 over the grid and are read out with opposite signs, so mean ablation equals zero ablation."""
    model, neuron_freq = handbuilt_model(P, KEYS, SCALE)
    a, b = grid(P)
    of_k1 = [n for n, k in enumerate(neuron_freq) if k == 1]
    with torch.no_grad():
        _, clean = model.run_with_cache(a, b)
        mean = clean["hidden_post"].mean(0)
        logits = model.run_with_hooks(a, b, hooks={"hidden_post": ablate_neurons(of_k1, mode, mean)})
    torch.testing.assert_close(logits, handbuilt_logits(P, [3], SCALE, a, b), rtol=0, atol=1e-4)


def test_zero_is_the_default_ablation():
    model = small_model()
    a, b = grid(5)
    with torch.no_grad():
        _, cache = model.run_with_cache(a, b, hooks={"hidden_post": ablate_neurons([1, 4])})
        _, clean = model.run_with_cache(a, b)
    assert (cache["hidden_post"][:, [1, 4]] == 0).all()
    keep = [0, 2, 3, 5]
    assert torch.equal(cache["hidden_post"][:, keep], clean["hidden_post"][:, keep])


def test_mean_ablation_sets_the_given_values_in_the_activations_dtype():
    x = torch.arange(12.0).view(2, 6)
    mean = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0], dtype=torch.float64)  # not x's dtype
    out = ablate_neurons([0, 5], "mean", mean)(x)
    assert out.dtype == torch.float32
    assert out.tolist() == [[10.0, 1.0, 2.0, 3.0, 4.0, 60.0], [10.0, 7.0, 8.0, 9.0, 10.0, 60.0]]
    assert x.tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]]  # not in place


def test_ablation_accepts_any_collection_of_indices():
    x = torch.arange(1.0, 7.0)
    assert ablate_neurons([])(x).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # nothing to ablate
    assert ablate_neurons(range(2, 4))(x).tolist() == [1.0, 2.0, 0.0, 0.0, 5.0, 6.0]
    assert ablate_neurons(torch.tensor([5]))(x).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]


def test_ablation_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="^" + re.escape("unknown ablation mode 'resample': choose 'zero' or 'mean'") + "$"):
        ablate_neurons([0], "resample")
    with pytest.raises(ValueError, match="^" + re.escape("mean ablation needs the neurons' mean activations") + "$"):
        ablate_neurons([0], "mean")


# ---------------------------------------------------------------- hooks, cache, patching

def test_hooks_replace_activations_and_the_cache_sees_the_replacement():
    model, _ = handbuilt_model(P, KEYS, SCALE)
    a, b = grid(P)
    doubled = {"hidden_pre": lambda x: 2 * x}  # quadratic activation: the logits scale by 4
    with torch.no_grad():
        logits, cache = model.run_with_cache(a, b, hooks=doubled)
        _, clean = model.run_with_cache(a, b)
    assert set(cache) == set(HOOK_NAMES)
    torch.testing.assert_close(cache["hidden_pre"], 2 * clean["hidden_pre"])
    torch.testing.assert_close(logits, 4 * handbuilt_logits(P, KEYS, SCALE, a, b), rtol=0, atol=1e-3)
    assert torch.equal(cache["logits"], logits)


def test_spelled_out_forward_handles_a_grid_of_index_tensors():
    """a and b of shape (p, p): every activation gains both batch dimensions, as in model(a, b)."""
    model = small_model(p=5)
    a = torch.arange(5).view(5, 1).expand(5, 5)
    b = torch.arange(5).view(1, 5).expand(5, 5)
    with torch.no_grad():
        logits, cache = model.run_with_cache(a, b)
        flat = model(a.reshape(-1), b.reshape(-1))
    assert cache["hidden_pre"].shape == (5, 5, 6) and logits.shape == (5, 5, 5)
    torch.testing.assert_close(logits.reshape(25, 5), flat)


def test_patching_a_float64_activation_keeps_the_model_in_float32():
    model, _ = handbuilt_model(P, KEYS, SCALE)
    a, b = grid(P)
    with torch.no_grad():
        _, clean = model.run_with_cache(a, b)
        patched = model.run_with_hooks(a.flip(0), b.flip(0),
                                       hooks={"hidden_post": patch(clean["hidden_post"].double())})
    assert patched.dtype == torch.float32
    torch.testing.assert_close(patched, handbuilt_logits(P, KEYS, SCALE, a, b), rtol=0, atol=1e-4)


def test_patching_one_input_broadcasts_over_the_batch():
    model, _ = handbuilt_model(P, KEYS, SCALE)
    a, b = grid(P)
    with torch.no_grad():
        _, one = model.run_with_cache(torch.tensor([2]), torch.tensor([3]))
        patched = model.run_with_hooks(a, b, hooks={"hidden_pre": patch(one["hidden_pre"])})
    expected = handbuilt_logits(P, KEYS, SCALE, torch.tensor([2]), torch.tensor([3])).expand(P * P, P)
    torch.testing.assert_close(patched, expected, rtol=0, atol=1e-4)


def test_neuron_readout_maps_the_neurons_to_the_logits():
    model = small_model()
    a, b = grid(5)
    with torch.no_grad():
        logits, cache = model.run_with_cache(a, b)
        readout = model.neuron_readout()
        assert readout.shape == (6, 5)
        torch.testing.assert_close(cache["hidden_post"] @ readout + model.b_U, logits)


# ---------------------------------------------------------------- losses and weights

def reference_loss(logits, y):
    """float64 log-sum-exp minus the correct logit, per row, written out."""
    return [math.log(sum(math.exp(z - max(row)) for z in row)) + max(row) - row[t]
            for row, t in zip(logits.double().tolist(), y.tolist())]


@LAW
@given(st.integers(2, 12), st.integers(1, 20), st.integers(0, 2**31 - 1), st.floats(0.1, 20.0))
def test_cross_entropy_per_row_matches_a_float64_reference(p, n, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, p, generator=gen) * scale
    y = torch.randint(0, p, (n,), generator=gen)
    loss, correct = cross_entropy_per_row(logits, y)
    assert loss.dtype == torch.float64 and loss.shape == (n,)
    torch.testing.assert_close(loss, torch.tensor(reference_loss(logits, y), dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
    strictly_largest = [all(row[t] > z for c, z in enumerate(row) if c != t)
                        for row, t in zip(logits.tolist(), y.tolist())]
    assert correct.tolist() == strictly_largest


def test_cross_entropy_per_row_by_hand():
    logits = torch.tensor([[1.0, 1.0, 0.0],  # a tie with a wrong logit is not correct
                           [0.0, 0.5, 0.0],  # a wrong logit ahead by 0.5
                           [2.0, 0.0, 0.0],  # right by a margin of 2
                           [0.0, 0.0, 30.0]])  # very wrong: the shifted branch
    y = torch.tensor([0, 0, 0, 0])
    loss, correct = cross_entropy_per_row(logits, y)
    assert correct.tolist() == [False, False, True, False]
    expected = [math.log(2 + math.exp(-1)), math.log(1 + math.exp(0.5) + 1), math.log1p(2 * math.exp(-2)),
                30 + math.log(math.exp(-30) * 2 + 1)]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("margin", [25.0, 40.0])
def test_cross_entropy_keeps_tiny_losses_and_leading_dimensions(margin):
    # loss = log1p(4 e^-margin): 5.6e-11 and 1.7e-17, far below float32 log_softmax's resolution (and the
    # second below float64's log(1 + x))
    logits = torch.zeros(2, 3, 5)
    y = torch.tensor([0, 2, 4])
    logits[:, torch.arange(3), y] = margin
    loss, correct = cross_entropy_per_row(logits, y)
    assert loss.shape == (2, 3) and correct.all()
    expected = math.log1p(4 * math.exp(-margin))
    torch.testing.assert_close(loss, torch.full((2, 3), expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_sum_squared_weights_by_hand():
    model = ToyMLP(3, d_embed=2, d_hidden=4)
    with torch.no_grad():
        for i, w in enumerate(model.parameters()):
            w.fill_(i + 1.0)  # W_E 3x2 = 1, W_in 4x4 = 2, b_in 4 = 3, W_U 4x3 = 4, b_U 3 = 5
    expected = 6 * 1 + 16 * 4 + 4 * 9 + 12 * 16 + 3 * 25
    assert sum_squared_weights(model) == expected
    with torch.no_grad():
        for w in model.parameters():
            w.zero_()
        model.W_E[0, 0] = 1e-30  # its square, 1e-60, underflows in float32 but not in float64
    assert math.isclose(sum_squared_weights(model), float(torch.tensor(1e-30)) ** 2, rel_tol=1e-12)


# ---------------------------------------------------------------- construction

def test_default_sizes():
    model = ToyMLP(7)
    assert (model.d_embed, model.d_hidden, model.activation) == (128, 256, "relu")
    assert model.W_E.shape == (7, 128) and model.W_in.shape == (256, 256) and model.W_U.shape == (256, 7)


def test_config_and_parameter_count_by_hand():
    model = ToyMLP(5, d_embed=3, d_hidden=4, activation="gelu")
    assert model.config() == {"arch": "mlp", "p": 5, "d_embed": 3, "d_hidden": 4, "activation": "gelu"}
    assert model.num_params() == 5 * 3 + (6 * 4 + 4) + (4 * 5 + 5)  # W_E, W_in and b_in, W_U and b_U


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="^" + re.escape("unknown activation 'tanh': choose one of relu, gelu, quadratic") + "$"):
        ToyMLP(5, activation="tanh")


def assert_uniform(t, bound):
    """Within +-bound, and reaching close to both ends (thousands of draws)."""
    assert t.abs().max() <= bound
    assert t.max() > 0.95 * bound and t.min() < -0.95 * bound


def test_initialisation_follows_nn_linear_and_nn_embedding():
    torch.manual_seed(0)
    d_embed, d_hidden, p = 8, 2048, 400
    model = ToyMLP(p, d_embed=d_embed, d_hidden=d_hidden)
    assert_uniform(model.W_in.detach(), 1 / math.sqrt(2 * d_embed))  # fan_in: the two embeddings
    assert_uniform(model.b_in.detach(), 1 / math.sqrt(2 * d_embed))
    assert_uniform(model.W_U.detach(), 1 / math.sqrt(d_hidden))
    assert_uniform(model.b_U.detach(), 1 / math.sqrt(d_hidden))
    assert abs(float(model.W_E.detach().mean())) < 0.02 and 0.95 < float(model.W_E.detach().std()) < 1.05  # N(0, 1)


def test_uniform_by_hand():
    torch.manual_seed(1)
    t = _uniform(16, (4000,))
    assert t.shape == (4000,)
    assert_uniform(t, 0.25)
    assert abs(float(t.mean())) < 0.01  # symmetric about 0


# ---------------------------------------------------------------- rebuilding from a config

def test_build_model_defaults_to_the_mlp_and_passes_the_sizes():
    config = {"p": 5, "d_embed": 3, "d_hidden": 4, "activation": "quadratic"}
    model = build_model(config)
    assert isinstance(model, ToyMLP)
    assert (model.p, model.d_embed, model.d_hidden, model.activation) == (5, 3, 4, "quadratic")
    assert config == {"p": 5, "d_embed": 3, "d_hidden": 4, "activation": "quadratic"}  # not consumed
    with_arch = {"arch": "mlp", "p": 6}
    assert build_model(with_arch).W_U.shape == (256, 6) and with_arch == {"arch": "mlp", "p": 6}


def test_build_model_rejects_an_unknown_architecture_by_name():
    with pytest.raises(ValueError, match="^" + re.escape("unknown architecture 'lstm': choose one of mlp, transformer") + "$"):
        build_model({"arch": "lstm", "p": 5})
