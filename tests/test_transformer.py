"""The 1-layer transformer: both forwards against a loop-by-loop reference written here, hooks
against hand computations, and a transformer built by hand whose heads attend by position."""
import math

import pytest
import torch
import torch.nn.functional as F

from core.transformer import HOOK_NAMES, Transformer
from handbuilt import handbuilt_transformer


def make(p=11, d_model=12, n_heads=3, d_mlp=20, seed=0):
    """Random weights, biases included (the default init sets them to zero)."""
    torch.manual_seed(seed)
    m = Transformer(p, d_model, n_heads, d_mlp)
    with torch.no_grad():
        m.b_in.normal_()
        m.b_out.normal_()
    return m


def inputs(p):
    return torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)


def reference(m, a, b, pattern=None):
    """The transformer written out one head and one query position at a time, float64.
    `pattern` (n_heads, 3, 3), if given, replaces the softmax. Returns resid_mid and logits."""
    W = {k: v.detach().double() for k, v in m.named_parameters()}
    tokens = torch.stack([a, b, torch.full_like(a, m.p)], 1)
    x = W["W_E"][tokens] + W["W_pos"]  # (batch, 3, d_model)
    attn_out = torch.zeros_like(x)
    for h in range(m.n_heads):
        q, k, v = x @ W["W_Q"][h], x @ W["W_K"][h], x @ W["W_V"][h]  # (batch, 3, d_head)
        for i in range(3):  # query position: it sees keys 0..i
            if pattern is None:
                s = torch.stack([(q[:, i] * k[:, j]).sum(-1) for j in range(i + 1)], 1) / math.sqrt(m.d_head)
                w = torch.exp(s - s.max(1, keepdim=True).values)
                w = w / w.sum(1, keepdim=True)
            else:
                w = pattern[h, i, : i + 1].double().expand(len(a), -1)
            z = sum(w[:, j, None] * v[:, j] for j in range(i + 1))
            attn_out[:, i] += z @ W["W_O"][h]
    resid_mid = x + attn_out
    hidden = torch.relu(resid_mid[:, 2] @ W["W_in"] + W["b_in"])
    logits = (resid_mid[:, 2] + hidden @ W["W_out"] + W["b_out"]) @ W["W_U"]
    return resid_mid, logits


SIZES = [(113, 128, 4, 512), (7, 6, 3, 5), (5, 4, 1, 1), (13, 10, 5, 33), (2, 3, 3, 2)]


@pytest.mark.parametrize("p, d_model, n_heads, d_mlp", SIZES)
def test_fast_and_spelled_out_forward_equal_the_reference(p, d_model, n_heads, d_mlp):
    m = make(p, d_model, n_heads, d_mlp)
    a, b = inputs(p)
    _, expected = reference(m, a, b)
    with torch.no_grad():
        fast, spelled = m(a, b), m.run_with_hooks(a, b)
    assert fast.shape == (p * p, p)
    torch.testing.assert_close(fast.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spelled.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, spelled, rtol=1e-5, atol=1e-5)


def test_fast_forward_handles_peaked_attention():
    """Large scores (a trained model's) must not overflow the softmax of the tables."""
    m = make(p=7, d_model=8, n_heads=2, d_mlp=6).double()
    with torch.no_grad():
        m.W_Q.mul_(10.0)
        m.W_K.mul_(10.0)
    a, b = inputs(7)
    _, expected = reference(m, a, b)
    torch.testing.assert_close(m(a, b), expected, rtol=1e-9, atol=1e-9)


def test_gradients_of_fast_and_spelled_out_forward_equal():
    m = make(p=11, d_model=12, n_heads=3, d_mlp=20).double()
    a, b = inputs(11)
    y = (a + b) % 11
    F.cross_entropy(m(a, b), y).backward()
    fast = {k: v.grad.clone() for k, v in m.named_parameters()}
    m.zero_grad()
    F.cross_entropy(m.run_with_hooks(a, b), y).backward()
    for k, v in m.named_parameters():
        assert fast[k].abs().sum() > 0, k  # every parameter feeds the output
        torch.testing.assert_close(fast[k], v.grad, rtol=1e-9, atol=1e-12, msg=k)


