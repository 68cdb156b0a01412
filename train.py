"""Train ToyMLP on (a op b) mod p and watch it grok: memorize first, generalize much later.

    python train.py                       # defaults: p=113, add, 30% train, full batch, groks in ~10 s
    python train.py --p 97 --op sub       # any flag: python train.py --help
    python train.py --preset classic      # the common write-up recipe (minibatch 64, 80% train)
    python train.py --label-noise 0.1     # noise robustness: 10% wrong training labels (or --embed-noise S)
    python train.py --resume checkpoints/latest.pth

Writes checkpoints/{model_final,latest}.pth, checkpoints/snapshots/epoch_*.pth,
results/training_curves.png and results/training_summary.json.
"""
import argparse
import math
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from dataset import OPS, SYMBOLS, check_args, make_data, table_size, train_size
from model import ACTIVATIONS, activation_function, cross_entropy_per_row, sum_squared_weights
from plots import plot_training_curves
from utils import available_bytes, check_output_dir, first_epoch_at, provenance, resolve_device, write_json


def _f(default, help, group):
    return field(default=default, metadata={"help": help, "group": group})


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
    seed: int = _f(0, "seed of the model's initialisation, batch order and embedding noise", "optimisation")
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


# Each architecture's own flags, and the defaults it brings (chosen by measurement, see the README);
# presets and explicit flags still win over them.
ARCH_FLAGS = {"mlp": ("d_embed", "d_hidden", "activation"), "transformer": ("d_model", "n_heads", "d_mlp", "activation")}
ARCH_DEFAULTS = {"mlp": {}, "transformer": {"lr": 1e-2, "weight_decay": 0.3, "beta2": 0.99, "loss_dtype": "float64",
                                            "snapshot_every": 50}}
LOSS_DTYPES = {"float32": torch.float32, "float64": torch.float64}
EMBED_NOISE_SEED = 0x5EED_0E3B  # XORed into --seed: the embedding noise's stream, apart from the batch order's
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
RESUME_OVERRIDABLE = {"epochs", "stop_after_grok", "device", "eval_every", "checkpoint_every",
                      "snapshot_every", "checkpoint_dir", "results_dir"}


class NonFiniteLoss(Exception):
    pass


class StoppedAtOnce(Exception):
    """A second Ctrl-C: training stopped mid-epoch. latest_epoch: the epoch of the last resumable
    checkpoint this session wrote (None if it wrote none)."""

    def __init__(self, latest_epoch):
        super().__init__(latest_epoch)
        self.latest_epoch = latest_epoch


def validate(cfg: Config) -> None:
    """Raise ValueError with one readable sentence for any setting we cannot train with."""
    check_args(cfg.p, cfg.op, cfg.train_frac)
    if cfg.arch not in ARCH_FLAGS:
        raise ValueError(f"unknown --arch {cfg.arch!r}: choose one of {', '.join(ARCH_FLAGS)}")
    if cfg.loss_dtype not in LOSS_DTYPES:
        raise ValueError(f"unknown --loss-dtype {cfg.loss_dtype!r}: choose one of {', '.join(LOSS_DTYPES)}")
    activation_function(cfg.activation)  # raises ValueError naming the choices
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


def snapshot_epochs(max_epoch: int, every: int) -> set[int]:
    """Log-spaced epochs (0, 1, 2, 3, 5, 7, 11, 17, ...) below `every`, then every `every` epochs:
    memorization happens in the first few dozen epochs, grokking hundreds later."""
    epochs, e = {0}, 1.0
    while e < every:
        epochs.add(int(e))
        e *= 1.5
    return epochs | set(range(every, max_epoch + 1, every)) | {max_epoch}


EVAL_LOGITS = 2**24  # logits per evaluation chunk (64 MB in float32), so evaluating any p fits in memory


