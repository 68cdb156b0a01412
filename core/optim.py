"""The update rule of both training engines: AdamW (torch.optim.AdamW's operations, in its order) and the
published ways to speed grokking up, each off by default and switched on by a Config field:

    --optimizer muon       Muon (Jordan et al. 2024) on the hidden weight matrices, AdamW on the rest
    --grad-filter ema|ma   Grokfast (Lee et al. 2024): add lamb x the slow part of the gradient (EMA or window mean)
    --orthograd            ⊥Grad (Prieto et al. 2025): remove the gradient's component along the weights
    --loss stablemax       StableMax (Prieto et al. 2025): a softmax whose probabilities cannot round to 0 or 1
    --weight-norm F        Omnigrok (Liu et al. 2023): after each step, rescale the weights to F x their initial norm

Every function here takes stacked tensors, a leading dimension of models that share the settings: train.py's one
model is a stack of one (MethodsOptimizer), the batched engine passes a slice of its stack. So both engines run
the same operations and reach the same weights.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

OPTIMIZERS = ("adamw", "muon")
GRAD_FILTERS = ("none", "ema", "ma")
LOSSES = ("cross_entropy", "stablemax")
# Muon's fixed settings, as its authors run it: Nesterov momentum 0.95 and five Newton-Schulz steps of the quintic
# whose coefficients push every singular value towards 1 fast (Jordan et al. 2024).
MUON_MOMENTUM = 0.95
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5
MUON_RMS = 0.2  # Muon's step scaled to this RMS x lr (Liu et al. 2025: AdamW's typical update RMS)
# AdamW under --optimizer muon, as Muon's authors keep them: the embeddings (lookup tables, not maps) and the
# unembedding (the classifier head). Measured at p = 113, seed 100: with W_U under Muon too, no 99 % test accuracy
# within 1,000 steps at lr 0.01-0.1; without it, 520 steps at lr 0.1 (docs/accelerators.md).
ADAMW_ONLY = ("W_E", "W_pos", "W_U")


@dataclass(frozen=True, order=True)
class Method:
    """One run's update rule: the Config fields it reads (Method.of(cfg)). Sortable, so the batched engine can
    put the models that share one next to each other."""
    lr: float
    weight_decay: float
    beta1: float
    beta2: float
    optimizer: str
    grad_filter: str
    filter_alpha: float
    filter_lamb: float
    filter_window: int
    orthograd: bool
    weight_norm: float

    @classmethod
    def of(cls, cfg) -> "Method":
        return cls(**{name: getattr(cfg, name) for name in cls.__dataclass_fields__})

    @property
    def plain_adamw(self) -> bool:
        """Nothing but AdamW: train.py then uses torch.optim.AdamW itself (and, on CUDA, one graph per step)."""
        return self.optimizer == "adamw" and self.grad_filter == "none" and not self.orthograd and not self.weight_norm


def uses_muon(name: str, w: torch.Tensor) -> bool:
    """Muon takes the hidden weight matrices (stacked w: 2-D and up per model; attention's per-head matrices each
    count as one), not the embeddings, the unembedding or the biases."""
    return w.dim() - 1 >= 2 and name not in ADAMW_ONLY


def new_state(ws: list[torch.Tensor], method: Method) -> dict[str, list]:
    """The optimizer state of stacked weights `ws`: AdamW's two moments per tensor (a Muon tensor keeps its momentum
    in exp_avg) and the gradient filter's memory. (--weight-norm also needs each model's initial norm: model_norms,
    passed to update_.)"""
    state = {"exp_avg": [torch.zeros_like(w) for w in ws], "exp_avg_sq": [torch.zeros_like(w) for w in ws]}
    if method.grad_filter == "ema":
        state["ema"] = [torch.zeros_like(w) for w in ws]
    if method.grad_filter == "ma":
        state["window"] = [w.new_zeros(w.shape[0], method.filter_window, *w.shape[1:]) for w in ws]
    return state


def update_(names, ws, grads, state, method: Method, step: int, init_norm: torch.Tensor | None = None) -> None:
    """One step (number `step`, from 1) of the update rule on stacked weights, in place: the gradient filter, ⊥Grad,
    then AdamW or Muon per tensor, then the weight-norm constraint (to method.weight_norm x init_norm, (models,))."""
    if method.grad_filter == "ema":
        grads = [ema_filter_(g, m, method.filter_alpha, method.filter_lamb, step) for g, m in zip(grads, state["ema"])]
    elif method.grad_filter == "ma":
        grads = [ma_filter_(g, buf, method.filter_lamb, step) for g, buf in zip(grads, state["window"])]
    if method.orthograd:
        grads = [orthogonal_grad(w, g) for w, g in zip(ws, grads)]
    for name, w, g, m, v in zip(names, ws, grads, state["exp_avg"], state["exp_avg_sq"]):
        if method.optimizer == "muon" and uses_muon(name, w):
            muon_(w, g, m, method.lr, method.weight_decay)
        else:
            adamw_(w, g, m, v, method.lr, method.weight_decay, method.beta1, method.beta2, step)
    if method.weight_norm:
        hold_norm_(ws, init_norm, method.weight_norm)


def adamw_(w, g, m, v, lr: float, wd: float, beta1: float, beta2: float, step: int) -> None:
    """torch.optim.AdamW's update with its Python-float scalars in its order: equal to it bit for bit."""
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    w.mul_(1 - lr * wd)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    w.addcdiv_(m, (v.sqrt() / math.sqrt(bias2)).add_(1e-8), value=-lr / bias1)


