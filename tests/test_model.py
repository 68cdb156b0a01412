import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.checkpoint import build_model
from model import HOOK_NAMES, ToyMLP, ablate_neurons, patch


def make(p=11, activation="relu"):
    torch.manual_seed(0)
    return ToyMLP(p, d_embed=8, d_hidden=16, activation=activation)


def inputs(p=11):
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    return a, b


def test_num_params_by_formula():
    p, d, h = 113, 128, 256
    assert ToyMLP(p, d, h).num_params() == p * d + (2 * d * h + h) + (h * p + p) == 109_297


@pytest.mark.parametrize("activation", ["relu", "gelu", "quadratic"])
def test_fast_forward_matches_reference_built_from_torch_layers(activation):
    """model(a, b) uses per-token tables; compare with nn.Embedding/nn.Linear on the same weights."""
    m = make(activation=activation)
    emb = nn.Embedding.from_pretrained(m.W_E.detach())
    lin1, lin2 = nn.Linear(16, 16), nn.Linear(16, 11)
    lin1.weight.data, lin1.bias.data = m.W_in.detach().T.clone(), m.b_in.detach().clone()
    lin2.weight.data, lin2.bias.data = m.W_U.detach().T.clone(), m.b_U.detach().clone()
    act = {"relu": F.relu, "gelu": F.gelu, "quadratic": lambda x: x * x}[activation]
    a, b = inputs()
    reference = lin2(act(lin1(torch.cat([emb(a), emb(b)], -1))))
    torch.testing.assert_close(m(a, b), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.run_with_hooks(a, b), reference, rtol=1e-5, atol=1e-5)


def test_gradients_match_the_spelled_out_forward():
    m = make()
    a, b = inputs()
    y = (a + b) % 11
    F.cross_entropy(m(a, b), y).backward()
    fast = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    F.cross_entropy(m.run_with_hooks(a, b), y).backward()
    for g, p in zip(fast, m.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def test_cache_holds_every_named_activation_with_its_shape():
    m = make()
    a, b = inputs()
    logits, cache = m.run_with_cache(a, b)
    assert set(cache) == set(HOOK_NAMES)
    assert cache["embed_a"].shape == (121, 8) and cache["hidden_pre"].shape == (121, 16)
    torch.testing.assert_close(cache["hidden_post"], F.relu(cache["hidden_pre"]))
    assert torch.equal(cache["logits"], logits)


def test_interventions_leave_no_trace():
    m = make()
    a, b = inputs()
    before_state = {k: v.clone() for k, v in m.state_dict().items()}
    before_logits = m(a, b)
    _, cache = m.run_with_cache(a, b)
    ablated = m.run_with_hooks(a, b, hooks={"hidden_post": ablate_neurons([0, 3], "mean",
                                                                           cache["hidden_post"].mean(0))})
    assert not torch.allclose(ablated, before_logits)
    assert torch.equal(m(a, b), before_logits)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before_state.items())
    assert not m._forward_hooks and not m._forward_pre_hooks


def test_ablation_values():
    m = make()
    a, b = inputs()
    mean = torch.arange(16.0)
    _, cache = m.run_with_cache(a, b, hooks={"hidden_post": ablate_neurons([2, 5], "mean", mean)})
    assert (cache["hidden_post"][:, 2] == 2).all() and (cache["hidden_post"][:, 5] == 5).all()
    _, cache = m.run_with_cache(a, b, hooks={"hidden_post": ablate_neurons([2], "zero")})
    assert (cache["hidden_post"][:, 2] == 0).all()
    with pytest.raises(ValueError):
        ablate_neurons([1], "mean")


def test_ablating_all_neurons_leaves_only_the_output_bias():
    m = make()
    a, b = inputs()
    logits = m.run_with_hooks(a, b, hooks={"hidden_post": ablate_neurons(range(16), "zero")})
    torch.testing.assert_close(logits, m.b_U.detach().expand(121, 11))


def test_patching_an_activation_from_other_inputs():
    m = make()
    a, b = inputs()
    _, clean = m.run_with_cache(a, b)
    patched = m.run_with_hooks(a.flip(0), b.flip(0), hooks={"hidden_post": patch(clean["hidden_post"])})
    torch.testing.assert_close(patched, clean["logits"])


def test_build_model_round_trip_and_errors():
    m = make(activation="gelu")
    rebuilt = build_model(m.config())
    assert rebuilt.config() == m.config()
    with pytest.raises(ValueError):
        build_model({"arch": "mlp", "p": 5, "activation": "tanh"})
    with pytest.raises(ValueError):
        build_model({"arch": "lstm", "p": 5})
