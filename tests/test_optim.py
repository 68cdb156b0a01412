"""core/optim.py on inputs whose answer is known by hand: the Grokfast filters on constant and counted gradients,
⊥Grad on a hand-made pair, StableMax on a hand-computed vector, Newton-Schulz and Muon's step on matrices with known
singular vectors, the weight-norm constraint."""
import math

import pytest
import torch

from config import Config, parse_sets
from core.optim import (
    NEWTON_SCHULZ,
    Method,
    MethodsOptimizer,
    ema_filter_,
    ma_filter_,
    model_norms,
    muon_,
    newton_schulz,
    orthogonal_grad,
    stablemax_cross_entropy,
    training_loss,
    update_,
    uses_muon,
)

OPTIONS = {"muon": {"optimizer": "muon"}, "ema": {"grad_filter": "ema"}, "ma": {"grad_filter": "ma", "filter_window": 4},
           "orthograd": {"orthograd": True}, "stablemax": {"loss": "stablemax"}, "weight_norm": {"weight_norm": 0.5}}


def test_ema_filter_of_a_constant_gradient_is_1_plus_lamb_times_it():
    g, ema = torch.tensor([[1.0, -2.0, 0.5]]), torch.zeros(1, 3)
    for step in range(1, 6):
        out = ema_filter_(g, ema, alpha=0.9, lamb=2.0, step=step)
        torch.testing.assert_close(ema, g)
        torch.testing.assert_close(out, 3 * g)


def test_ema_filter_averages_with_weight_alpha():
    ema = torch.zeros(1, 1)
    ema_filter_(torch.tensor([[1.0]]), ema, alpha=0.75, lamb=1.0, step=1)
    out = ema_filter_(torch.tensor([[5.0]]), ema, alpha=0.75, lamb=1.0, step=2)
    assert ema.item() == 0.75 * 1 + 0.25 * 5 and out.item() == 5 + 2.0


def test_ma_filter_waits_for_a_full_window_then_adds_lamb_times_its_mean():
    window = torch.zeros(1, 3, 2)
    outs = [ma_filter_(torch.full((1, 2), float(k)), window, lamb=0.5, step=k) for k in range(1, 6)]
    assert torch.equal(outs[0], torch.full((1, 2), 1.0)) and torch.equal(outs[1], torch.full((1, 2), 2.0))
    for k in (3, 4, 5):  # the mean of the last three gradients k-2, k-1, k is k-1
        torch.testing.assert_close(outs[k - 1], torch.full((1, 2), k + 0.5 * (k - 1)))


def test_orthograd_removes_the_component_along_the_weights_and_keeps_the_norm():
    out = orthogonal_grad(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, math.sqrt(2)]]))
    w, g = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)), torch.randn(3, 4, 5)
    out = orthogonal_grad(w, g)
    torch.testing.assert_close((out * w).flatten(1).sum(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1))


def test_stablemax_on_a_hand_computed_vector():
    # s(2) = 3, s(-1) = 1/2, s(0) = 1: loss of label 0 = -log(3 / 4.5), of label 1 = -log(0.5 / 4.5)
    logits = torch.tensor([[2.0, -1.0, 0.0], [2.0, -1.0, 0.0]], dtype=torch.float64)
    loss = stablemax_cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, torch.tensor([math.log(1.5), math.log(9.0)], dtype=torch.float64))
    assert training_loss(logits, torch.tensor([0, 1]), "stablemax").item() == pytest.approx(loss.mean().item())


def test_stablemax_gradient_is_finite_where_a_logit_is_exactly_one():
    logits = torch.tensor([[1.0, -3.0, 0.0]], requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([1])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def quintic(s: torch.Tensor, steps: int) -> torch.Tensor:
    a, b, c = NEWTON_SCHULZ
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_newton_schulz_maps_each_singular_value_by_the_quintic_and_keeps_the_singular_vectors(shape):
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=gen, dtype=torch.float64))
    k = min(shape)
    s = torch.linspace(0.2, 3.0, k, dtype=torch.float64)
    g = u[:, :k] @ torch.diag(s) @ v[:, :k].T
    expected = u[:, :k] @ torch.diag(quintic(s / s.norm(), 5)) @ v[:, :k].T
    torch.testing.assert_close(newton_schulz(g.float()).double(), expected, atol=2e-5, rtol=0)
    singular = torch.linalg.svdvals(newton_schulz(g.float()).double())
    assert singular.min() > 0.6 and singular.max() < 1.25  # near 1, as the quintic intends


