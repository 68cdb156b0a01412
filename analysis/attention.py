"""The transformer-only parts of the analysis: attention, heads and the residual stream at "=".

Each function takes the model and circuit.Grid (all p*p pairs) and returns plain data;
summary.analyze calls them when the model has attention (has_attention). Like the rest of
the analysis they run over the pairs in chunks (Grid.chunks), so memory grows as p^2, not p^3.
"""
import torch

from analysis import fourier
from analysis.circuit import grid_activations
from analysis.components import activation_mean, replace_at


def has_attention(model) -> bool:
    return hasattr(model, "W_Q")


def attention_patterns(model, grid) -> torch.Tensor:
    """(n_heads, 2, p, p): the attention weight from "=" to a (index 0) and to b (index 1) of each
    head over all (a, b); the rest of each head's attention goes to "=" itself."""
    pattern = grid_activations(model, grid, ["attn.hook_pattern"])["attn.hook_pattern"]  # (p*p, H, query, key)
    return pattern[:, :, 2, :2].permute(1, 2, 0).reshape(model.n_heads, 2, grid.p, grid.p)


def head_ablations(model, grid) -> list[dict]:
    """Mean-ablate each head's output at "=" (its z replaced by its mean over all pairs): loss and
    accuracy on all pairs. Only position 2 feeds the logits, so only it is ablated."""
    out = []
    with torch.no_grad():
        mean = activation_mean(model, grid, "attn.hook_z")  # (3, n_heads, d_head)
        for h in range(model.n_heads):
            hooks = {"attn.hook_z": replace_at(2, h, mean)}
            loss, acc = grid.score(lambda pairs: model.run_with_hooks(grid.a[pairs], grid.b[pairs], hooks))
            out.append({"head": h, "loss": loss, "acc": acc})
    return out


def residual_key_directions(model, grid, keys: list[int]) -> dict:
    """How the output depends on the key-frequency part of the residual stream at "=" (resid_mid,
    what the MLP and the unembed read). Over the basis's position pairs (all (a, b) for add and sub),
    resid_mid = mean + key part + rest, where the key part holds the cos/sin(w_k a), cos/sin(w_k b)
    terms and their products for k in keys (fourier.grid_key_part). Reports the key part's share of
    resid_mid's variance, and loss and accuracy on those pairs when resid_mid is replaced by mean + key
    part (kept) or mean + rest (removed)."""
    basis, rows = grid.basis, grid.basis.grid_rows(grid.p)
    with torch.no_grad():
        resid = grid_activations(model, grid, ["hook_resid_mid"])["hook_resid_mid"][:, 2]  # (p*p, d_model)
        at_eq = resid[rows].reshape(basis.n, basis.n, -1)
        mean = fourier.mean_float64(at_eq.reshape(len(rows), -1), 0)
        key = fourier.by_column_groups(lambda part: fourier.grid_key_part(part, keys), at_eq).reshape(len(rows), -1)
        centred = float(fourier.by_column_groups(lambda part: ((part.double() - part.double().mean((0, 1))) ** 2)
                                                 .sum((0, 1)), at_eq).sum())
        out = {"key_variance_share": float(key.pow(2).sum()) / centred if centred > 0 else 0.0}
        del at_eq
        replaced = {"keep_key": lambda pairs: mean + key[grid.position[pairs]],
                    "remove_key": lambda pairs: resid[pairs].double() - key[grid.position[pairs]]}
        for name, value_at in replaced.items():
            def forward(pairs, value_at=value_at):
                def replace(x):
                    x = x.clone()
                    x[:, 2] = value_at(pairs).to(x.dtype)
                    return x
                return model.run_with_hooks(grid.a[pairs], grid.b[pairs], {"hook_resid_mid": replace})

            out[f"{name}_loss"], out[f"{name}_acc"] = grid.score(forward, in_basis=True)
    return out


def analyze(model, grid, keys: list[int]) -> dict:
    out = {"attention": attention_patterns(model, grid), "head_ablations": head_ablations(model, grid)}
    if grid.basis is not None:
        out["residual_key_directions"] = residual_key_directions(model, grid, keys)
    return out
