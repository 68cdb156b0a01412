"""ToyMLP for modular arithmetic, with its internals exposed by name.

    embed_a = W_E[a], embed_b = W_E[b]                       # (batch, d_embed) each, shared table
    hidden_pre = [embed_a, embed_b] @ W_in + b_in             # (batch, d_hidden)
    hidden_post = act(hidden_pre)                             # the "neurons"
    logits = hidden_post @ W_U + b_U                          # (batch, p)

Interface (shared with transformer.Transformer):
    model(a, b) -> logits
    model(a, b, embed_noise) -> logits              training only: (batch, 2, d_embed) added to embed_a, embed_b
    model.run_with_cache(a, b) -> (logits, cache)   cache: the names in HOOK_NAMES
    model.run_with_hooks(a, b, hooks={name: fn})    fn(tensor) -> tensor replaces an activation
    ablate_neurons(...), patch(...)                  ready-made hook functions
Hooks are plain arguments: nothing is ever attached to the model, so nothing can be left behind.
"""
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

HOOK_NAMES = ("embed_a", "embed_b", "hidden_pre", "hidden_post", "logits")
ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "quadratic": torch.square,  # Gromov (2023): the activation with a known analytic solution
}
Hooks = dict[str, Callable[[torch.Tensor], torch.Tensor]]


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function ACTIVATIONS names, or ValueError naming the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class ToyMLP(nn.Module):
    def __init__(self, p: int, d_embed: int = 128, d_hidden: int = 256, activation: str = "relu"):
        super().__init__()
        self.act = activation_function(activation)
        self.p, self.d_embed, self.d_hidden, self.activation = p, d_embed, d_hidden, activation
        # The same initialisation as nn.Embedding (N(0, 1)) and nn.Linear (U(+-1/sqrt(fan_in))).
        self.W_E = nn.Parameter(torch.randn(p, d_embed))  # (p, d_embed)
        self.W_in = nn.Parameter(_uniform(2 * d_embed, (2 * d_embed, d_hidden)))  # rows: [a part; b part]
        self.b_in = nn.Parameter(_uniform(2 * d_embed, (d_hidden,)))
        self.W_U = nn.Parameter(_uniform(d_hidden, (d_hidden, p)))  # (d_hidden, p)
        self.b_U = nn.Parameter(_uniform(d_hidden, (p,)))

    def config(self) -> dict:
        return {"arch": "mlp", "p": self.p, "d_embed": self.d_embed, "d_hidden": self.d_hidden,
                "activation": self.activation}

    def num_params(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def neuron_readout(self) -> torch.Tensor:
        """(d_hidden, p): the linear map from the neurons (hidden_post) to the logits."""
        return self.W_U

    def token_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each operand's contribution to hidden_pre, per token: (p, d_hidden) for a and for b.

        The input is a pair of one-hot tokens, so [W_E[a], W_E[b]] @ W_in equals
        table_a[a] + table_b[b]: two small matmuls and a gather instead of a (batch x 2d) matmul.
        """
        d = self.d_embed
        return self.W_E @ self.W_in[:d], self.W_E @ self.W_in[d:]

    def forward(self, a: torch.Tensor, b: torch.Tensor, embed_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; embed_noise (batch, 2, d_embed), if given, is added to embed_a and embed_b
        (training with --embed-noise), exactly as run_with_hooks with hooks adding it there."""
        table_a, table_b = self.token_tables()
        # b_in is added to the small (p, d_hidden) table rather than to the (batch, d_hidden) sum
        hidden_pre = lookup(table_a + self.b_in, a) + lookup(table_b, b)  # (batch, d_hidden)
        if embed_noise is not None:  # [W_E[a] + n_a, W_E[b] + n_b] @ W_in = the tables' rows + [n_a, n_b] @ W_in
            hidden_pre = hidden_pre + embed_noise.flatten(1) @ self.W_in
        hidden_post = self.act(hidden_pre)
        return hidden_post @ self.W_U + self.b_U  # (batch, p)

    def run_with_hooks(self, a, b, hooks: Hooks | None = None, cache: dict | None = None) -> torch.Tensor:
        """The forward pass spelled out; hooks[name](x) replaces activation `name` by its result,
        and cache (if given) receives every activation after its hook."""
        point = hook_point(hooks, cache)
        embed_a = point("embed_a", self.W_E[a])  # (batch, d_embed)
        embed_b = point("embed_b", self.W_E[b])
        hidden_pre = point("hidden_pre", torch.cat([embed_a, embed_b], dim=-1) @ self.W_in + self.b_in)
        hidden_post = point("hidden_post", self.act(hidden_pre))  # (batch, d_hidden)
        return point("logits", hidden_post @ self.W_U + self.b_U)  # (batch, p)

    def run_with_cache(self, a, b, hooks: Hooks | None = None) -> tuple[torch.Tensor, dict]:
        cache: dict[str, torch.Tensor] = {}
        logits = self.run_with_hooks(a, b, hooks, cache)
        return logits, cache


def hook_point(hooks: Hooks | None, cache: dict | None) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """point(name, x) for a spelled-out forward: returns hooks[name](x) if there is such a hook
    (else x), and records the result in cache (if given) under name."""
    hooks = hooks or {}

    def point(name, x):
        x = hooks[name](x) if name in hooks else x
        if cache is not None:
            cache[name] = x
        return x

    return point


def _uniform(fan_in: int, shape) -> torch.Tensor:
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


def ablate_neurons(neurons, mode: str = "zero", mean: torch.Tensor | None = None):
    """A hook for 'hidden_post' that sets the chosen neurons to 0 ('zero') or to `mean`
    ('mean': a (d_hidden,) vector, usually each neuron's mean activation over all inputs)."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"unknown ablation mode {mode!r}: choose 'zero' or 'mean'")
    if mode == "mean" and mean is None:
        raise ValueError("mean ablation needs the neurons' mean activations")
    idx = torch.as_tensor(neurons, dtype=torch.long)

    def hook(x):
        x = x.clone()
        x[..., idx] = 0.0 if mode == "zero" else mean.to(x)[idx]
        return x

    return hook


def patch(value: torch.Tensor):
    """A hook that replaces an activation by `value` (for example one cached on other inputs)."""
    return lambda x: value.to(x).expand_as(x)


# How lookup reads the rows of a token table; the same values either way (bench.py --sweep times both):
# "index" gathers them, "onehot" multiplies one_hot(index) by the table, so that the forward and the backward
# are matrix products (no scatter-add: on a GPU, no atomic adds in the backward). Set model.LOOKUP to choose.
LOOKUPS = ("index", "onehot")
LOOKUP = "index"


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rows table[index]. With LOOKUP "index": F.embedding on a CPU, whose backward is fast there (plain
    indexing's is ~4x slower); index_select on a GPU, whose backward (index_add) a CUDA graph can capture
    (F.embedding's backward sorts beyond 3,072 indices and waits for the GPU in the middle, which capture
    forbids). With "onehot": one_hot(index) @ table, whose gradient is one_hot(index).T @ grad."""
    if LOOKUP == "onehot":
        return (index[..., None] == torch.arange(table.shape[0], device=index.device)).to(table.dtype) @ table
    return F.embedding(index, table) if table.device.type == "cpu" else table.index_select(0, index)


def cross_entropy_per_row(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (float64) of (..., N, p) logits against labels y (N,), and whether the correct
    logit is strictly the largest.

    Computed relative to the correct logit, loss = log(1 + sum_{c != y} exp(z_c - z_y)), with log1p
    when the correct logit is the largest: this keeps full relative precision for tiny losses
    (a trained model's are ~1e-6) even in float32, where log_softmax would round them away."""
    return cross_entropy_of_margins(margins(logits, y))


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_c - z_y for every logit c of (..., N, p) logits against labels y (N,), -inf at c = y."""
    index = y.expand(*logits.shape[:-1])[..., None]
    diff = logits - logits.gather(-1, index)
    return diff.scatter_(-1, index, float("-inf"))  # leave out c = y


def cross_entropy_of_margins(diff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cross_entropy_per_row from margins(logits, y); overwrites diff. Callers that change logits by
    low-rank updates (neuron ablations) update the margins instead and skip the logits."""
    top = diff.max(-1).values
    shift = top.clamp_min(0)  # > 0 only where a wrong logit beats the correct one
    rest = diff.sub_(shift[..., None]).exp_().sum(-1).double()
    shift = shift.double()
    loss = torch.where(shift > 0, shift + torch.log(torch.exp(-shift) + rest), torch.log1p(rest))
    return loss, top < 0


def sum_squared_weights(model: nn.Module) -> float:
    """The weight norm used throughout: sum over every parameter of w**2 (in float64)."""
    return squared_norm(model.parameters())


def squared_norm(tensors) -> float:
    """sum over the tensors of w**2, each reduced in float64 then added in order (so the same last bits
    wherever the same tensors are summed: the batched engine's per-model rows too)."""
    return sum(float((w.detach().double() ** 2).sum()) for w in tensors)