def ema_filter_(g, ema, alpha: float, lamb: float, step: int) -> torch.Tensor:
    """Grokfast-EMA: ema <- alpha ema + (1 - alpha) g (ema starts at the first gradient); returns g + lamb ema."""
    if step == 1:
        ema.copy_(g)
    else:
        ema.mul_(alpha).add_(g, alpha=1 - alpha)
    return g + lamb * ema


def ma_filter_(g, window, lamb: float, step: int) -> torch.Tensor:
    """Grokfast-MA: remember the last `window` gradients (window: (models, w, ...)); once w are there, returns
    g + lamb x their mean, before that g unchanged (the paper's warm-up)."""
    size = window.shape[1]
    window[:, (step - 1) % size] = g
    return g + lamb * window.mean(1) if step >= size else g


def orthogonal_grad(w, g, eps: float = 1e-30) -> torch.Tensor:
    """⊥Grad per model and tensor: g minus its projection on w, rescaled to the norm of g (so only the direction
    changes, as Prieto et al. apply it)."""
    wf, gf = w.flatten(1), g.flatten(1)
    along = (wf * gf).sum(1, keepdim=True) / ((wf * wf).sum(1, keepdim=True) + eps)
    ortho = gf - along * wf
    ortho = ortho * (gf.norm(dim=1, keepdim=True) / (ortho.norm(dim=1, keepdim=True) + eps))
    return ortho.view_as(g)


def newton_schulz(x: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """About U V^T of each matrix x = U S V^T over the last two dimensions: the matrix scaled to Frobenius norm 1,
    then `steps` quintic iterations X <- a X + (b A + c A^2) X with A = X X^T, each of which maps every singular
    value s to a s + b s^3 + c s^5 and keeps U and V. In float32 (Jordan et al. use bfloat16 on GPUs)."""
    a, b, c = NEWTON_SCHULZ
    tall = x.shape[-2] > x.shape[-1]
    x = x.mT if tall else x
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def muon_(w, g, momentum, lr: float, wd: float) -> None:
    """Muon's step on stacked matrices: Nesterov momentum, orthogonalized by newton_schulz, decoupled weight decay,
    the step scaled by 0.2 sqrt(max(rows, cols)) so its RMS matches AdamW's (Liu et al. 2025, "Muon is scalable"):
    AdamW's lr and weight decay carry over."""
    momentum.mul_(MUON_MOMENTUM).add_(g)
    direction = newton_schulz(g + MUON_MOMENTUM * momentum)
    w.mul_(1 - lr * wd)
    w.add_(direction, alpha=-lr * MUON_RMS * math.sqrt(max(w.shape[-2:])))


def model_norms(ws) -> torch.Tensor:
    """(models,) the L2 norm of all of each model's weights together, in float64."""
    return sum((w.detach().double() ** 2).flatten(1).sum(1) for w in ws).sqrt()


def hold_norm_(ws, init_norm: torch.Tensor, factor: float) -> None:
    """Omnigrok's constraint: rescale each model's weights to `factor` x its norm at initialization."""
    scale = (factor * init_norm / model_norms(ws)).float()
    for w in ws:
        w.mul_(scale.view(-1, *[1] * (w.dim() - 1)))


def stablemax_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row loss -log(s(z_y) / sum_c s(z_c)) with s(z) = z + 1 for z >= 0 and 1 / (1 - z) below (StableMax):
    s grows linearly, so no probability rounds to exactly 1 and the loss cannot reach 0 in floating point."""
    s = torch.where(logits >= 0, logits.clamp(min=0) + 1, 1 / (1 - logits.clamp(max=0)))
    return s.sum(-1).log() - s.gather(-1, y.unsqueeze(-1)).squeeze(-1).log()


def per_row_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The training loss of each row of (rows, p) logits against labels y (rows,)."""
    if loss == "stablemax":
        return stablemax_cross_entropy(logits, y)
    return F.cross_entropy(logits, y, reduction="none")


def training_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The mean training loss (softmax cross-entropy as F.cross_entropy computes it, or StableMax's)."""
    return F.cross_entropy(logits, y) if loss == "cross_entropy" else stablemax_cross_entropy(logits, y).mean()


class MethodsOptimizer(torch.optim.Optimizer):
    """train.py's optimizer when any method besides plain AdamW is on: update_ on the model's weights as a
    stack of one. Its state (moments, momentum, filter memory, initial norm, step) is in state_dict, so a run
    resumes where it stopped."""

    def __init__(self, model: torch.nn.Module, method: Method):
        names, params = zip(*model.named_parameters())
        stacked = [w.detach().unsqueeze(0) for w in params]
        # Plain data in the group (a checkpoint loads with weights_only=True); the norm as a Python float, which
        # load_state_dict leaves in float64
        super().__init__(params, {"method": asdict(method), "capturable": False, "step": 0,
                                  "init_norm": model_norms(stacked).tolist()})
        self.names = list(names)
        for key, tensors in new_state(stacked, method).items():
            for i, t in enumerate(tensors):
                self.state[params[i]][key] = t

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        group["step"] += 1
        params = group["params"]
        keys = {key for w in params for key in self.state[w]}
        state = {key: [self.state[w][key] for w in params if key in self.state[w]] for key in keys}
        update_(self.names, [w.unsqueeze(0) for w in params], [w.grad.unsqueeze(0) for w in params], state,
                Method(**group["method"]), group["step"],
                torch.tensor(group["init_norm"], dtype=torch.float64, device=params[0].device))