def test_cache_holds_every_name_with_its_shape():
    p, d, H, m_ = 7, 6, 3, 5
    m = make(p, d, H, m_)
    a, b = inputs(p)
    n = p * p
    logits, cache = m.run_with_cache(a, b)
    shapes = {"hook_embed": (n, 3, d), "hook_pos_embed": (n, 3, d), "attn.hook_q": (n, 3, H, 2),
              "attn.hook_k": (n, 3, H, 2), "attn.hook_v": (n, 3, H, 2), "attn.hook_attn_scores": (n, H, 3, 3),
              "attn.hook_pattern": (n, H, 3, 3), "attn.hook_z": (n, 3, H, 2), "hook_attn_out": (n, 3, d),
              "hook_resid_mid": (n, 3, d), "mlp.hook_pre": (n, 3, m_), "hidden_pre": (n, m_),
              "mlp.hook_post": (n, 3, m_), "hidden_post": (n, m_), "hook_mlp_out": (n, 3, d),
              "hook_resid_post": (n, 3, d), "logits": (n, p)}
    assert set(cache) == set(HOOK_NAMES) == set(shapes)
    for name, shape in shapes.items():
        assert cache[name].shape == shape, name
    assert torch.equal(cache["logits"], logits)
    assert torch.equal(cache["hook_embed"][:, 0], m.W_E[a]) and (cache["hook_embed"][:, 2] == m.W_E[p]).all()
    torch.testing.assert_close(cache["hidden_post"], F.relu(cache["hidden_pre"]))
    torch.testing.assert_close(cache["hidden_pre"], cache["mlp.hook_pre"][:, 2])
    resid_mid, _ = reference(m, a, b)
    torch.testing.assert_close(cache["hook_resid_mid"].double(), resid_mid, rtol=1e-5, atol=1e-5)


def test_attention_pattern_is_causal_and_normalised():
    m = make(p=11, d_model=12, n_heads=3, d_mlp=20)
    a, b = inputs(11)
    _, cache = m.run_with_cache(a, b)
    pattern = cache["attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(121, 3, 3))
    above = torch.ones(3, 3, dtype=torch.bool).triu(1)
    assert (pattern[..., above] == 0).all()
    assert (pattern[..., 0, 0] == 1).all()  # position 0 sees only itself
    assert (pattern[..., ~above] > 0).all()


def test_zeroing_hidden_post_leaves_the_residual_path():
    m = make()
    a, b = inputs(11)
    resid_mid, _ = reference(m, a, b)
    expected = (resid_mid[:, 2] + m.b_out.detach().double()) @ m.W_U.detach().double()
    logits, cache = m.run_with_cache(a, b, hooks={"hidden_post": torch.zeros_like})
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)
    assert (cache["hidden_post"] == 0).all()
    # each cache entry is its activation after its own hook only: mlp.hook_post comes before hidden_post
    torch.testing.assert_close(cache["mlp.hook_post"], F.relu(cache["mlp.hook_pre"]))
    assert (cache["hook_mlp_out"][:, 2] == m.b_out).all() and (cache["hook_mlp_out"][:, :2] != m.b_out).any()
    assert not torch.allclose(logits, m(a, b))


def test_hook_on_hidden_pre_feeds_the_relu():
    m = make()
    a, b = inputs(11)
    shift = torch.linspace(-3, 3, 20)
    logits, cache = m.run_with_cache(a, b, hooks={"hidden_pre": lambda x: x + shift})
    W = {k: v.detach() for k, v in m.named_parameters()}
    hidden = F.relu(cache["hook_resid_mid"][:, 2] @ W["W_in"] + W["b_in"] + shift)
    expected = (cache["hook_resid_mid"][:, 2] + hidden @ W["W_out"] + W["b_out"]) @ W["W_U"]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_patching_the_pattern_to_position_0():
    """Every query attends to `a` only: z_h = v_h(a) at every position."""
    m = make()
    a, b = inputs(11)
    one_hot = torch.zeros(3, 3)
    one_hot[:, 0] = 1
    logits = m.run_with_hooks(a, b, hooks={"attn.hook_pattern": lambda x: one_hot.expand_as(x)})
    _, expected = reference(m, a, b, pattern=one_hot.expand(m.n_heads, 3, 3))
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)
    # and by hand: logits depend on a only, not on b
    by_a = logits.view(11, 11, 11)
    torch.testing.assert_close(by_a, by_a[:, :1].expand_as(by_a))
    assert not torch.allclose(logits, m(a, b))


