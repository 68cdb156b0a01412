"""The training engine of one run: evaluation, the epoch (eager, or one CUDA graph), checkpoints, Ctrl-C
handling, the stop rule and the run's summary. train.py is its command line; the batched engine
(sweeps/batched.py) reuses its evaluation, history and summary, so both engines measure alike.

    from config import Config
    from core.training import train
    summary = train(Config(p=97))          # writes checkpoints/ and results/ as python train.py does
"""
import math
import signal
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from config import ARCH_NAMES, LOSS_DTYPES, Config, model_config
from core.checkpoint import CheckpointError, build_model, save_checkpoint
from core.optim import Method, MethodsOptimizer, training_loss
from core.utils import first_epoch_at, provenance, resolve_device, write_json
from core.wandb_log import RunLog, run_name
from dataset import SYMBOLS, make_data
from model import cross_entropy_per_row, sum_squared_weights
from plots import draw

EMBED_NOISE_SEED = 0x5EED_0E3B  # XORed into --seed: the embedding noise's stream, apart from the batch order's


class NonFiniteLoss(Exception):
    pass


class StoppedAtOnce(Exception):
    """A second Ctrl-C: training stopped mid-epoch. latest_epoch: the epoch of the last resumable
    checkpoint this session wrote (None if it wrote none)."""

    def __init__(self, latest_epoch):
        super().__init__(latest_epoch)
        self.latest_epoch = latest_epoch


def snapshot_epochs(max_epoch: int, every: int) -> set[int]:
    """Log-spaced epochs (0, 1, 2, 3, 5, 7, 11, 17, ...) below `every`, then every `every` epochs:
    memorization happens in the first few dozen epochs, grokking hundreds later."""
    epochs, e = {0}, 1.0
    while e < every:
        epochs.add(int(e))
        e *= 1.5
    return epochs | set(range(every, max_epoch + 1, every)) | {max_epoch}


# Logits per evaluation chunk, so evaluating any p fits in memory: on a GPU 2^24 (64 MB in float32); on a CPU
# 2^18 (1 MB), whose temporaries stay in cache and in the allocator's heap (bigger ones are mapped and unmapped
# each time: the default run trains 10-20 % faster with them, the same numbers)
EVAL_LOGITS, CPU_EVAL_LOGITS = 2**24, 2**18


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


def eval_rows(p: int, device: torch.device) -> int:
    return max(1, (CPU_EVAL_LOGITS if device.type == "cpu" else EVAL_LOGITS) // p)


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
        loss, correct[split], correct_true[split] = score_pairs(model, a, b, y, y_true, eval_rows(data.p, a.device))
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
                    embed_noise: float = 0.0, noise_generator: torch.Generator | None = None,
                    loss_kind: str = "cross_entropy") -> float:
    """One pass over the training split; returns the mean loss of its steps. The loss (cross_entropy or
    stablemax: core.optim.training_loss, and its gradient) is computed in loss_dtype; the model itself runs in
    float32. With embed_noise > 0 every step adds fresh N(0, embed_noise^2) noise (from noise_generator) to the
    embeddings."""
    batches = [data.subset("train")] if full_batch else data.train_batches(batch_size, generator)
    losses = []
    for a, b, y in batches:
        noise = draw_embed_noise(model, len(a), embed_noise, noise_generator, a.device) if embed_noise else None
        loss = training_loss(model(a, b, noise).to(loss_dtype), y, loss_kind)
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