@torch.no_grad()
def score_pairs(forward, a, b, y, y_true=None, rows: int = 0):
    """Per-pair loss (float64) and correctness of forward(a, b) against labels y, and correctness against
    y_true (or None), over the last dimension of a, b, y in chunks of `rows` pairs (0: one chunk)."""
    n = a.shape[-1]
    rows = rows or n
    parts = []
    for s in range(0, n, rows):
        logits = forward(a[..., s:s + rows], b[..., s:s + rows])
        loss, correct = cross_entropy_per_row(logits, y[..., s:s + rows])
        parts.append((loss, correct, None if y_true is None else cross_entropy_per_row(logits, y_true[..., s:s + rows])[1]))
    loss, correct, correct_true = (None if parts[0][i] is None else torch.cat([q[i] for q in parts], -1)
                                   for i in range(3))
    return loss, correct, correct_true


def eval_rows(p: int) -> int:
    return max(1, EVAL_LOGITS // p)


@torch.no_grad()
def evaluate(model, data) -> dict:
    """Loss and accuracy of each split against the labels trained on (no embedding noise), in chunks of
    pairs. With corrupted training labels also the train accuracy on the clean pairs (clean_train_acc) and,
    on the corrupted pairs, against their true labels (noisy_true_acc) and the corrupted ones (noisy_fit_acc)."""
    out, correct, correct_true = {}, {}, {}
    corrupted = data.corrupted_train
    for split in ("train", "test"):
        a, b, y = data.subset(split)
        y_true = data.subset(split, true_labels=True)[2] if split == "train" and corrupted.any() else None
        loss, correct[split], correct_true[split] = score_pairs(model, a, b, y, y_true, eval_rows(data.p))
        out[f"{split}_loss"] = loss.mean().item()
        out[f"{split}_acc"] = share(correct[split])
    if corrupted.any():
        out["clean_train_acc"] = share(correct["train"][~corrupted])
        out["noisy_fit_acc"] = share(correct["train"][corrupted])
        out["noisy_true_acc"] = share(correct_true["train"][corrupted])
    out["weight_norm"] = sum_squared_weights(model)
    return out


def share(flags: torch.Tensor) -> float:
    """The fraction of True flags, as a float."""
    return flags.double().mean().item()


def new_history() -> dict:
    """An empty run history; seconds: wall time since the run began (all sessions). The label-noise keys
    arrive with the first evaluation (record)."""
    return {k: [] for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "weight_norm", "seconds")}


def draw_embed_noise(model, n: int, scale: float, generator: torch.Generator, device) -> torch.Tensor:
    """(n, 2, embedding width) Gaussian noise of std `scale` for the a and b embeddings, drawn on the
    CPU from `generator` (so a resumed run, on any device, draws the same noise)."""
    return (scale * torch.randn(n, 2, model.W_E.shape[1], generator=generator)).to(device)


def train_one_epoch(model, optimizer, data, full_batch, batch_size, generator, loss_dtype=torch.float32,
                    embed_noise: float = 0.0, noise_generator: torch.Generator | None = None) -> float:
    """One pass over the training split; returns the mean loss of its steps. The loss (log-softmax
    and its gradient) is computed in loss_dtype; the model itself runs in float32. With embed_noise
    > 0 every step adds fresh N(0, embed_noise^2) noise (from noise_generator) to the embeddings."""
    batches = [data.subset("train")] if full_batch else data.train_batches(batch_size, generator)
    losses = []
    for a, b, y in batches:
        noise = draw_embed_noise(model, len(a), embed_noise, noise_generator, a.device) if embed_noise else None
        loss = F.cross_entropy(model(a, b, noise).to(loss_dtype), y)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean().item()


class _DeferredInterrupt:
    """Turns the first Ctrl-C into a flag checked between epochs, so the checkpoint written on
    interruption always holds a whole epoch; a second Ctrl-C stops at once (StoppedAtOnce)."""

    def __init__(self):
        self.requested = False
        self.latest_epoch = None  # of the last resumable checkpoint written, for StoppedAtOnce

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise StoppedAtOnce(self.latest_epoch)
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def make_optimizer(model, cfg: Config, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW with the run's settings; capturable (CUDA only): its step count lives on the GPU, so a CUDA
    graph can replay its update (CapturedStep)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=(cfg.beta1, cfg.beta2), capturable=capturable)


