"""TransformerLens, both ways: our transformer as a TransformerLens 4 model and back, and runs saved by
TransformerLens 3's grokking demo (demos/Grokking_Demo.ipynb) read as this lab's checkpoints.

    bridge = to_transformer_lens(model)        # a native TransformerBridge with the same logits and cache
    model = from_transformer_lens(bridge)      # and back
    python interpretability.py --checkpoint grokking_demo.pth   # a demo file opens wherever a checkpoint does

TransformerLens is an optional extra (requirements-interop.txt), imported only by the two bridge functions.
Reading a demo file needs no TransformerLens: the file is loaded with torch.load(weights_only=True) and an
allow-list (SAFE_GLOBALS) that maps the few foreign globals it holds to plain data: its pickled
HookedTransformerConfig becomes a dict of fields, numpy scalars become Python numbers. Nothing else runs.

The property-format state dict (HookedTransformer.state_dict(): "embed.W_E", "blocks.0.attn.W_Q", ...) is the
meeting point: TransformerLens 4's own convert_tl_checkpoint maps it to a bridge's keys.
    ours          property format                     shape
    W_E           embed.W_E                           (p + 1, d_model)
    W_pos         pos_embed.W_pos                     (3, d_model)
    W_Q, W_K, W_V blocks.0.attn.W_Q, W_K, W_V         (n_heads, d_model, d_head)
    W_O           blocks.0.attn.W_O                   (n_heads, d_head, d_model)
    W_in, b_in    blocks.0.mlp.W_in, b_in             (d_model, d_mlp), (d_mlp,)
    W_out, b_out  blocks.0.mlp.W_out, b_out           (d_mlp, d_model), (d_model,)
    W_U           unembed.W_U                         (d_model, p)
    (none)        attn.b_Q, b_K, b_V, b_O, unembed.b_U  must be zero: our transformer has no such biases
"""
import hashlib
import math

import numpy as np
import torch

from core.transformer import N_CTX, Transformer
from dataset import make_table
from model import ACTIVATIONS, cross_entropy_per_row, sum_squared_weights

RENAMES = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_Q": "blocks.0.attn.W_Q", "W_K": "blocks.0.attn.W_K",
           "W_V": "blocks.0.attn.W_V", "W_O": "blocks.0.attn.W_O", "W_in": "blocks.0.mlp.W_in",
           "b_in": "blocks.0.mlp.b_in", "W_out": "blocks.0.mlp.W_out", "b_out": "blocks.0.mlp.b_out",
           "W_U": "unembed.W_U"}
ZERO_BIASES = ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O", "unembed.b_U")
BUFFERS = (".mask", ".IGNORE")  # HookedTransformer's causal mask and its -inf sentinel: no weights
DEMO_KEYS = {"model", "config", "checkpoints", "checkpoint_epochs", "train_losses", "test_losses",
             "train_indices", "test_indices"}
# The demo notebook's settings (in Config's names); its file does not store the optimizer's.
DEMO_TRAINING = {"op": "add", "lr": 1e-3, "weight_decay": 1.0, "beta1": 0.9, "beta2": 0.98, "loss_dtype": "float64",
                 "batch_size": 0, "stop_after_grok": 0.0, "data_seed": 598}


class TLFormatError(ValueError):
    """A TransformerLens model or file that our transformer cannot represent (one sentence)."""


# ---------------------------------------------------------------- the allow-list for demo files

class TLConfigRecord:
    """Stands in for a pickled HookedTransformerConfig: keeps its fields as a plain dict."""

    def __setstate__(self, state):
        fields, _ = state if isinstance(state, tuple) else (state, None)
        self.fields = {k: v for k, v in fields.items() if isinstance(v, (bool, int, float, str, type(None)))}


class NumpyDtypeRecord:
    """Stands in for a pickled numpy.dtype: its name and byte order, for numpy_scalar."""

    def __init__(self, name, align=False, copy=True):
        self.name, self.byteorder = str(name), "="

    def __setstate__(self, state):
        self.byteorder = state[1] if isinstance(state, tuple) and len(state) > 1 else "="