def test_neuron_readout_maps_hidden_post_to_the_logits():
    m = make()
    a, b = inputs(11)
    R = m.neuron_readout()
    assert R.shape == (20, 11)
    _, cache = m.run_with_cache(a, b)
    delta = torch.zeros(20)
    delta[4] = 1.0
    bumped = m.run_with_hooks(a, b, hooks={"hidden_post": lambda x: x + delta})
    torch.testing.assert_close(bumped - cache["logits"], R[4].expand(121, -1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_model=10, n_heads=4), r"^n_heads \(4\) must divide d_model \(10\)$"),
    (dict(d_model=0), "^d_model must be at least 1, got 0$"), (dict(n_heads=0), "^n_heads must be at least 1, got 0$"),
    (dict(d_mlp=0), "^d_mlp must be at least 1, got 0$"), (dict(d_model=-4, n_heads=2), "^d_model must be at least 1"),
    (dict(p=0), "^p must be at least 1, got 0$")])
def test_bad_widths_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Transformer(**({"p": 11} | kwargs))


def test_num_params_counted_from_the_shapes():
    p, d, H, mlp = 113, 128, 4, 512
    embed, attn = (p + 1) * d + 3 * d, 3 * (H * d * (d // H)) + H * (d // H) * d
    expected = embed + attn + (d * mlp + mlp) + (mlp * d + d) + d * p
    assert expected == 226_688  # Nanda et al.: 226_816, their unembed also has a "=" column
    assert Transformer(p).num_params() == expected
    small = 8 * 6 + 3 * 6 + 4 * (3 * 6 * 2) + (6 * 5 + 5) + (5 * 6 + 6) + 6 * 7
    assert Transformer(7, 6, 3, 5).num_params() == small


def test_config_rebuilds_the_model():
    m = Transformer(17, 24, 6, 40)
    cfg = m.config()
    assert cfg == {"arch": "transformer", "p": 17, "d_model": 24, "n_heads": 6, "d_mlp": 40, "activation": "relu"}
    clone = Transformer(**{k: v for k, v in cfg.items() if k != "arch"})
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert {k: v.shape for k, v in clone.state_dict().items()} == shapes


def test_init_scale_follows_nanda():
    torch.manual_seed(0)
    m = Transformer(113)
    assert m.W_E.shape == (114, 128) and m.W_pos.shape == (3, 128) and m.W_U.shape == (128, 113)
    assert m.W_Q.shape == (4, 128, 32) and m.W_O.shape == (4, 32, 128)
    assert m.W_in.shape == (128, 512) and m.W_out.shape == (512, 128)
    for name in ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
        assert abs(getattr(m, name).std().item() * math.sqrt(128) - 1) < 0.05, name
    assert abs(m.W_U.std().item() * math.sqrt(114) - 1) < 0.05
    assert (m.b_in == 0).all() and (m.b_out == 0).all()


def handbuilt(p=7, k=3, d_mlp=10, seed=0):
    """A hand-built transformer (see handbuilt.handbuilt_transformer) around a random ReLU MLP."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(p, k, generator=g)
    W1, b1 = torch.randn(2 * k, d_mlp, generator=g), torch.randn(d_mlp, generator=g)
    W2, c = torch.randn(d_mlp, p, generator=g), torch.randn(p, generator=g)
    m, P = handbuilt_transformer(emb, W1, b1, W2, c, big=8.0)
    return m, emb, (W1, b1, W2, c), P


def test_handbuilt_heads_attend_by_position_and_copy_the_operands():
    p, k = 7, 3
    m, emb, (W1, b1, W2, c), P = handbuilt(p, k)
    a, b = inputs(p)
    logits, cache = m.run_with_cache(a, b)
    fixed = torch.tensor([[[1.0, 0, 0], [0.5, 0.5, 0], [1, 0, 0]],
                          [[1.0, 0, 0], [0.5, 0.5, 0], [0, 1, 0]]])  # queries at 0, 1 see no key signal
    torch.testing.assert_close(cache["attn.hook_pattern"], fixed.expand(p * p, -1, -1, -1), atol=1e-6, rtol=0)
    expected = torch.zeros(p * p, m.d_model)
    expected[:, k:2 * k], expected[:, 2 * k:3 * k], expected[:, P + 2] = emb[a], emb[b], 1.0
    torch.testing.assert_close(cache["hook_resid_mid"][:, 2], expected, atol=1e-5, rtol=0)
    # ... and the MLP then sees exactly [embed_a, embed_b], as ToyMLP does
    mlp_logits = F.relu(torch.cat([emb[a], emb[b]], 1) @ W1 + b1) @ W2 + c
    torch.testing.assert_close(logits, mlp_logits, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(m(a, b), mlp_logits, atol=1e-4, rtol=1e-5)