def load_optimizer_state(optimizer: torch.optim.AdamW, state: dict) -> None:
    """optimizer.load_state_dict, keeping this optimizer's own `capturable` (a checkpoint written by a CUDA
    graph run resumes on a CPU and the reverse) with each step count where that setting wants it."""
    capturable = optimizer.param_groups[0]["capturable"]
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["capturable"] = capturable
        for w in group["params"]:
            if "step" in optimizer.state.get(w, {}):
                step = optimizer.state[w]["step"]
                optimizer.state[w]["step"] = step.to(w.device if capturable else "cpu", torch.float32)


class CapturedStep:
    """train_one_epoch's full-batch step for CUDA: WARMUP steps run eagerly on a side stream (real steps of the
    run; CUDA graphs need their allocations and library handles made first), then one step is captured in a
    CUDA graph and every later call replays it: the same kernels on the same tensors, without Python's and
    the launcher's cost per kernel. The optimizer must be capturable. Not for minibatches or embedding noise
    (their inputs change every step). Returns the step's loss; a non-finite one raises NonFiniteLoss (after
    the update, unlike the eager loop: the run stops either way and nothing later is saved)."""
    WARMUP = 3

    def __init__(self, model, optimizer, data, loss_dtype):
        self.model, self.optimizer, self.loss_dtype = model, optimizer, loss_dtype
        self.a, self.b, self.y = data.subset("train")
        self.graph, self.loss, self.eager_steps = None, None, 0

    def _step(self) -> torch.Tensor:
        loss = F.cross_entropy(self.model(self.a, self.b).to(self.loss_dtype), self.y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self) -> float:
        if self.graph is None and self.eager_steps >= self.WARMUP:
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients it fills
            with torch.cuda.graph(self.graph):
                self.loss = self._step()
        if self.graph is not None:
            self.graph.replay()
            loss = self.loss
        else:
            side = torch.cuda.Stream(self.a.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.eager_steps += 1
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss became {value}")
        return value


def epoch_runner(model, optimizer, data, cfg: Config, full_batch: bool, batch_gen=None, noise_gen=None):
    """train()'s epoch as a function of nothing: a CapturedStep when the optimizer is capturable (train() makes
    it so on CUDA with full batches and no embedding noise), else train_one_epoch with the run's settings."""
    loss_dtype = LOSS_DTYPES[cfg.loss_dtype]
    if optimizer.param_groups[0]["capturable"]:
        return CapturedStep(model, optimizer, data, loss_dtype)
    return lambda: train_one_epoch(model, optimizer, data, full_batch, cfg.batch_size, batch_gen, loss_dtype,
                                   cfg.embed_noise, noise_gen)


def restore(resume: dict, data, model, optimizer, batch_gen, noise_gen) -> tuple[dict, int, float]:
    """Load a resumable checkpoint's state in place; returns (history, epoch, step seconds so far).
    Checkpoints from before --embed-noise have no noise generator state (and drew no noise)."""
    if not torch.equal(resume["train_idx"], data.train_idx.cpu()):
        raise CheckpointError("the checkpoint's train/test split differs from the one its config builds")
    model.load_state_dict(resume["model"], strict=True)
    load_optimizer_state(optimizer, resume["optimizer"])
    torch.set_rng_state(resume["rng"]["torch"])
    batch_gen.set_state(resume["rng"]["batches"])
    if "embed_noise" in resume["rng"]:
        noise_gen.set_state(resume["rng"]["embed_noise"])
    return resume["history"], resume["epoch"], resume["step_seconds"]


def train(cfg: Config, resume: dict | None = None, progress: bool = True) -> dict:
    """Train with `cfg` (or continue the checkpoint `resume`); returns the summary dict."""
    device = resolve_device(cfg.device)
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed, cfg.label_noise).to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg)).to(device)
    full_batch = cfg.batch_size == 0 or cfg.batch_size >= len(data.train_idx)
    graphed = device.type == "cuda" and full_batch and not cfg.embed_noise  # CapturedStep's conditions
    optimizer = make_optimizer(model, cfg, capturable=graphed)
    batch_gen = torch.Generator().manual_seed(cfg.seed)  # batch order only (minibatch mode)
    noise_gen = torch.Generator().manual_seed(cfg.seed ^ EMBED_NOISE_SEED)  # embedding noise only
    ckpt_dir = Path(cfg.checkpoint_dir)
    if resume is not None:
        history, start_epoch, step_seconds = restore(resume, data, model, optimizer, batch_gen, noise_gen)
        run_id = resume.get("run_id")
    else:
        run_id = uuid.uuid4().hex[:12]
        history = new_history()
        start_epoch, step_seconds = 0, 0.0
        for old in (ckpt_dir / "snapshots").glob("epoch_*.pth"):
            old.unlink()  # snapshots of an earlier run would mix with this one's

    run_epoch = epoch_runner(model, optimizer, data, cfg, full_batch, batch_gen, noise_gen)
    steps_per_epoch = 1 if full_batch else math.ceil(len(data.train_idx) / cfg.batch_size)
    snapshots = snapshot_epochs(cfg.epochs, cfg.snapshot_every)
    common = {"config": asdict(cfg) | {"model": model.config()}, "run_id": run_id,
              "train_idx": data.train_idx.cpu(), "test_idx": data.test_idx.cpu()}

    interrupt = _DeferredInterrupt()

    def save(path, epoch, resumable=False):
        extra = {}
        if resumable:
            extra = {"optimizer": optimizer.state_dict(), "step_seconds": step_seconds,
                     "rng": {"torch": torch.get_rng_state(), "batches": batch_gen.get_state(),
                             "embed_noise": noise_gen.get_state()}}
        save_checkpoint(path, model=model.state_dict(), epoch=epoch, history=history, **common, **extra)
        if resumable:
            interrupt.latest_epoch = epoch

    if start_epoch == 0:
        save(ckpt_dir / "snapshots" / "epoch_00000.pth", 0)
    wall_start = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)
    epoch, stopped = start_epoch, "epochs"
    bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="training", unit="epoch",
               disable=not progress, dynamic_ncols=True)
    with interrupt:
        while epoch < cfg.epochs:
            tick = time.perf_counter()
            run_epoch()
            step_seconds += time.perf_counter() - tick
            epoch += 1
            bar.update(1)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                metrics = evaluate(model, data) | {"seconds": time.perf_counter() - wall_start}
                record(history, epoch, metrics)
                if progress:
                    bar.write(format_log_line(epoch, metrics))
                bar.set_postfix(train=f"{metrics['train_acc']:.0%}", test=f"{metrics['test_acc']:.0%}")
            if epoch in snapshots:
                save(ckpt_dir / "snapshots" / f"epoch_{epoch:05d}.pth", epoch)
            if epoch % cfg.checkpoint_every == 0:
                save(ckpt_dir / "latest.pth", epoch, resumable=True)
            if reached_stop_rule(cfg, first_epoch_at(history, "test_acc"), epoch):
                stopped = f"reached {cfg.stop_after_grok:g} x the grokking epoch"
                break
            if interrupt.requested:
                stopped = "interrupted"
                break
    bar.close()
    wall_seconds = time.perf_counter() - wall_start
    save(ckpt_dir / "latest.pth", epoch, resumable=True)
    if stopped == "interrupted":  # history untouched, so a resumed run matches an uninterrupted one
        return {"stopped": stopped, "epoch": epoch}
    if epoch not in snapshots:  # the stop rule ended the run between scheduled snapshots
        save(ckpt_dir / "snapshots" / f"epoch_{epoch:05d}.pth", epoch)
    if history["epoch"][-1:] != [epoch]:  # stopped between evaluations
        record(history, epoch, evaluate(model, data) | {"seconds": wall_seconds})
    save(ckpt_dir / "model_final.pth", epoch)
    return summarize(cfg, history, epoch, stopped, wall_seconds, step_seconds / (epoch * steps_per_epoch), run_id,
                     int(data.corrupted_train.sum()))