def make_optimizer(model, cfg: Config, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW with the run's settings; capturable (CUDA only): its step count lives on the GPU, so a CUDA
    graph can replay its update (CapturedStep). With any accelerator on (--optimizer muon, --grad-filter, ...),
    core.optim's MethodsOptimizer instead (never capturable)."""
    method = Method.of(cfg)
    if not method.plain_adamw:
        return MethodsOptimizer(model, method)
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

    def __init__(self, model, optimizer, data, loss_dtype, loss_kind="cross_entropy"):
        self.model, self.optimizer, self.loss_dtype, self.loss_kind = model, optimizer, loss_dtype, loss_kind
        self.a, self.b, self.y = data.subset("train")
        self.graph, self.loss, self.eager_steps = None, None, 0

    def _step(self) -> torch.Tensor:
        loss = training_loss(self.model(self.a, self.b).to(self.loss_dtype), self.y, self.loss_kind)
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
        return CapturedStep(model, optimizer, data, loss_dtype, cfg.loss)
    return lambda: train_one_epoch(model, optimizer, data, full_batch, cfg.batch_size, batch_gen, loss_dtype,
                                   cfg.embed_noise, noise_gen, cfg.loss)


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


def train(cfg: Config, resume: dict | None = None, progress: bool = True, plot: bool = True) -> dict:
    """Train with `cfg` (or continue the checkpoint `resume`); returns the summary dict. plot=False leaves
    results/training_curves.png to the caller (training_curves_job). With cfg.wandb, also logs the run to that
    Weights & Biases project (core/wandb_log.py): the Config, each evaluation as it is recorded (a resumed run's
    earlier ones first, so the W&B run holds the whole history), the summary and the training curves."""
    if not cfg.wandb:
        return train_run(cfg, resume, progress, plot)
    log = RunLog(cfg.wandb, asdict(cfg), run_name(asdict(cfg)))
    try:
        summary = train_run(cfg, resume, progress, plot, on_history=log.history)
    except BaseException:  # diverged, stopped at once, or failed: the W&B run ends as failed
        log.finish(exit_code=1)
        raise
    if summary["stopped"] == "interrupted":
        log.finish(exit_code=130)
    else:
        log.finish(summary, {"training_curves": Path(cfg.results_dir) / "training_curves.png"} if plot else None)
    return summary


def train_run(cfg: Config, resume: dict | None = None, progress: bool = True, plot: bool = True,
              on_history=None) -> dict:
    """train() without the W&B run: on_history(history), if given, is called with the run's history once it is
    set up (empty, or a resumed run's) and after each evaluation is recorded in it."""
    on_history = on_history or (lambda history: None)
    device = resolve_device(cfg.device)
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed, cfg.label_noise).to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg)).to(device)
    full_batch = cfg.batch_size == 0 or cfg.batch_size >= len(data.train_idx)
    # CapturedStep's conditions
    graphed = device.type == "cuda" and full_batch and not cfg.embed_noise and Method.of(cfg).plain_adamw
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
    on_history(history)

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
    bar = tqdm(total=None if cfg.stop_after_grok else cfg.epochs, initial=start_epoch, unit="epoch",
               desc=bar_description(cfg), disable=not progress, dynamic_ncols=True)
    show_stop(bar, cfg, first_epoch_at(history, "test_acc"))
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
                on_history(history)
                if progress:
                    bar.write(format_log_line(epoch, metrics))
                bar.set_postfix(train=f"{metrics['train_acc']:.0%}", test=f"{metrics['test_acc']:.0%}")
                show_stop(bar, cfg, first_epoch_at(history, "test_acc"))
            if epoch in snapshots:
                save(ckpt_dir / "snapshots" / f"epoch_{epoch:05d}.pth", epoch)
            if epoch % cfg.checkpoint_every == 0:
                save(ckpt_dir / "latest.pth", epoch, resumable=True)
            stop = run_stop(cfg, history, snapshots, epoch)
            if stop:
                stopped = stop
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
        on_history(history)
    save(ckpt_dir / "model_final.pth", epoch)
    return summarize(cfg, history, epoch, stopped, wall_seconds, step_seconds / (epoch * steps_per_epoch), run_id,
                     int(data.corrupted_train.sum()), plot)


def show_stop(bar, cfg: Config, grokked: int | None) -> None:
    """The bar counts to the epoch the run will stop at: --epochs, or with the stop rule, no total until the run
    groks (the stop is not known before), then --stop-after-grok x the grokking epoch."""
    if grokked is None or not cfg.stop_after_grok or bar.total is not None:
        return
    bar.total = min(cfg.epochs, math.ceil(cfg.stop_after_grok * grokked))
    bar.set_description(bar_description(cfg, grokked, bar.total))