def numpy_scalar(dtype: NumpyDtypeRecord, data: bytes = b""):
    """A pickled numpy scalar as a Python number (numeric dtypes only)."""
    kind = np.dtype(dtype.name)
    if kind.kind not in "biuf":
        raise TLFormatError(f"a numpy scalar of type {dtype.name} in the file: only numbers are read")
    return np.frombuffer(data, dtype=kind.newbyteorder(dtype.byteorder))[0].item()


SAFE_GLOBALS = [(TLConfigRecord, "transformer_lens.config.hooked_transformer_config.HookedTransformerConfig"),
                (TLConfigRecord, "transformer_lens.HookedTransformerConfig.HookedTransformerConfig"),
                (NumpyDtypeRecord, "numpy.dtype"),
                (numpy_scalar, "numpy._core.multiarray.scalar"), (numpy_scalar, "numpy.core.multiarray.scalar")]


# ---------------------------------------------------------------- property format <-> our transformer

def model_kwargs(cfg: dict) -> dict:
    """Our Transformer's arguments for a TransformerLens config (a dict of its fields), or TLFormatError
    naming what does not fit: more layers, LayerNorm, another vocabulary or context, other attention."""
    get = cfg.get
    p = get("d_vocab_out")
    problems = [f"{get('n_layers')} layers (ours has 1)" if get("n_layers") != 1 else "",
                f"{get('normalization_type')} normalization (ours has none)" if get("normalization_type") else "",
                f"vocabulary {get('d_vocab')} in, {p} out (ours: p + 1 in, p out)"
                if not p or get("d_vocab") != p + 1 else "",
                f"n_ctx {get('n_ctx')} (ours: 3, for a b =)" if get("n_ctx") != N_CTX else "",
                f"d_head {get('d_head')} x n_heads {get('n_heads')} != d_model {get('d_model')}"
                if get("d_head", 0) * get("n_heads", 0) != get("d_model") else "",
                f"activation {get('act_fn')!r} (ours: {', '.join(ACTIVATIONS)})"
                if get("act_fn") not in ACTIVATIONS else "",
                "attention only" if get("attn_only") else "", "a gated MLP" if get("gated_mlp") else "",
                f"{get('positional_embedding_type')} positions" if get("positional_embedding_type", "standard")
                != "standard" else "",
                "grouped key/value heads" if get("n_key_value_heads") not in (None, get("n_heads")) else "",
                "mixture of experts" if get("num_experts") else "", "a final RMS norm" if get("final_rms") else "",
                "attention scores not scaled by sqrt(d_head)" if not get("use_attn_scale", True) or not math.isclose(
                    get("attn_scale", math.sqrt(get("d_head") or 1)), math.sqrt(get("d_head") or 1)) else ""]
    problems = [x for x in problems if x]
    if problems:
        raise TLFormatError(f"this TransformerLens model does not fit our 1-layer transformer: {'; '.join(problems)}")
    return {"p": p, "d_model": get("d_model"), "n_heads": get("n_heads"), "d_mlp": get("d_mlp"),
            "activation": get("act_fn")}


def from_property_state(state: dict, cfg: dict) -> Transformer:
    """Our transformer from a property-format state dict and its TransformerLens config fields."""
    model = Transformer(**model_kwargs(cfg))
    state = {k: v for k, v in state.items() if not k.endswith(BUFFERS)}
    if any(".ln" in k for k in state):
        raise TLFormatError("the state dict has LayerNorm weights: our transformer has no LayerNorm")
    nonzero = [k for k in ZERO_BIASES if k in state and state[k].count_nonzero()]
    if nonzero:
        raise TLFormatError(f"non-zero biases where our transformer has none: {', '.join(nonzero)}")
    unknown = sorted(set(state) - set(RENAMES.values()) - set(ZERO_BIASES))
    missing = sorted(set(RENAMES.values()) - set(state))
    if unknown or missing:
        raise TLFormatError(f"the state dict does not fit: unknown {unknown or 'none'}, missing {missing or 'none'}")
    try:
        model.load_state_dict({ours: state[theirs].float() for ours, theirs in RENAMES.items()}, strict=True)
    except RuntimeError as err:
        raise TLFormatError(f"the state dict does not fit its config: {str(err).splitlines()[-1].strip()}") from None
    return model.eval()