def record(history: dict, epoch: int, metrics: dict) -> None:
    history["epoch"].append(epoch)
    for key, value in metrics.items():
        history.setdefault(key, []).append(value)  # the label-noise keys come with the first evaluation


def format_log_line(epoch: int, m: dict) -> str:
    return (f"epoch {epoch:6d} | train loss {m['train_loss']:.3e} acc {m['train_acc']:6.1%} | "
            f"test loss {m['test_loss']:.3e} acc {m['test_acc']:6.1%} | weight norm² {m['weight_norm']:9.1f}"
            + (f" | corrupted: true {m['noisy_true_acc']:6.1%} fit {m['noisy_fit_acc']:6.1%}"
               if "noisy_true_acc" in m else ""))


def summarize(cfg: Config, history: dict, epoch: int, stopped: str, wall_seconds: float, step_s: float,
              run_id: str | None, corrupted_pairs: int = 0) -> dict:
    """The run's summary (results/training_summary.json) and its training curves. memorization is
    measured against the labels trained on, grokking on the clean test set; with label noise the
    final train accuracy on the clean pairs and, on the corrupted pairs, against the true and the
    corrupted labels (None without corrupted pairs)."""
    summary = make_summary(cfg, history, epoch, stopped, wall_seconds, step_s, run_id, corrupted_pairs)
    results = Path(cfg.results_dir)
    write_json(results / "training_summary.json", summary)
    plot_training_curves(history, summary["memorization_epoch"], summary["grokking_epoch"],
                         results / "training_curves.png",
                         title=f"{ARCH_NAMES[cfg.arch]} on (a {SYMBOLS[cfg.op]} b) mod {cfg.p}: {cfg.train_frac:.0%} train, "
                               f"lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, seed {cfg.seed}")
    return summary