def bar_description(cfg: Config, grokked: int | None = None, stop: int | None = None) -> str:
    """The training bar's description: the stop rule, and once the run has grokked, the epoch it stops at."""
    if not cfg.stop_after_grok:
        return "training"
    cleanup = " or where the clean-up ends" if cfg.stop_at_cleanup_end else ""
    if grokked is None:
        return f"training (stops at {cfg.stop_after_grok:g} x the grokking epoch{cleanup})"
    return f"training (grokked at {grokked}, stops at {cfg.stop_after_grok:g} x {grokked} = {stop}{cleanup})"


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
              run_id: str | None, corrupted_pairs: int = 0, plot: bool = True) -> dict:
    """The run's summary (results/training_summary.json) and its training curves. memorization is
    measured against the labels trained on, grokking on the clean test set; with label noise the
    final train accuracy on the clean pairs and, on the corrupted pairs, against the true and the
    corrupted labels (None without corrupted pairs)."""
    summary = make_summary(cfg, history, epoch, stopped, wall_seconds, step_s, run_id, corrupted_pairs)
    results = Path(cfg.results_dir)
    write_json(results / "training_summary.json", summary)
    if plot:
        draw([training_curves_job(cfg, history, summary)])
    return summary


def training_curves_job(cfg: Config, history: dict, summary: dict) -> tuple[str, tuple, dict]:
    """results/training_curves.png as a plot job (plots.draw)."""
    title = (f"{ARCH_NAMES[cfg.arch]} on (a {SYMBOLS[cfg.op]} b) mod {cfg.p}: {cfg.train_frac:.0%} train, "
             f"lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, seed {cfg.seed}")
    return ("plot_training_curves", (history, summary["memorization_epoch"], summary["grokking_epoch"]),
            {"path": Path(cfg.results_dir) / "training_curves.png", "title": title})


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


def norm_stopped_falling(history: dict, snapshots: set[int], epoch: int) -> bool:
    """Whether `epoch` is a snapshot whose weight norm is no lower than the snapshot's before, both read from the
    evaluations in history (False where either was not evaluated), as progress.py's clean-up rule reads them."""
    if epoch not in snapshots or history["epoch"][-1:] != [epoch]:
        return False
    before = max((e for e in snapshots if e < epoch), default=None)
    if before not in history["epoch"]:
        return False
    return history["weight_norm"][-1] >= history["weight_norm"][history["epoch"].index(before)]


def stop_rule(cfg: Config, grokked: int | None, epoch: int, norm_flat: bool = False) -> str:
    """Why the run stops after this epoch ("": it goes on). Once it has grokked (at epoch `grokked`; None: not yet):
    at --stop-after-grok x its grokking epoch, or with --stop-at-cleanup-end at the first snapshot after grokking
    whose weight norm is no lower than the snapshot's before (norm_flat: norm_stopped_falling), where progress.py's
    clean-up phase ends."""
    if grokked is None:
        return ""
    if cfg.stop_after_grok and epoch >= cfg.stop_after_grok * grokked:
        return f"reached {cfg.stop_after_grok:g} x the grokking epoch"
    if cfg.stop_at_cleanup_end and norm_flat and epoch > grokked:
        return "the weight norm stopped falling after grokking (the clean-up ended)"
    return ""


def run_stop(cfg: Config, history: dict, snapshots: set[int], epoch: int) -> str:
    """stop_rule for a run with this history and these snapshot epochs, after `epoch` (train() asks it after
    every epoch; train.py asks it of a checkpoint to be resumed)."""
    return stop_rule(cfg, first_epoch_at(history, "test_acc"), epoch,
                     cfg.stop_at_cleanup_end and norm_stopped_falling(history, snapshots, epoch))