def to_property_state(model: Transformer) -> dict:
    """Our transformer's weights in HookedTransformer's property format, zero biases where ours has none."""
    state = {theirs: getattr(model, ours).detach().clone() for ours, theirs in RENAMES.items()}
    H, dh = model.n_heads, model.d_head
    zeros = {"blocks.0.attn.b_Q": (H, dh), "blocks.0.attn.b_K": (H, dh), "blocks.0.attn.b_V": (H, dh),
             "blocks.0.attn.b_O": (model.d_model,), "unembed.b_U": (model.p,)}
    return state | {k: torch.zeros(shape) for k, shape in zeros.items()}


def tl_config(model: Transformer) -> dict:
    """TransformerLens config fields of our transformer."""
    return {"n_layers": 1, "d_model": model.d_model, "n_heads": model.n_heads, "d_head": model.d_head,
            "d_mlp": model.d_mlp, "act_fn": model.activation, "normalization_type": None,
            "d_vocab": model.p + 1, "d_vocab_out": model.p, "n_ctx": N_CTX, "positional_embedding_type": "standard"}


# ---------------------------------------------------------------- TransformerLens 4 (optional extra)

def _transformer_lens():
    try:
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
    except ImportError:
        raise ImportError("TransformerLens is not installed: pip install -r requirements-interop.txt") from None
    return TransformerBridge, TransformerBridgeConfig, convert_tl_checkpoint


def to_transformer_lens(model: Transformer):
    """Our transformer as a native TransformerLens 4 TransformerBridge (eval mode) with the same weights:
    tokens [a, b, p] give our logits at position 2 and TransformerLens's hook names in run_with_cache."""
    if not isinstance(model, Transformer):
        raise TLFormatError(f"only the transformer has a TransformerLens form, not {type(model).__name__}")
    TransformerBridge, TransformerBridgeConfig, convert = _transformer_lens()
    cfg = TransformerBridgeConfig(**tl_config(model), architecture="TransformerLensNative")
    bridge = TransformerBridge.boot_native(cfg)
    bridge.load_state_dict(convert(to_property_state(model), cfg), strict=True)
    return bridge.eval()


def from_transformer_lens(bridge) -> Transformer:
    """Our transformer from a native TransformerBridge (the inverse of TransformerLens's convert_tl_checkpoint
    for the weights our transformer has); TLFormatError where the bridge does not fit."""
    cfg = {k: getattr(bridge.cfg, k, None) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "act_fn",
                                                      "normalization_type", "d_vocab", "d_vocab_out", "n_ctx",
                                                      "positional_embedding_type", "attn_only", "gated_mlp",
                                                      "n_key_value_heads", "num_experts", "final_rms")}
    kwargs = model_kwargs(cfg)
    H, dh = kwargs["n_heads"], cfg["d_head"]
    same, transposed = (lambda t: t), (lambda t: t.T)  # noqa: E731
    heads_in = lambda w: w.reshape(H, dh, -1).transpose(1, 2)  # noqa: E731 ((H dh), d_model) -> (H, d_model, dh)
    per_head = lambda b: b.reshape(H, dh)  # noqa: E731
    bridge_keys = {"embed.weight": ("embed.W_E", same), "pos_embed.weight": ("pos_embed.W_pos", same),
                   "blocks.0.attn.q.weight": ("blocks.0.attn.W_Q", heads_in),
                   "blocks.0.attn.k.weight": ("blocks.0.attn.W_K", heads_in),
                   "blocks.0.attn.v.weight": ("blocks.0.attn.W_V", heads_in),
                   "blocks.0.attn.o.weight": ("blocks.0.attn.W_O", lambda w: w.T.reshape(H, dh, -1)),
                   "blocks.0.attn.q.bias": ("blocks.0.attn.b_Q", per_head),
                   "blocks.0.attn.k.bias": ("blocks.0.attn.b_K", per_head),
                   "blocks.0.attn.v.bias": ("blocks.0.attn.b_V", per_head),
                   "blocks.0.attn.o.bias": ("blocks.0.attn.b_O", same),
                   "blocks.0.mlp.in.weight": ("blocks.0.mlp.W_in", transposed),
                   "blocks.0.mlp.in.bias": ("blocks.0.mlp.b_in", same),
                   "blocks.0.mlp.out.weight": ("blocks.0.mlp.W_out", transposed),
                   "blocks.0.mlp.out.bias": ("blocks.0.mlp.b_out", same),
                   "unembed.weight": ("unembed.W_U", transposed), "unembed.bias": ("unembed.b_U", same)}
    state = bridge.state_dict()  # detached tensors
    unknown = sorted(set(state) - set(bridge_keys))
    if unknown:
        raise TLFormatError(f"the bridge has weights our transformer lacks: {', '.join(unknown)}")
    return from_property_state({bridge_keys[k][0]: bridge_keys[k][1](v) for k, v in state.items()}, cfg)


