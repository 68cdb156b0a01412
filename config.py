"""Every setting of a run in one place: the Config dataclass (one field per train.py flag, with its help),
the presets, each architecture's flags and defaults, validation, and the argparse builder.

    from config import Config, validate
    cfg = Config(p=97, op="sub"); validate(cfg)          # what train.py --p 97 --op sub runs
    python train.py --help                               # the same fields as flags, grouped by topic

A Config is saved as plain data into every checkpoint and results file (dataclasses.asdict).
"""
import argparse
import math
from dataclasses import dataclass, field, fields

import torch

from core.checkpoint import CheckpointError, build_model, load_checkpoint
from core.optim import GRAD_FILTERS, LOSSES, OPTIMIZERS
from core.utils import available_bytes, resolve_device
from dataset import OPS, check_args, table_size, train_size
from model import ACTIVATIONS, activation_function


def _f(default, help, group, metavar=None):
    return field(default=default, metadata={"help": help, "group": group, "metavar": metavar})


@dataclass
class Config:
    # data
    p: int = _f(113, "modulus; any p >= 2 (a prime for op div)", "data")
    op: str = _f("add", f"operation: {', '.join(OPS)}", "data")
    train_frac: float = _f(0.3, "share of all p*p pairs used for training, in (0, 1)", "data")
    data_seed: int = _f(598, "seed of the train/test split (independent of --seed)", "data")
    # model
    arch: str = _f("mlp", "architecture: mlp (ToyMLP) or transformer (the 1-layer transformer of Nanda et al. 2023)",
                   "model")
    d_embed: int = _f(128, "mlp: embedding width per operand", "model")
    d_hidden: int = _f(256, "mlp: hidden neurons", "model")
    activation: str = _f("relu", f"the neurons' activation (both architectures): {', '.join(ACTIVATIONS)}", "model")
    d_model: int = _f(128, "transformer: residual stream width", "model")
    n_heads: int = _f(4, "transformer: attention heads (must divide --d-model)", "model")
    d_mlp: int = _f(512, "transformer: MLP neurons", "model")
    # optimisation: AdamW; weight decay is what makes the network grok (it removes memorization)
    lr: float = _f(3e-2, "AdamW learning rate (> 0)", "optimisation")
    weight_decay: float = _f(1.0, "AdamW decoupled weight decay (>= 0)", "optimisation")
    beta1: float = _f(0.9, "AdamW beta1, in [0, 1)", "optimisation")
    beta2: float = _f(0.98, "AdamW beta2, in [0, 1)", "optimisation")
    loss_dtype: str = _f("float32", "precision of the training loss: float32, or float64, which keeps the "
                                    "gradient of a tiny loss from being float32 rounding noise", "optimisation")
    batch_size: int = _f(0, "minibatch size; 0 = full batch (one step per epoch, the usual grokking regime)", "optimisation")
    epochs: int = _f(10000, "maximum number of epochs", "optimisation")
    stop_after_grok: float = _f(3.0, "stop at this multiple of the grokking epoch, so the clean-up phase "
                                     "is seen; 0 = always run all --epochs", "optimisation")
    stop_at_cleanup_end: bool = _f(False, "also stop at the first snapshot after grokking at which the weight norm "
                                          "no longer falls: where progress.py's clean-up phase ends", "optimisation")
    seed: int = _f(0, "seed of the model's initialisation, batch order and embedding noise", "optimisation")
    # accelerators: published ways to grok sooner (core/optim.py), each off by default
    optimizer: str = _f("adamw", "adamw, or muon: Muon on the hidden weight matrices (its step scaled to AdamW's "
                                 "RMS: the same lr and weight decay), AdamW on the embeddings, unembedding and biases",
                        "accelerators")
    grad_filter: str = _f("none", "Grokfast: none, ema or ma (add --filter-lamb x the gradient's exponential or "
                                  "moving average)", "accelerators")
    filter_alpha: float = _f(0.98, "Grokfast-EMA's decay, in [0, 1)", "accelerators")
    filter_lamb: float = _f(0.5, "Grokfast's amplification of the slow gradient, >= 0 (the paper's 2 to 5 did not "
                                 "reach 99 % test within 1,000 steps at the default lr)", "accelerators")
    filter_window: int = _f(10, "Grokfast-MA's window in steps, >= 1", "accelerators")
    orthograd: bool = _f(False, "⊥Grad: remove the gradient's component along the weights (norm kept)",
                         "accelerators")
    loss: str = _f("cross_entropy", "training loss: cross_entropy, or stablemax (StableMax cross-entropy); "
                                    "evaluations report softmax cross-entropy either way", "accelerators")
    weight_norm: float = _f(0.0, "Omnigrok: after each step rescale the weights to this multiple of their norm at "
                                 "initialization (> 0); 0 = off", "accelerators")
    # noise robustness: does the network still grok, and what becomes of the corrupted pairs?
    label_noise: float = _f(0.0, "share of the training labels replaced by a random wrong label, in [0, 1); "
                                 "seeded by --data-seed, the same for every --seed; test labels stay clean", "noise")
    embed_noise: float = _f(0.0, "std of Gaussian noise added to the token embeddings of a and b in training "
                                 "steps only (never in evaluation or analysis), >= 0", "noise")
    # bookkeeping
    device: str = _f("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps", "bookkeeping")
    eval_every: int = _f(5, "evaluate (and log one line) every N epochs", "bookkeeping")
    checkpoint_every: int = _f(500, "write the resumable checkpoints/latest.pth every N epochs", "bookkeeping")
    snapshot_every: int = _f(25, "model snapshot every N epochs (plus log-spaced ones before that)", "bookkeeping")
    checkpoint_dir: str = _f("checkpoints", "folder for checkpoints", "bookkeeping")
    results_dir: str = _f("results", "folder for plots and the summary JSON", "bookkeeping")
    wandb: str = _f("", "also log the run to this Weights & Biases project (config, every evaluation, summary, "
                        "training curves; WANDB_MODE=offline keeps it on this machine; needs pip install -r "
                        "requirements-interop.txt); empty = off", "bookkeeping", "PROJECT")


