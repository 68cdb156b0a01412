"""A ToyMLP built by hand that computes (a + b) mod p with chosen frequencies (quadratic activation).

For each key frequency k and phase phi in {0, pi/4, pi/2, 3pi/4}, two neurons with inputs
x + y and x - y, where x = cos(w_k a + phi), y = cos(w_k b + phi); read out with +-cos(w_k c + 2 phi).
(x + y)^2 - (x - y)^2 = 4xy, and summing over the four phases leaves exactly
logits = 4 * scale * sum_k cos(w_k (a + b - c)), which peaks at c = (a + b) mod p.
"""
import math

import torch

from core.transformer import Transformer
from model import ToyMLP

PHASES = [j * math.pi / 4 for j in range(4)]


def handbuilt_model(p: int, keys: list[int], scale: float = 5.0, op: str = "add") -> tuple[ToyMLP, list[int]]:
    """Returns the model and, for each neuron, the frequency it was built from. With op="sub" the
    b part of W_in reads cos(-w_k b + phi) instead, so the network computes (a - b) mod p."""
    b_sign = -1 if op == "sub" else 1
    d_embed, d_hidden = 2 * len(keys), 8 * len(keys)
    model = ToyMLP(p, d_embed, d_hidden, activation="quadratic")
    x = torch.arange(p, dtype=torch.float64)
    W_E = torch.zeros(p, d_embed, dtype=torch.float64)
    W_in = torch.zeros(2 * d_embed, d_hidden, dtype=torch.float64)
    W_U = torch.zeros(d_hidden, p, dtype=torch.float64)
    neuron_freq = []
    for i, k in enumerate(keys):
        w = 2 * math.pi * k / p
        W_E[:, 2 * i], W_E[:, 2 * i + 1] = torch.cos(w * x), torch.sin(w * x)
        for phi in PHASES:
            for sign in (1, -1):
                n = len(neuron_freq)
                # cos(w a + phi) = cos(phi) cos(w a) - sin(phi) sin(w a)
                W_in[2 * i, n], W_in[2 * i + 1, n] = math.cos(phi), -math.sin(phi)
                W_in[d_embed + 2 * i, n] = sign * math.cos(phi)
                W_in[d_embed + 2 * i + 1, n] = -sign * b_sign * math.sin(phi)  # cos(-w b + phi) for sub
                W_U[n] = sign * scale * torch.cos(w * x + 2 * phi)
                neuron_freq.append(k)
    return with_weights(model, W_E, W_in, W_U), neuron_freq


def with_weights(model: ToyMLP, W_E, W_in, W_U) -> ToyMLP:
    """model with these weights and zero biases, in eval mode."""
    with torch.no_grad():
        model.W_E.copy_(W_E)
        model.W_in.copy_(W_in)
        model.b_in.zero_()
        model.W_U.copy_(W_U)
        model.b_U.zero_()
    return model.eval()


def annotated_model(p: int, keys: list[int], top: int = 5, scale: float = 1.0):
    """The hand-built circuit with parts that a wrong analysis would mishandle. Returns (model, parts):
    - every circuit neuron but `top` is split into two copies carrying half its readout each, so
      mean-ablating `top` removes a whole term and any other neuron only half of one: `top` matters most;
    - a constant neuron (pre-activation 1 everywhere) that adds BIAS[c] to the logits: mean-ablating
      it changes nothing, zero-ablating it removes BIAS;
    - a dead neuron (always 0), and an output bias b_U = BIAS as well.
    parts: {"top", "constant", "dead": neuron indices, "frequency": each neuron's built frequency
    (None for the constant and dead ones), "bias": BIAS}."""
    core, freq = handbuilt_model(p, keys, scale)
    n_core = core.d_hidden
    copies = [n for n in range(n_core) if n != top]
    d_hidden = n_core + len(copies) + 2
    model = ToyMLP(p, core.d_embed, d_hidden, activation="quadratic")
    c = torch.arange(p, dtype=torch.float64)
    bias = 0.3 * torch.cos(2 * math.pi * c / p) + 0.1 * torch.sin(6 * math.pi * c / p)
    with torch.no_grad():
        model.W_E.copy_(core.W_E)
        model.W_in.zero_()
        model.b_in.zero_()
        model.W_U.zero_()
        model.W_in[:, :n_core] = core.W_in
        model.W_in[:, n_core:n_core + len(copies)] = core.W_in[:, copies]
        model.W_U[:n_core] = core.W_U
        model.W_U[copies] = core.W_U[copies] / 2
        model.W_U[n_core:n_core + len(copies)] = core.W_U[copies] / 2
        constant, dead = d_hidden - 2, d_hidden - 1
        model.b_in[constant] = 1.0  # quadratic: 1**2 = 1 for every input
        model.W_U[constant] = bias
        model.b_U.copy_(bias)
    parts = {"top": top, "constant": constant, "dead": dead, "bias": bias,
             "frequency": freq + [freq[n] for n in copies] + [None, None]}
    return model.eval(), parts


