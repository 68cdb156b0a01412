"""Systematic ablations: every component of a model zero- and mean-ablated, loss and accuracy for each.

One definition for every component: on each input, the component's value is replaced by 0 (zero
ablation) or by its mean over all p*p inputs (mean ablation), and the loss and accuracy on all pairs
of the data set are measured. Components:
- the a part and the b part of the embedding (ToyMLP: embed_a, embed_b; transformer: the token
  embedding at positions 0 and 1),
- each bias (ToyMLP: b_in, b_U; transformer: b_in, b_out),
- each key frequency and all non-key frequencies at once: the part of the number tokens' embedding
  in those frequencies (in the op's basis),
- transformer only: each attention head's output at "=" (its z), and the MLP's output at "=".
Some mean ablations change nothing by construction, and the table shows it: a bias is the same for
every input (its mean is itself), and a frequency k >= 1 averages to zero over the tokens (its mean
ablation is its zero ablation).

    component_ablations(model, grid, keys) -> [{"component", "zero_loss", "zero_acc", "mean_loss", "mean_acc"}]
"""
import torch

from analysis import fourier
from analysis.circuit import embedding_with


def replace_at(position: int | None, index=None, value: torch.Tensor | None = None):
    """A hook that replaces x[:, position] (the whole x if position is None), restricted to x[..., index]
    when index is given, by 0 (value None) or by the same part of `value`, one input's worth of x (the
    activation's mean over all inputs, say: activation_mean)."""
    def hook(x):
        x = x.clone()
        view = x if position is None else x[:, position]
        part = view if index is None else view[:, index]
        if value is None:
            part = torch.zeros_like(part)
        else:
            fill = value if position is None else value[position]
            part = (fill if index is None else fill[index]).to(part).expand_as(part)
        if index is None:
            view.copy_(part)
        else:
            view[:, index] = part
        return x
    return hook


def activation_mean(model, grid, hook: str) -> torch.Tensor:
    """The activation `hook` of the cache averaged over all p*p pairs, chunk by chunk (float64 sums)."""
    total = 0
    for pairs in grid.chunks():
        total = total + model.run_with_cache(grid.a[pairs], grid.b[pairs])[1][hook].double().sum(0)
    return total / grid.p**2


def hook_components(model) -> dict[str, tuple[str, int | None, int | None]]:
    """Components reached through a hook: name -> (hook name, position, head)."""
    if not hasattr(model, "W_Q"):
        return {"embedding, a part": ("embed_a", None, None), "embedding, b part": ("embed_b", None, None)}
    out = {"embedding, a part": ("hook_embed", 0, None), "embedding, b part": ("hook_embed", 1, None)}
    out |= {f"head {h}": ("attn.hook_z", 2, h) for h in range(model.n_heads)}
    return out | {"MLP output": ("hook_mlp_out", 2, None)}


def biases(model) -> list[str]:
    return [name for name in ("b_in", "b_U", "b_out") if hasattr(model, name)]


def frequency_cases(keys: list[int], basis) -> dict[str, list[int]]:
    cases = {f"frequency {k}": [k] for k in keys}
    return cases | {"non-key frequencies": [k for k in fourier.frequencies(basis.n) if k not in keys]}


def component_ablations(model, grid, keys: list[int]) -> list[dict]:
    """The table of this module's docstring, one row per component."""
    rows = []

    def measure(forward_for):  # forward_for(mode) -> a function (a, b) -> logits
        row = {}
        for mode in ("zero", "mean"):
            forward = forward_for(mode)
            row[f"{mode}_loss"], row[f"{mode}_acc"] = grid.score(lambda pairs: forward(grid.a[pairs], grid.b[pairs]))
        return row

    def with_parameter(name, value):
        return lambda a, b: torch.func.functional_call(model, {name: value}, (a, b))

    with torch.no_grad():
        means = {hook: activation_mean(model, grid, hook) for hook, _, _ in hook_components(model).values()}
        for name, (hook, position, head) in hook_components(model).items():
            rows.append({"component": name} | measure(lambda mode: lambda a, b: model.run_with_hooks(
                a, b, {hook: replace_at(position, head, None if mode == "zero" else means[hook])})))
        for name in biases(model):
            bias = getattr(model, name).detach()
            rows.append({"component": f"bias {name}"} | measure(
                lambda mode: with_parameter(name, torch.zeros_like(bias) if mode == "zero" else bias)))
        if grid.basis is not None:
            for name, freqs in frequency_cases(keys, grid.basis).items():
                rows.append({"component": name} | measure(
                    lambda mode: with_parameter("W_E", embedding_with(model, grid.basis, freqs, mode))))
    return rows