# Each architecture's own flags, and the defaults it brings (chosen by measurement, see the README);
# presets and explicit flags still win over them.
ARCH_FLAGS = {"mlp": ("d_embed", "d_hidden", "activation"), "transformer": ("d_model", "n_heads", "d_mlp", "activation")}
ARCH_DEFAULTS = {"mlp": {}, "transformer": {"lr": 1e-2, "weight_decay": 0.3, "beta2": 0.99, "loss_dtype": "float64",
                                            "snapshot_every": 50}}
LOSS_DTYPES = {"float32": torch.float32, "float64": torch.float64}
ARCH_NAMES = {"mlp": "ToyMLP", "transformer": "1-layer transformer"}
# Named presets: their values replace the defaults; flags given explicitly still win.
PRESETS = {
    "grok": {},
    # The recipe of most grokking write-ups. Measured: train 100% at epoch ~12 while test is ~48%,
    # test 99% near epoch ~106: gradual generalization, not a grokking jump (see README).
    "classic": {"train_frac": 0.8, "batch_size": 64, "lr": 1e-3, "weight_decay": 1e-2,
                "epochs": 150, "stop_after_grok": 0.0, "eval_every": 1, "snapshot_every": 10,
                "checkpoint_every": 10},
}
# Settings that may change when resuming; the rest define the run and come from the checkpoint.
RESUME_OVERRIDABLE = {"epochs", "stop_after_grok", "stop_at_cleanup_end", "device", "eval_every", "checkpoint_every",
                      "snapshot_every", "checkpoint_dir", "results_dir", "wandb"}


