"""The transformer-only parts of the analysis: attention, heads and the residual stream at "=".

Each function takes the model and interpretability.Grid (all p*p pairs) and returns plain data;
interpretability.analyze calls them when the model has attention (has_attention).
"""
import torch

import fourier


def has_attention(model) -> bool:
    return hasattr(model, "W_Q")


def attention_patterns(model, grid) -> torch.Tensor:
    """(n_heads, 2, p, p): the attention weight from "=" to a (index 0) and to b (index 1) of each
    head over all (a, b); the rest of each head's attention goes to "=" itself."""
    with torch.no_grad():
        pattern = model.run_with_cache(grid.a, grid.b)[1]["attn.hook_pattern"]  # (p*p, H, query, key)
    return pattern[:, :, 2, :2].permute(1, 2, 0).reshape(model.n_heads, 2, grid.p, grid.p)


def _mean_ablate_head(z: torch.Tensor, h: int) -> torch.Tensor:
    """z (batch, 3, n_heads, d_head) with head h's z at "=" replaced by its mean over the batch."""
    z = z.clone()
    z[:, 2, h] = z[:, 2, h].mean(0)
    return z


def head_ablations(model, grid) -> list[dict]:
    """Mean-ablate each head's output at "=" (its z over all pairs replaced by its mean): loss and
    accuracy on all pairs. Only position 2 feeds the logits, so only it is ablated."""
    out = []
    with torch.no_grad():
        for h in range(model.n_heads):
            hooks = {"attn.hook_z": lambda z, h=h: _mean_ablate_head(z, h)}
            loss, acc = grid.loss_acc(model.run_with_hooks(grid.a, grid.b, hooks))
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
        resid = model.run_with_cache(grid.a, grid.b)[1]["hook_resid_mid"]  # (p*p, 3, d_model)
        at_eq = resid[rows, 2].double().reshape(basis.n, basis.n, -1)
        mean = at_eq.mean(dim=(0, 1))
        key = fourier.grid_key_part(at_eq, keys)
        rest = at_eq - mean - key
        total = float((rest + key).pow(2).sum())
        out = {"key_variance_share": float(key.pow(2).sum()) / total if total > 0 else 0.0}
        for name, part in (("keep_key", key), ("remove_key", rest)):
            value = (mean + part).reshape(len(rows), -1).to(resid.dtype)

            def replace(x, value=value):
                x = x.clone()
                x[rows, 2] = value
                return x

            logits = model.run_with_hooks(grid.a, grid.b, {"hook_resid_mid": replace})
            out[f"{name}_loss"], out[f"{name}_acc"] = grid.loss_acc(logits, in_basis=True)
    return out


def analyze(model, grid, keys: list[int]) -> dict:
    out = {"attention": attention_patterns(model, grid), "head_ablations": head_ablations(model, grid)}
    if grid.basis is not None:
        out["residual_key_directions"] = residual_key_directions(model, grid, keys)
    return out