def make_summary(cfg: Config, history: dict, epoch: int, stopped: str, wall_seconds: float, step_s: float,
                 run_id: str | None, corrupted_pairs: int = 0) -> dict:
    """The summary dict of a finished run (summarize's, without writing anything)."""
    memorization, grokking = first_epoch_at(history, "train_acc"), first_epoch_at(history, "test_acc")
    summary = {
        "run_id": run_id, "config": asdict(cfg), "seed": cfg.seed, "data_seed": cfg.data_seed, **provenance(),
        "memorization_epoch": memorization, "grokking_epoch": grokking,
        "grokking_delay": grokking / memorization if grokking and memorization else None,
        "seconds_to_grok": history["seconds"][history["epoch"].index(grokking)] if grokking else None,
        "epochs_run": epoch, "stopped": stopped,
        "final_train_acc": history["train_acc"][-1], "final_test_acc": history["test_acc"][-1],
        "final_train_loss": history["train_loss"][-1], "final_test_loss": history["test_loss"][-1],
        "corrupted_pairs": corrupted_pairs,
        "clean_train_acc": history.get("clean_train_acc", history["train_acc"])[-1],
        "corrupted_true_acc": history["noisy_true_acc"][-1] if corrupted_pairs else None,
        "corrupted_fit_acc": history["noisy_fit_acc"][-1] if corrupted_pairs else None,
        "wall_seconds": round(wall_seconds, 2),  # training loop incl. evaluations, all sessions
        "ms_per_step": round(1000 * step_s, 3),
        "checkpoint": str(Path(cfg.checkpoint_dir) / "model_final.pth"),
    }
    return summary


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
        help = f.metadata["help"]
        if f.name == "arch":
            help += "; with --arch transformer the defaults become " + ", ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in ARCH_DEFAULTS["transformer"].items())
        group.add_argument(f"--{f.name.replace('_', '-')}", type=f.type,
                           default=argparse.SUPPRESS if suppress_defaults else f.default, help=help)
    return parser


def config_from_args(argv) -> tuple[Config, dict | None, argparse.Namespace]:
    """Build the Config (preset < explicit flags; or the checkpoint's, when resuming)."""
    args = build_parser().parse_args(argv)
    explicit = vars(build_parser(suppress_defaults=True).parse_args(argv))
    names = {f.name for f in fields(Config)}
    given = {k: v for k, v in explicit.items() if k in names}
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