def with_constant_neurons(model: ToyMLP, neurons, values) -> ToyMLP:
    """An independent way to ablate: a copy whose given neurons output values[n] for every input,
    made by weight surgery (input weights 0, bias set so that act(bias) = value), not by hooks."""
    inverse = {"relu": lambda v: v, "quadratic": torch.sqrt}[model.activation]
    copy = ToyMLP(model.p, model.d_embed, model.d_hidden, model.activation)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for n in neurons:
            copy.W_in[:, n] = 0.0
            copy.b_in[n] = inverse(torch.as_tensor(float(values[n])))
    return copy.eval()


def direct_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy by the textbook formula in float64: logsumexp - correct logit."""
    rows = logits.double()
    return float((torch.logsumexp(rows, 1) - rows[torch.arange(len(y)), y]).mean())


def handbuilt_transformer(emb, W1, b1, W2, c, activation="relu", big=30.0) -> tuple[Transformer, int]:
    """A transformer that computes MLP(emb[a], emb[b]) = act([emb[a], emb[b]] W1 + b1) W2 + c.

    Residual layout (width e = emb's columns): [0:e) token embedding, [e:2e) copy of a, [2e:3e)
    copy of b, [3e:3e+3) one-hot position, then p dimensions read by W_U (the MLP's output), padded
    to an even width. Two heads: the query at "=" matches head 0's key at position 0 (a) and head 1's
    at position 1 (b), with score big^2 / sqrt(d_head), so each attends by position only; each head's
    OV circuit copies the token embedding into its own block. "=" embeds to zero.
    Returns (model, P = where the position block starts)."""
    p, e = emb.shape
    d_mlp = W1.shape[1]
    P, O = 3 * e, 3 * e + 3  # where the position block and the output block start
    d_model = O + p + (O + p) % 2
    m = Transformer(p, d_model, 2, d_mlp, activation)
    with torch.no_grad():
        for w in m.parameters():
            w.zero_()
        m.W_E[:p, :e] = emb
        m.W_pos[:, P:P + 3] = torch.eye(3)
        for h in range(2):
            m.W_Q[h, P + 2, 0] = big  # only "=" has a query
            m.W_K[h, P + h, 0] = big  # head h's key lives at position h
            m.W_V[h, :e, :e] = torch.eye(e)
            m.W_O[h, :e, e * (h + 1):e * (h + 2)] = torch.eye(e)
        m.W_in[e:3 * e] = W1
        m.b_in.copy_(b1)
        m.W_out[:, O:O + p] = W2
        m.b_out[O:O + p] = c
        m.W_U[O:O + p] = torch.eye(p)
    return m.eval(), P


def fourier_transformer(p: int, keys: list[int], scale: float = 5.0) -> tuple[Transformer, list[int]]:
    """handbuilt_model's Fourier MLP (quadratic neurons) behind two position-only heads: it computes
    (a + b) mod p with the given key frequencies. Returns the model and each neuron's frequency."""
    core, neuron_freq = handbuilt_model(p, keys, scale)
    W = {k: v.detach() for k, v in core.named_parameters()}
    model, _ = handbuilt_transformer(W["W_E"], W["W_in"], W["b_in"], W["W_U"], W["b_U"], "quadratic")
    return model, neuron_freq


def discrete_log_model(p: int, keys: list[int], g: int, scale: float = 5.0, op: str = "mul") -> tuple[ToyMLP, list]:
    """handbuilt_model's Fourier circuit on discrete logarithms: token x = g^i != 0 embeds as
    cos/sin(w_k i) with w_k = 2 pi k / (p - 1), so the circuit computes g^(i + j) = a * b (op "mul")
    or g^(i - j) = a / b (op "div"), reading out class c = g^l with cos(w_k l + 2 phi). Token 0 embeds
    as a last, separate direction that one extra neuron (the last) detects: (1 if an operand is 0)^2,
    read out as a large logit for class 0. Returns the model and each neuron's frequency (None for
    the zero detector)."""
    n = p - 1
    core, neuron_freq = handbuilt_model(n, keys, scale, op="sub" if op == "div" else "add")
    d = core.d_embed
    model = ToyMLP(p, d + 1, core.d_hidden + 1, activation="quadratic")
    log = {pow(g, i, p): i for i in range(n)}
    nonzero = torch.tensor(sorted(log))
    positions = torch.tensor([log[x] for x in nonzero.tolist()])
    zero = core.d_hidden  # the zero detector
    with torch.no_grad():
        for w in model.parameters():
            w.zero_()
        model.W_E[nonzero, :d] = core.W_E[positions]
        model.W_E[0, d] = 1.0
        model.W_in[:d, :zero] = core.W_in[:d]  # a part
        model.W_in[d + 1:2 * d + 1, :zero] = core.W_in[d:]  # b part
        model.W_in[d, zero] = model.W_in[2 * d + 1, zero] = 1.0
        model.W_U[:zero, nonzero] = core.W_U[:, positions]
        model.W_U[zero, 0] = 10 * scale * len(keys)  # above any circuit logit (at most 4 scale len(keys))
    return model.eval(), neuron_freq + [None]


def pizza_weights(p: int, keys: list[int], directions: int = 32):
    """The pizza by hand, as ToyMLP weights (float64): W_E[x] = (cos w x, sin w x) per key; each hidden
    unit reads u_m . (E_a + E_b) (W_in's a part = b part = U) with u_m = (cos t_m, sin t_m) on the full
    circle, ReLU, read out with cos(2 t_m - w c).

    E_a + E_b = r (cos phi, sin phi) with r = 2 cos(w(a-b)/2), phi = w(a+b)/2, and
    ReLU(cos x) = 1/pi + cos(x)/2 + (2/3pi) cos(2x) + (even harmonics). Summed over the M directions,
    the readout cos(2t - wc) keeps only the cos(2(phi - t)) term, the same for r < 0 (phi + pi doubles to
    the same angle), so each key contributes |r| (M/3pi) cos(2 phi - wc)
    = (2M/3pi) |cos(w(a-b)/2)| cos(w(a+b-c)): the pizza formula, up to aliasing of order 1/M^2."""
    K = len(keys)
    x = torch.arange(p, dtype=torch.float64)
    W_E = torch.zeros(p, 2 * K, dtype=torch.float64)
    U = torch.zeros(2 * K, directions * K, dtype=torch.float64)
    W_U = torch.zeros(directions * K, p, dtype=torch.float64)
    for i, k in enumerate(keys):
        w = 2 * math.pi * k / p
        W_E[:, 2 * i], W_E[:, 2 * i + 1] = torch.cos(w * x), torch.sin(w * x)
        for m in range(directions):
            t, n = 2 * math.pi * m / directions, i * directions + m
            U[2 * i, n], U[2 * i + 1, n] = math.cos(t), math.sin(t)
            W_U[n] = torch.cos(2 * t - w * x)
    return W_E, torch.cat([U, U]), W_U


def pizza_model(p: int, keys: list[int], directions: int = 32) -> ToyMLP:
    W_E, W_in, W_U = pizza_weights(p, keys, directions)
    return with_weights(ToyMLP(p, W_E.shape[1], W_U.shape[0], activation="relu"), W_E, W_in, W_U)
