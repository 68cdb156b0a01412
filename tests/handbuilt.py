"""A ToyMLP built by hand that computes (a + b) mod p with chosen frequencies (quadratic activation).

For each key frequency k and phase phi in {0, pi/4, pi/2, 3pi/4}, two neurons with inputs
x + y and x - y, where x = cos(w_k a + phi), y = cos(w_k b + phi); read out with +-cos(w_k c + 2 phi).
(x + y)^2 - (x - y)^2 = 4xy, and summing over the four phases leaves exactly
logits = 4 * scale * sum_k cos(w_k (a + b - c)), which peaks at c = (a + b) mod p.
"""
import math

import torch

from model import ToyMLP

PHASES = [j * math.pi / 4 for j in range(4)]


def handbuilt_model(p: int, keys: list[int], scale: float = 5.0) -> tuple[ToyMLP, list[int]]:
    """Returns the model and, for each neuron, the frequency it was built from."""
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
                W_in[d_embed + 2 * i, n], W_in[d_embed + 2 * i + 1, n] = sign * math.cos(phi), -sign * math.sin(phi)
                W_U[n] = sign * scale * torch.cos(w * x + 2 * phi)
                neuron_freq.append(k)
    with torch.no_grad():
        model.W_E.copy_(W_E)
        model.W_in.copy_(W_in)
        model.b_in.zero_()
        model.W_U.copy_(W_U)
        model.b_U.zero_()
    return model.eval(), neuron_freq