def validate(cfg: Config) -> None:
    """Raise ValueError with one readable sentence for any setting we cannot train with."""
    check_args(cfg.p, cfg.op, cfg.train_frac)
    if cfg.arch not in ARCH_FLAGS:
        raise ValueError(f"unknown --arch {cfg.arch!r}: choose one of {', '.join(ARCH_FLAGS)}")
    if cfg.loss_dtype not in LOSS_DTYPES:
        raise ValueError(f"unknown --loss-dtype {cfg.loss_dtype!r}: choose one of {', '.join(LOSS_DTYPES)}")
    activation_function(cfg.activation)  # raises ValueError naming the choices
    for name, choices in (("optimizer", OPTIMIZERS), ("grad_filter", GRAD_FILTERS), ("loss", LOSSES)):
        if getattr(cfg, name) not in choices:
            raise ValueError(f"unknown --{name.replace('_', '-')} {getattr(cfg, name)!r}: choose one of "
                             f"{', '.join(choices)}")
    checks = [
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be a positive number, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}"),
        (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "--beta1 and --beta2 must lie in [0, 1)"),
        (cfg.batch_size >= 0, f"--batch-size must be >= 0 (0 = full batch), got {cfg.batch_size}"),
        (cfg.d_embed >= 1 and cfg.d_hidden >= 1, "--d-embed and --d-hidden must be >= 1"),
        (cfg.d_model >= 1 and cfg.n_heads >= 1 and cfg.d_mlp >= 1, "--d-model, --n-heads and --d-mlp must be >= 1"),
        (cfg.d_model % max(cfg.n_heads, 1) == 0, f"--n-heads ({cfg.n_heads}) must divide --d-model ({cfg.d_model})"),
        (cfg.stop_after_grok >= 0, f"--stop-after-grok must be >= 0, got {cfg.stop_after_grok}"),
        (0 <= cfg.label_noise < 1, f"--label-noise must lie in [0, 1), got {cfg.label_noise}"),
        (cfg.embed_noise >= 0 and math.isfinite(cfg.embed_noise), f"--embed-noise must be >= 0, got {cfg.embed_noise}"),
        (0 <= cfg.filter_alpha < 1, f"--filter-alpha must lie in [0, 1), got {cfg.filter_alpha}"),
        (cfg.filter_lamb >= 0 and math.isfinite(cfg.filter_lamb), f"--filter-lamb must be >= 0, got {cfg.filter_lamb}"),
        (cfg.filter_window >= 1, f"--filter-window must be >= 1, got {cfg.filter_window}"),
        (cfg.weight_norm >= 0 and math.isfinite(cfg.weight_norm),
         f"--weight-norm must be > 0 (or 0 = off), got {cfg.weight_norm}"),
    ]
    for name in ("epochs", "eval_every", "checkpoint_every", "snapshot_every"):
        checks.append((getattr(cfg, name) >= 1, f"--{name.replace('_', '-')} must be >= 1"))
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    resolve_device(cfg.device)


def step_bytes(cfg: Config, rows: int) -> int:
    """About the memory one training step on `rows` pairs takes: per pair the logits (float32, their gradient
    and softmax; float64 copies with --loss-dtype float64) and the hidden activations (pre, post, gradient),
    plus the parameters with their gradient and AdamW's two moments."""
    width = cfg.d_hidden if cfg.arch == "mlp" else cfg.d_mlp + 2 * cfg.d_model
    per_logit = 12 + (16 if cfg.loss_dtype == "float64" else 0)
    n_params = sum(t.numel() for t in build_model(model_config(cfg)).parameters())
    return rows * (12 * width + per_logit * cfg.p) + 16 * n_params