def test_muon_step_from_rest_is_the_orthogonalized_gradient_scaled_to_adamw_rms():
    gen = torch.Generator().manual_seed(2)
    w, g = torch.randn(1, 8, 3, generator=gen), torch.randn(1, 8, 3, generator=gen)
    before, momentum = w.clone(), torch.zeros_like(w)
    muon_(w, g, momentum, lr=0.1, wd=0.5)
    # momentum = g, the Nesterov direction g + 0.95 g: the same orthogonalization (it is scale-free)
    expected = before * (1 - 0.1 * 0.5) - 0.1 * 0.2 * math.sqrt(8) * newton_schulz(g)
    torch.testing.assert_close(w, expected)
    assert torch.equal(momentum, g)


def test_muon_second_step_follows_its_nesterov_momentum():
    """Step 2 from rest: momentum = 0.95 g1 + g2, the direction orthogonalizes g2 + 0.95 momentum (not the
    momentum alone, nor g2 alone)."""
    gen = torch.Generator().manual_seed(4)
    w, g1, g2 = (torch.randn(1, 6, 4, generator=gen) for _ in range(3))
    momentum = torch.zeros_like(w)
    muon_(w, g1, momentum, lr=0.1, wd=0.5)
    before = w.clone()
    muon_(w, g2, momentum, lr=0.1, wd=0.5)
    torch.testing.assert_close(momentum, 0.95 * g1 + g2)
    nesterov = g2 + 0.95 * (0.95 * g1 + g2)
    expected = before * (1 - 0.1 * 0.5) - 0.1 * 0.2 * math.sqrt(6) * newton_schulz(nesterov)
    torch.testing.assert_close(w, expected)
    assert not torch.allclose(newton_schulz(nesterov), newton_schulz(0.95 * g1 + g2), atol=1e-3)


def test_muon_takes_the_hidden_matrices_and_leaves_embeddings_unembedding_and_biases_to_adamw():
    assert uses_muon("W_in", torch.zeros(1, 4, 4)) and uses_muon("W_Q", torch.zeros(1, 2, 4, 4))
    assert uses_muon("W_out", torch.zeros(1, 4, 4))
    assert not uses_muon("W_E", torch.zeros(1, 4, 4)) and not uses_muon("W_U", torch.zeros(1, 4, 4))
    assert not uses_muon("W_pos", torch.zeros(1, 3, 4)) and not uses_muon("b_in", torch.zeros(1, 4))


def test_weight_norm_holds_each_model_at_its_multiple_of_the_initial_norm():
    gen = torch.Generator().manual_seed(3)
    ws = [torch.randn(2, 4, 4, generator=gen), torch.randn(2, 4, generator=gen)]
    init = model_norms(ws)
    grads = [torch.randn_like(w) for w in ws]
    state = {"exp_avg": [torch.zeros_like(w) for w in ws], "exp_avg_sq": [torch.zeros_like(w) for w in ws]}
    update_(["W_in", "b_in"], ws, grads, state, Method.of(Config(weight_norm=0.5)), 1, init)
    torch.testing.assert_close(model_norms(ws), 0.5 * init)


def test_plain_adamw_settings_are_recognised_and_the_rest_are_not():
    assert Method.of(Config(lr=0.1, weight_decay=0.0)).plain_adamw
    assert Method.of(Config(filter_lamb=5.0, filter_window=3)).plain_adamw  # a filter's settings without a filter
    assert Method.of(Config(loss="stablemax")).plain_adamw  # a loss, not an update rule
    for name, overrides in OPTIONS.items():
        assert name == "stablemax" or not Method.of(Config(**overrides)).plain_adamw


def test_orthograd_is_a_switch_in_sweeps():
    assert parse_sets(["orthograd=false,true"]) == {"orthograd": [False, True]}
    with pytest.raises(ValueError, match="orthograd takes bool"):
        parse_sets(["orthograd=maybe"])


def test_methods_optimizer_state_survives_a_checkpoint():
    model = torch.nn.Linear(3, 2)
    optimizer = MethodsOptimizer(model, Method.of(Config(grad_filter="ma", filter_window=2, weight_norm=1.0)))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    assert state["param_groups"][0]["step"] == 1 and len(state["param_groups"][0]["init_norm"]) == 1
    other = MethodsOptimizer(torch.nn.Linear(3, 2), Method.of(Config(grad_filter="ma", filter_window=2, weight_norm=1.0)))
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()["state"][i]["window"], state["state"][i]["window"]) for i in (0, 1))
