"""The 1-layer transformer of Nanda et al. 2023 for (a op b) mod p, with its internals exposed by name.

Input tokens a, b, "=" (vocabulary p + 1, "=" is token p); learned token and position embeddings,
one causal attention layer, one ReLU MLP (b_in, b_out are the only biases), no LayerNorm, an untied
unembed read at the "=" position (position 2). Parameter and hook names follow TransformerLens.

Fast path (forward). A 1-layer model's output reads only position 2, whose residual x_eq = W_E[p] +
W_pos[2] is the same for every input, so its query q_h = x_eq W_Q[h] is a constant. For a token t
at position j, with x = W_E[t] + W_pos[j]:
    score_h(t, j) = x W_K[h] q_h / sqrt(d_head)                  # a (p+1, n_heads) table per position
    value_h(t, j) = x W_V[h]                                      # a (p+1, n_heads * d_head) table
Both are one matmul of W_E by [W_K q | W_V]. Per input, gather row a of position 0's table and
row b of position 1's (position 2's row is a constant), then
    w = softmax_j(score)                                          # (batch, n_heads, 3)
    z_h = sum_j w_hj value_h(., j)                                # (batch, n_heads, d_head)
    resid_mid = x_eq + z W_O                                      # at "=" only
    hidden_pre = z (W_O W_in) + (x_eq W_in + b_in)                # (batch, d_mlp)
    logits = relu(hidden_pre) (W_out W_U) + z (W_O W_U) + (x_eq + b_out) W_U
where W_O [W_in | W_U] is one (d_model, d_mlp + p) matrix and W_out W_U one (d_mlp, p) matrix, so
the big matmuls run on (batch, d_model) and (batch, d_mlp) rows of position 2 only.

Interface (shared with model.ToyMLP):
    model(a, b) -> logits (batch, p)
    model(a, b, embed_noise) -> logits              training only: (batch, 2, d_model) added to a's and b's embedding
    model.run_with_cache(a, b) -> (logits, cache)   cache: the names in HOOK_NAMES
    model.run_with_hooks(a, b, hooks={name: fn})    fn(tensor) -> tensor replaces an activation
run_with_hooks is the spelled-out all-positions forward. "hidden_pre" / "hidden_post" are the MLP's
activations at "=" (batch, d_mlp), as ToyMLP names its neurons; neuron_readout() = W_out W_U maps
hidden_post to the logits, the role ToyMLP's W_U plays.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import Hooks, activation_function, hook_point, lookup

# In the order the spelled-out forward meets them. Shapes: (batch, 3, ...) at every position,
# except hidden_pre / hidden_post (batch, d_mlp) and logits (batch, p), all at "=".
HOOK_NAMES = (
    "hook_embed", "hook_pos_embed",                           # (batch, 3, d_model)
    "attn.hook_q", "attn.hook_k", "attn.hook_v",               # (batch, 3, n_heads, d_head)
    "attn.hook_attn_scores", "attn.hook_pattern",             # (batch, n_heads, query 3, key 3)
    "attn.hook_z",                                            # (batch, 3, n_heads, d_head)
    "hook_attn_out", "hook_resid_mid",                        # (batch, 3, d_model)
    "mlp.hook_pre", "hidden_pre", "mlp.hook_post", "hidden_post",
    "hook_mlp_out", "hook_resid_post",                        # (batch, 3, d_model)
    "logits",                                                 # (batch, p)
)
N_CTX = 3  # a, b, "="


class Transformer(nn.Module):
    def __init__(self, p: int, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512, activation: str = "relu"):
        super().__init__()
        self.activation, self.act = activation, activation_function(activation)
        for name, value in (("p", p), ("d_model", d_model), ("n_heads", n_heads), ("d_mlp", d_mlp)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.p, self.d_model, self.n_heads, self.d_mlp = p, d_model, n_heads, d_mlp
        self.d_head = d_model // n_heads

        # Nanda et al.'s initialisation: N(0, 1) / sqrt(d_model), W_U / sqrt(d_vocab), zero biases.
        def normal(*shape, fan=d_model):
            return nn.Parameter(torch.randn(*shape) / math.sqrt(fan))

        H, dh = n_heads, self.d_head
        self.W_E = normal(p + 1, d_model)  # row p is "="
        self.W_pos = normal(N_CTX, d_model)
        self.W_Q, self.W_K, self.W_V = normal(H, d_model, dh), normal(H, d_model, dh), normal(H, d_model, dh)
        self.W_O = normal(H, dh, d_model)
        self.W_in = normal(d_model, d_mlp)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = normal(d_mlp, d_model)
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = normal(d_model, p, fan=p + 1)  # their unembed had p + 1 outputs; we drop "="'s

    def config(self) -> dict:
        return {"arch": "transformer", "p": self.p, "d_model": self.d_model, "n_heads": self.n_heads,
                "d_mlp": self.d_mlp, "activation": self.activation}

    def num_params(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def neuron_readout(self) -> torch.Tensor:
        """(d_mlp, p): the linear map from hidden_post at "=" to the logits (ToyMLP's W_U)."""
        return self.W_out @ self.W_U

    def forward(self, a: torch.Tensor, b: torch.Tensor, embed_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at "=" from per-token tables (see the module docstring); equal to run_with_hooks.
        embed_noise (batch, 2, d_model), if given, is added to the token embeddings of a and b
        (training with --embed-noise), exactly as a hook on hook_embed adding it at positions 0, 1."""
        H, dh, p = self.n_heads, self.d_head, self.p
        x_eq = self.W_E[p] + self.W_pos[2]  # (d_model,) the residual at "=" before attention
        q = torch.einsum("d,hde->he", x_eq, self.W_Q)  # (H, dh) the only query the output needs
        w_score = torch.einsum("hde,he->dh", self.W_K, q) / math.sqrt(dh)  # (d_model, H)
        w_value = self.W_V.permute(1, 0, 2).reshape(self.d_model, H * dh)  # (d_model, H*dh)
        cols = torch.cat([w_score, w_value], 1)  # (d_model, H + H*dh)
        tok, pos = self.W_E @ cols, self.W_pos @ cols  # (p+1, H + H*dh), (3, H + H*dh)
        rows = torch.stack([lookup(tok + pos[0], a), lookup(tok + pos[1], b),
                            (tok[p] + pos[2]).expand(len(a), -1)], 1)  # (batch, 3, H + H*dh)
        if embed_noise is not None:  # at a and b the residual only feeds keys and values: noise @ cols
            rows = rows + F.pad(embed_noise @ cols, (0, 0, 0, 1))  # nothing added at "="
        pattern = rows[..., :H].softmax(1)  # (batch, 3 keys, H)
        values = rows[..., H:].unflatten(-1, (H, dh))  # (batch, 3 keys, H, dh)
        z = (pattern[..., None] * values).sum(1).flatten(1)  # (batch, H*dh)
        # resid_mid at "=" is x_eq + z W_O; it feeds the MLP (W_in) and the logits directly (W_U).
        from_z = z @ (self.W_O.flatten(0, 1) @ torch.cat([self.W_in, self.W_U], 1))  # (batch, d_mlp + p)
        # Vector-matrix products as a product and a sum: under vmap (batched.py) x @ W rounds differently
        hidden_pre = from_z[:, :self.d_mlp] + ((x_eq[:, None] * self.W_in).sum(0) + self.b_in)  # (batch, d_mlp)
        direct = from_z[:, self.d_mlp:] + ((x_eq + self.b_out)[:, None] * self.W_U).sum(0)  # (batch, p)
        # not torch.addmm: under vmap (batched.py) it rounds differently, a plain matmul and add do not
        return direct + self.act(hidden_pre) @ self.neuron_readout()  # (batch, p)

    def run_with_hooks(self, a, b, hooks: Hooks | None = None, cache: dict | None = None) -> torch.Tensor:
        """The forward pass spelled out over all positions; hooks[name](x) replaces activation `name`
        by its result, and cache (if given) receives every activation after its hook."""
        hooks = hooks or {}
        point = hook_point(hooks, cache)

        def at_eq(name, x):
            """Hook point `name` = x[:, 2]; a hook's result is written back into position 2."""
            if name not in hooks:
                point(name, x[:, 2])
                return x
            return torch.cat([x[:, :2], point(name, x[:, 2])[:, None]], 1)

        batch = len(a)
        tokens = torch.stack([a, b, torch.full_like(a, self.p)], 1)  # (batch, 3)
        embed = point("hook_embed", F.embedding(tokens, self.W_E))  # (batch, 3, d_model)
        pos_embed = point("hook_pos_embed", self.W_pos.expand(batch, -1, -1))
        resid = embed + pos_embed
        q = point("attn.hook_q", torch.einsum("bpd,hde->bphe", resid, self.W_Q))  # (batch, 3, H, dh)
        k = point("attn.hook_k", torch.einsum("bpd,hde->bphe", resid, self.W_K))
        v = point("attn.hook_v", torch.einsum("bpd,hde->bphe", resid, self.W_V))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.d_head)  # (batch, H, 3, 3)
        causal = torch.ones(N_CTX, N_CTX, dtype=torch.bool, device=scores.device).tril()
        scores = point("attn.hook_attn_scores", scores.masked_fill(~causal, float("-inf")))
        pattern = point("attn.hook_pattern", scores.softmax(-1))
        z = point("attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))  # (batch, 3, H, dh)
        attn_out = point("hook_attn_out", torch.einsum("bqhe,hed->bqd", z, self.W_O))
        resid_mid = point("hook_resid_mid", resid + attn_out)  # (batch, 3, d_model)
        pre = point("mlp.hook_pre", resid_mid @ self.W_in + self.b_in)  # (batch, 3, d_mlp)
        pre = at_eq("hidden_pre", pre)
        post = at_eq("hidden_post", point("mlp.hook_post", self.act(pre)))
        mlp_out = point("hook_mlp_out", post @ self.W_out + self.b_out)
        resid_post = point("hook_resid_post", resid_mid + mlp_out)
        return point("logits", resid_post[:, 2] @ self.W_U)  # (batch, p)

    def run_with_cache(self, a, b, hooks: Hooks | None = None) -> tuple[torch.Tensor, dict]:
        cache: dict[str, torch.Tensor] = {}
        logits = self.run_with_hooks(a, b, hooks, cache)
        return logits, cache