def reached_stop_rule(cfg: Config, grokked: int | None, epoch: int) -> bool:
    """The stop rule: the run has grokked (at epoch `grokked`; None: not yet) and reached --stop-after-grok x
    its grokking epoch."""
    return bool(cfg.stop_after_grok) and grokked is not None and epoch >= cfg.stop_after_grok * grokked


def check_unfinished(resume: dict, cfg: Config, path) -> None:
    """Raise ValueError if resuming would train nothing: the run already reached --epochs or its
    stop rule (so resuming must not touch model_final.pth); say how to extend it."""
    epoch = resume["epoch"]
    extend = f"python train.py --resume {path} --stop-after-grok 0 --epochs {2 * epoch}"
    if epoch >= cfg.epochs:
        raise ValueError(f"the checkpoint is already at epoch {epoch}: to go on, pass a larger --epochs ({extend})")
    grokked = first_epoch_at(resume["history"], "test_acc")
    if reached_stop_rule(cfg, grokked, epoch):
        raise ValueError(f"the run is finished: it grokked at epoch {grokked} and stopped at epoch {epoch} "
                         f"({cfg.stop_after_grok:g} x that). To extend it: {extend}")


def main(argv=None) -> int:
    try:
        cfg, resume, args = config_from_args(argv)
        validate(cfg)
        check_memory(cfg)
        if resume is not None:
            check_unfinished(resume, cfg, args.resume)
        check_output_dir(cfg.checkpoint_dir, "--checkpoint-dir")
        check_output_dir(cfg.results_dir, "--results-dir")
    except (ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    latest = Path(cfg.checkpoint_dir) / "latest.pth"
    try:
        return train_and_report(cfg, resume, args.quiet)
    except StoppedAtOnce as err:
        print("\nerror: interrupted twice, stopped at once; " + (
            f"resume from epoch {err.latest_epoch} with: python train.py --resume {latest}"
            if err.latest_epoch is not None else "no resumable checkpoint was written in this session"),
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (setup, final plots)
        print("\nerror: interrupted outside the training loop, stopped at once", file=sys.stderr)
        return 130


def train_and_report(cfg: Config, resume: dict | None, quiet: bool) -> int:
    print("config: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()))
    print(f"device: {resolve_device(cfg.device)}, torch threads: {torch.get_num_threads()}")
    latest = Path(cfg.checkpoint_dir) / "latest.pth"
    try:
        summary = train(cfg, resume, progress=not quiet)
    except NonFiniteLoss as err:
        print(f"error: {err}; training stopped. The last good resumable checkpoint is "
              f"{latest} (if one was written); try a smaller --lr.", file=sys.stderr)
        return 1
    if summary["stopped"] == "interrupted":
        print(f"\ninterrupted at epoch {summary['epoch']}; saved {latest}. Resume with:\n"
              f"    python train.py --resume {latest}")
        return 130
    print(f"memorized (train acc >= 99%) at epoch {summary['memorization_epoch']}, "
          f"grokked (test acc >= 99%) at epoch {summary['grokking_epoch']}"
          + (f", {summary['grokking_delay']:.1f}x later" if summary["grokking_delay"] else ""))
    print(f"final: train acc {summary['final_train_acc']:.1%}, test acc {summary['final_test_acc']:.1%}, "
          f"test loss {summary['final_test_loss']:.2e}; {summary['epochs_run']} epochs in "
          f"{summary['wall_seconds']:.1f} s ({summary['ms_per_step']:.2f} ms/step)")
    if summary["corrupted_pairs"]:
        print(f"label noise: {summary['corrupted_pairs']} corrupted training pairs, predicted as their true label "
              f"{summary['corrupted_true_acc']:.1%}, as the corrupted label {summary['corrupted_fit_acc']:.1%}; "
              f"clean training pairs {summary['clean_train_acc']:.1%}")
    print(f"wrote {cfg.checkpoint_dir}/model_final.pth, {latest}, {cfg.checkpoint_dir}/snapshots/, "
          f"{cfg.results_dir}/training_curves.png, {cfg.results_dir}/training_summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