# ---------------------------------------------------------------- TransformerLens 3 grokking-demo files

def is_demo_file(obj) -> bool:
    return isinstance(obj, dict) and DEMO_KEYS <= set(obj) and isinstance(obj["config"], TLConfigRecord)


def measure(model: Transformer, a, b, y, splits: dict) -> dict:
    """Loss (float64) and accuracy of each split (name -> indices), and the weight norm: train.py's evaluation."""
    with torch.no_grad():
        loss, correct = cross_entropy_per_row(model(a, b), y)
    out = {}
    for name, idx in splits.items():
        out[f"{name}_loss"], out[f"{name}_acc"] = loss[idx].mean().item(), correct[idx].double().mean().item()
    return out | {"weight_norm": sum_squared_weights(model)}


def demo_run(obj: dict, checkpoint_format: str) -> dict:
    """A demo file (as torch.load returns it with SAFE_GLOBALS) as this lab's final checkpoint, with its
    snapshots under "snapshots" (a list of checkpoints, by epoch). The demo records losses only: the history is
    measured here on its snapshots (train and test loss and accuracy on its split, weight norm), one entry per
    snapshot. Epoch = optimizer steps taken: the demo's checkpoint_epochs count from 0, so its entry e is
    epoch e + 1."""
    fields = obj["config"].fields
    model = from_property_state(obj["model"], fields)
    p = model.p
    train_idx, test_idx = obj["train_indices"].sort().values, obj["test_indices"].sort().values
    if len(train_idx) + len(test_idx) != p * p or torch.cat([train_idx, test_idx]).unique().numel() != p * p:
        raise TLFormatError(f"its train and test indices are not a split of the {p * p} pairs (a, b)")
    a, b, y = make_table(p, "add")  # a-major, as the demo's pairs
    splits = {"train": train_idx, "test": test_idx}
    epochs = [int(e) + 1 for e in obj["checkpoint_epochs"]]
    final_epoch = len(obj["train_losses"])
    digest = hashlib.sha256(train_idx.numpy().tobytes() + obj["model"]["embed.W_E"].numpy().tobytes())
    config = {"p": p, "train_frac": len(train_idx) / p ** 2, "arch": "transformer", **DEMO_TRAINING,
              "epochs": final_epoch, "seed": int(fields.get("seed") or 0), "label_noise": 0.0, "embed_noise": 0.0,
              **{k: v for k, v in model.config().items() if k not in ("arch", "p")}, "model": model.config(),
              "imported_from": "TransformerLens grokking demo (Grokking_Demo.ipynb); lr, weight decay and betas "
                               "are the notebook's values, which its file does not store"}
    common = {"format": checkpoint_format, "run_id": "tl-demo-" + digest.hexdigest()[:12], "config": config,
              "train_idx": train_idx, "test_idx": test_idx}
    history: dict[str, list] = {}
    evaluated = [(epoch, from_property_state(state, fields))
                 for epoch, state in sorted(zip(epochs, obj["checkpoints"]), key=lambda pair: pair[0])]
    snapshots = [common | {"model": snapshot.state_dict(), "epoch": epoch} for epoch, snapshot in evaluated]
    if final_epoch not in epochs:
        evaluated.append((final_epoch, model))
    for epoch, snapshot in evaluated:
        for key, value in ({"epoch": epoch} | measure(snapshot, a, b, y, splits)).items():
            history.setdefault(key, []).append(value)
    return common | {"model": model.state_dict(), "epoch": final_epoch, "history": history, "snapshots": snapshots}