def check_memory(cfg: Config) -> None:
    """Raise ValueError, suggesting a --batch-size that fits, if one training step would not fit in memory."""
    n_pairs = table_size(cfg.p, cfg.op)
    n_train = train_size(n_pairs, cfg.train_frac)
    rows = min(cfg.batch_size or n_train, n_train)
    table = 40 * n_pairs  # the data: a, b, y, y_fit and the split's indices
    need = step_bytes(cfg, rows) + table
    device = resolve_device(cfg.device)
    have = available_bytes(device)
    if need <= 0.8 * have:
        return
    fixed, per_row = step_bytes(cfg, 0) + table, step_bytes(cfg, 1) - step_bytes(cfg, 0)
    fits = 2 ** max(0, int(math.log2(max(1, (have // 4 - fixed) // per_row))))  # a quarter of what is available
    what = "a full batch" if rows == n_train else f"--batch-size {rows}"
    raise ValueError(f"{what} of {rows:,} training pairs at p = {cfg.p} needs about {need / 2**30:.1f} GB for one "
                     f"step, and {device} has {have / 2**30:.1f} GB available: train in minibatches, e.g. "
                     f"--batch-size {fits} (about {step_bytes(cfg, fits) / 2**30:.1f} GB per step)")


def model_config(cfg: Config) -> dict:
    """The plain dict checkpoint.build_model builds the run's model from (stored in every checkpoint)."""
    return {"arch": cfg.arch, "p": cfg.p} | {name: getattr(cfg, name) for name in ARCH_FLAGS[cfg.arch]}


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """argparse from Config: one flag per field, grouped, each with its help and default."""
    parser = argparse.ArgumentParser(
        description="Train ToyMLP (or the 1-layer transformer) on modular arithmetic and watch it grok.",
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default=argparse.SUPPRESS if suppress_defaults else "grok",
                        help="grok: fast textbook grokking (the defaults); classic: the usual write-up "
                             "recipe (80%% train, batch 64, lr 1e-3, wd 1e-2, 150 epochs)")
    parser.add_argument("--resume", metavar="PATH", default=None,
                        help="continue from a resumable checkpoint (checkpoints/latest.pth)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-evaluation log lines")
    groups = {}
    for f in fields(Config):
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        help = f.metadata["help"].replace("%", "%%")  # argparse formats help strings with %
        if f.name == "arch":
            help += "; with --arch transformer the defaults become " + ", ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in ARCH_DEFAULTS["transformer"].items())
        default = argparse.SUPPRESS if suppress_defaults else f.default
        if f.type is bool:  # a switch: --orthograd
            group.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", default=default, help=help)
        else:
            group.add_argument(f"--{f.name.replace('_', '-')}", type=f.type, default=default, help=help,
                               metavar=f.metadata["metavar"])
    return parser


def parse_bool(text: str) -> bool:
    """'true'/'1'/'yes'/'on' or 'false'/'0'/'no'/'off' (any case) as a bool; ValueError otherwise."""
    value = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
             "off": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


def config_from_args(argv) -> tuple[Config, dict | None, argparse.Namespace]:
    """Build the Config (preset < explicit flags; or the checkpoint's, when resuming)."""
    args = build_parser().parse_args(argv)
    explicit = vars(build_parser(suppress_defaults=True).parse_args(argv))
    names = {f.name for f in fields(Config)}
    given = {k: v for k, v in explicit.items() if k in names}
    if given.get("weight_norm", 1) <= 0:
        raise ValueError(f"--weight-norm must be > 0, got {given['weight_norm']} (leave it out for no constraint)")
    if args.resume:
        resume = load_checkpoint(args.resume)
        if "optimizer" not in resume:
            raise CheckpointError(f"{args.resume} is not resumable: use checkpoints/latest.pth")
        saved = {k: v for k, v in resume["config"].items() if k in names}
        fixed = sorted(set(given) - RESUME_OVERRIDABLE)
        if fixed:
            raise ValueError(f"--{fixed[0].replace('_', '-')} cannot change when resuming "
                             f"(only {', '.join(sorted(RESUME_OVERRIDABLE))} can)")
        return Config(**(saved | given)), resume, args
    arch = given.get("arch", Config.arch)
    if arch in ARCH_FLAGS:
        foreign = [k for flags in ARCH_FLAGS.values() for k in flags if k in given and k not in ARCH_FLAGS[arch]]
        if foreign:
            raise ValueError(f"--{foreign[0].replace('_', '-')} does not apply to --arch {arch} "
                             f"(its model flags: {', '.join('--' + k.replace('_', '-') for k in ARCH_FLAGS[arch])})")
    defaults = {k: getattr(args, k) for k in names} | ARCH_DEFAULTS.get(arch, {})
    return Config(**(defaults | PRESETS[args.preset] | given)), None, args


# Settings that sweep.py sets itself, and the flag that does it.
MANAGED = {"p": "--primes", "seed": "--seeds", "arch": "--arch", "checkpoint_dir": "--save-checkpoints",
           "results_dir": "nothing (each run writes its plots into a temporary folder)", "wandb": "--wandb"}


def parse_sets(items, allow=()) -> dict[str, list]:
    """['lr=0.01,0.03', 'weight_decay=1'] -> {'lr': [0.01, 0.03], 'weight_decay': [1.0]}: values parsed by the
    Config field's type, duplicates dropped. ValueError (one sentence) for an unknown name, a name sweep.py
    sets itself (unless in allow), a name given twice, an empty list or value, or a value of the wrong type."""
    types = {f.name: f.type for f in fields(Config)}
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not NAME=V1,V2,...")
        if name not in types:
            raise ValueError(f"unknown setting {name!r} in {item!r}: names are train.py's Config fields "
                             f"({', '.join(t for t in types if t not in MANAGED)})")
        if name in MANAGED and name not in allow:
            raise ValueError(f"{name} is set by {MANAGED[name]}, not by --set")
        if name in grid:
            raise ValueError(f"{name} is given twice: put all its values in one list, {name}=V1,V2,...")
        parsed = []
        for value in values.split(","):
            if not value.strip():
                raise ValueError(f"{item!r} has an empty value: write {name}=V1,V2,...")
            try:
                parsed.append((parse_bool if types[name] is bool else types[name])(value.strip()))
            except ValueError:
                raise ValueError(f"{name} takes {types[name].__name__} values, got {value.strip()!r}") from None
        grid[name] = list(dict.fromkeys(parsed))
    return grid
