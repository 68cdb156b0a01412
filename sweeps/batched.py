"""The batched engine: N models of one architecture trained side by side in one process.

    from sweeps.batched import train_batched
    results = train_batched([Config(seed=s, weight_decay=wd) for s in range(4) for wd in (0.3, 1.0)])

Every parameter gets a leading model dimension (torch.func.stack_module_state); the single-model
forward of model.py / core/transformer.py runs under torch.func.vmap, so the model code is the one
train.py uses. Each model keeps its own init seed, split (data_seed, train_frac: a padded index
list per model), label noise, embedding noise (its own generator, as in train.py), learning rate,
weight decay, betas, epoch budget and stop rule; AdamW is applied with per-model settings, in the
same order of operations as torch.optim.AdamW. Evaluation scores every model's own train and test
pairs with training.score_pairs (chunked to bound memory) and records per model exactly the history
train.py records; a model that reaches its stop rule, its epoch budget or a non-finite loss leaves
the stack.

What must be equal within one call (BATCH_KEY): the architecture and its widths, p, op, the loss
precision, the evaluation period and the device. Full batch only (batch_size 0): minibatch runs
go through training.train one at a time (sweep.py does that). No snapshots or resumable checkpoints:
an interrupted chunk is trained again; model_final.pth per model on request.
"""
import copy
import time
import uuid
from dataclasses import asdict

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from config import LOSS_DTYPES, Config, model_config, step_bytes
from core.checkpoint import build_model, save_checkpoint
from core.optim import Method, model_norms, new_state, per_row_loss, update_
from core.training import EMBED_NOISE_SEED, eval_rows, make_summary, new_history, record, score_pairs, stop_rule
from core.utils import ACCURACY_BAR, resolve_device
from dataset import make_data, table_size, train_size
from model import squared_norm

# Settings every model of one batch shares; the others may differ per model.
BATCH_KEY = ("arch", "p", "op", "d_embed", "d_hidden", "activation", "d_model", "n_heads", "d_mlp", "loss_dtype",
             "loss", "optimizer", "grad_filter", "filter_window", "batch_size", "eval_every", "device")
EVAL_BYTES = 2**30  # evaluation logits per chunk of pairs, all models together (train.py's chunk while it fits)


def batch_key(cfg: Config) -> tuple:
    return tuple(getattr(cfg, name) for name in BATCH_KEY)


def check_batchable(cfgs: list[Config]) -> None:
    if not cfgs:
        raise ValueError("no configurations to train")
    keys = {batch_key(c) for c in cfgs}
    if len(keys) > 1:
        differ = [n for n, *vals in zip(BATCH_KEY, *keys) if len(set(vals)) > 1]
        raise ValueError(f"one batch must share {', '.join(BATCH_KEY)}; these differ: {', '.join(differ)}")
    if cfgs[0].batch_size:
        raise ValueError("the batched engine trains full batch only (batch_size 0); use training.train for minibatches")
    if any(c.stop_at_cleanup_end for c in cfgs):
        raise ValueError("the batched engine keeps no snapshots, so it cannot stop where the clean-up ends; "
                         "use training.train for stop_at_cleanup_end")


class Stack:
    """The models still training: stacked parameters, AdamW state, per-model settings and data."""

    def __init__(self, cfgs: list[Config], device, compiled: bool = False):
        """compiled: the training step's forward (and so its backward) through torch.compile, which fuses the
        lookups, the add and the activation; the same values to float rounding, after a compilation."""
        # Rows sorted by update rule (core.optim.Method: AdamW's settings and the accelerators'), so the models
        # sharing one are a slice (see update); index[row] is the row's position in the caller's list.
        order = sorted(range(len(cfgs)), key=lambda i: Method.of(cfgs[i]))
        self.index = order
        cfgs = [cfgs[i] for i in order]
        models = []
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)  # as training.train: the same initial weights
            models.append(build_model(model_config(cfg)))
        self.skeleton = copy.deepcopy(models[0]).to("meta")
        params, _ = stack_module_state(models)
        self.names = list(params)
        self.params = [params[n].detach().to(device).requires_grad_() for n in self.names]
        self.methods = [Method.of(c) for c in cfgs]
        self.state = new_state(self.params, self.methods[0])  # the kinds of state are the same for all (BATCH_KEY)
        self.init_norm = model_norms(self.params)  # (N,) for --weight-norm
        self.step = 0

        datas = [make_data(c.p, c.op, c.train_frac, c.data_seed, c.label_noise) for c in cfgs]
        self.a, self.b, self.y = (getattr(datas[0], n).to(device) for n in ("a", "b", "y"))
        self.y_fit = torch.stack([d.y_fit for d in datas]).to(device)  # (N, n_pairs) labels trained on
        # Each split as (N, width) indices padded with 0, a mask of the real entries and their count.
        self.train_idx, self.pad, self.n_train = padded([d.train_idx for d in datas], device)
        # Test widths rounded up to 16 pairs: each model's logits then start where the CPU's matmul gives
        # the same last bits as train.py's (measured; an odd offset changed them)
        self.test_idx, _, self.n_test = padded([d.test_idx for d in datas], device, multiple=16)
        self.splits = dict(zip(order, ((d.train_idx, d.test_idx) for d in datas)))  # by caller position
        self.noisy = any(c.label_noise for c in cfgs)
        self.noise_scale = [c.embed_noise for c in cfgs]
        self.noise_gens = [torch.Generator().manual_seed(c.seed ^ EMBED_NOISE_SEED) for c in cfgs]
        self.train_logits = torch.compile(self.logits) if compiled else self.logits

    def __len__(self):
        return len(self.index)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the stacked models where the bool mask `rows` is True."""
        rows = rows.to(self.y.device)
        for group in self.state.values():
            group[:] = [t[rows] for t in group]
        self.params = [w.detach()[rows].requires_grad_() for w in self.params]
        self.init_norm = self.init_norm[rows.to(self.init_norm.device)]
        for name in ("train_idx", "pad", "n_train", "test_idx", "n_test", "y_fit"):
            setattr(self, name, getattr(self, name)[rows])
        kept = rows.cpu().nonzero().flatten().tolist()
        self.index = [self.index[i] for i in kept]
        self.methods = [self.methods[i] for i in kept]
        self.noise_scale = [self.noise_scale[i] for i in kept]
        self.noise_gens = [self.noise_gens[i] for i in kept]

    def logits(self, a, b, noise=None):
        """(N, batch, p): every model on its own (N, batch) inputs."""
        def one(ws, a, b, noise):
            return functional_call(self.skeleton, dict(zip(self.names, ws)), (a, b, noise))

        return vmap(one, in_dims=(0, 0, 0, None if noise is None else 0))(self.params, a, b, noise)

    def embed_noise(self, device):
        """(N, width, 2, d) per-model noise as training.draw_embed_noise draws it (n_train rows each), or None."""
        if not any(self.noise_scale):
            return None
        d = self.params[self.names.index("W_E")].shape[-1]
        noise = torch.zeros(len(self), self.train_idx.shape[1], 2, d)
        for i, (scale, gen) in enumerate(zip(self.noise_scale, self.noise_gens)):
            if scale:
                noise[i, :int(self.n_train[i])] = scale * torch.randn(int(self.n_train[i]), 2, d, generator=gen)
        return noise.to(device)

    def train_step(self, loss_dtype, loss_kind: str = "cross_entropy") -> torch.Tensor:
        """One full-batch step of every model (its own update rule); returns (N,) losses (a non-finite one: that
        model diverged; its weights are no longer finite and the caller removes it, the others are unaffected)."""
        idx = self.train_idx
        logits = self.train_logits(self.a[idx], self.b[idx], self.embed_noise(idx.device))  # (N, width, p)
        y = self.y_fit.gather(1, idx)
        ce = per_row_loss(logits.to(loss_dtype).flatten(0, 1), y.flatten(), loss_kind).view(idx.shape)
        losses = torch.where(self.pad, ce, 0).sum(1) / self.n_train  # the mean over each model's own split
        grads = torch.autograd.grad(losses.sum(), self.params)
        self.step += 1
        with torch.no_grad():
            self.update(grads)  # a diverged model's rows turn non-finite; it leaves the stack after this step
        return losses.detach()

    def update(self, grads) -> None:
        """core.optim.update_ (train.py's update rule: torch.optim.AdamW's operations, or the accelerators'),
        applied to each run of rows sharing one Method (the rows are sorted by it, so each run is a view): a
        model's weights here equal train.py's bit for bit while their gradients do."""
        for start, end, method in self.optimizer_groups():
            rows = slice(start, end)
            update_(self.names, [w[rows] for w in self.params], [g[rows] for g in grads],
                    {key: [t[rows] for t in ts] for key, ts in self.state.items()}, method, self.step,
                    self.init_norm[rows])

    def optimizer_groups(self):
        """(start, end, method) for each run of consecutive rows with the same update rule."""
        rows = self.methods
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i] != rows[start]:
                yield start, i, rows[start]
                start = i

    @torch.no_grad()
    def evaluate(self) -> list[dict]:
        """Per model: the metrics training.evaluate records (same keys, labels and chunks of pairs, so the same
        numbers while train.py's chunk (eval_rows) fits EVAL_BYTES for all models; beyond that, chunks
        of EVAL_BYTES). Reduced on the device and copied to the host once (a GPU waits once per evaluation,
        not once per model)."""
        n, p = len(self), self.skeleton.p
        rows = eval_rows(p, self.y.device)
        rows = rows if n * rows * p * 4 <= EVAL_BYTES else max(1, EVAL_BYTES // (4 * p * n))
        scores = {}
        for split, idx in (("train", self.train_idx), ("test", self.test_idx)):
            y = self.y_fit.gather(1, idx) if split == "train" else self.y[idx]
            y_true = self.y[idx] if split == "train" and self.noisy else None
            scores[split] = score_pairs(self.logits, self.a[idx], self.b[idx], y, y_true, rows)
        (loss, correct, correct_true), (test_loss, test_correct, _) = scores["train"], scores["test"]
        test_pad = torch.arange(self.test_idx.shape[1], device=self.y.device)[None] < self.n_test[:, None]
        corrupted = (self.y_fit.gather(1, self.train_idx) != self.y[self.train_idx]) & self.pad

        def mean(values, mask):  # per model over its own pairs, in float64 as training.evaluate
            return torch.where(mask, values.double(), 0).sum(1) / mask.sum(1).clamp(min=1)

        # On a CPU the losses and the weight norm are reduced per model as training.evaluate reduces them: a
        # masked or batched sum rounds the last bit differently (accuracies are exact either way). On a GPU
        # the batched forms, without a kernel per model.
        per_model = self.y.device.type == "cpu"

        def mean_loss(values, mask, counts):
            if not per_model:
                return mean(values, mask)
            return torch.stack([values[i, :n].mean() for i, n in enumerate(counts.tolist())])

        columns = {"train_loss": mean_loss(loss, self.pad, self.n_train),
                   "test_loss": mean_loss(test_loss, test_pad, self.n_test),
                   "train_acc": mean(correct, self.pad), "test_acc": mean(test_correct, test_pad)}
        if self.noisy:
            columns |= {"clean_train_acc": mean(correct, self.pad & ~corrupted),
                        "noisy_fit_acc": mean(correct, corrupted), "noisy_true_acc": mean(correct_true, corrupted),
                        "has_noise": corrupted.any(1).double()}
        if per_model:
            norms = [squared_norm(w[i] for w in self.params) for i in range(n)]
            columns["weight_norm"] = torch.tensor(norms, dtype=torch.float64)
        else:
            columns["weight_norm"] = sum((w.detach().double() ** 2).flatten(1).sum(1) for w in self.params)
        table = torch.stack(list(columns.values()), 1).cpu().tolist()
        out = []
        for values in table:
            m = dict(zip(columns, values))
            if not m.pop("has_noise", 0):  # as training.evaluate: label-noise keys only with corrupted pairs
                for key in ("clean_train_acc", "noisy_fit_acc", "noisy_true_acc"):
                    m.pop(key, None)
            out.append(m)
        return out

    def state_dict(self, row: int) -> dict:
        return {n: w[row].detach().cpu().clone() for n, w in zip(self.names, self.params)}


def padded(splits: list[torch.Tensor], device, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index lists of different lengths as (N, longest) indices padded with 0 (the width rounded up to a
    multiple), the mask of real entries, counts."""
    counts = torch.tensor([len(s) for s in splits])
    idx = torch.zeros(len(splits), -(-int(counts.max()) // multiple) * multiple, dtype=torch.long)
    for i, s in enumerate(splits):
        idx[i, :len(s)] = s
    pad = torch.arange(idx.shape[1])[None] < counts[:, None]
    return idx.to(device), pad.to(device), counts.to(device)


def train_batched(cfgs: list[Config], progress: bool = False, save_dirs: list | None = None,
                  compiled: bool = False) -> list[dict]:
    """Train every configuration in `cfgs` side by side; returns, in the same order, one dict per model:
    {"status": "done" | "diverged", "summary": training.make_summary's dict, "history": ...}. save_dirs[i],
    if given, receives model i's model_final.pth (train.py's checkpoint schema). compiled: see Stack."""
    check_batchable(cfgs)
    device = resolve_device(cfgs[0].device)
    stack = Stack(cfgs, device, compiled)
    loss_dtype = LOSS_DTYPES[cfgs[0].loss_dtype]
    eval_every = cfgs[0].eval_every
    histories = [new_history() for _ in cfgs]
    results: list[dict | None] = [None] * len(cfgs)
    start = time.perf_counter()
    step_seconds, model_steps, epoch = 0.0, 0, 0
    bar = tqdm(total=len(cfgs), desc="models", unit="model", disable=not progress, dynamic_ncols=True)

    def finish(row: int, status: str, stopped: str):
        i = stack.index[row]
        cfg, history = cfgs[i], histories[i]
        run_id = uuid.uuid4().hex[:12]
        summary = None
        if status == "done":
            summary = make_summary(cfg, history, epoch, stopped, time.perf_counter() - start,
                                   step_seconds / max(model_steps, 1), run_id,
                                   int((stack.y_fit[row] != stack.y)[stack.train_idx[row, :stack.n_train[row]]].sum()))
            summary |= {"engine": f"batched ({len(cfgs)} models)"}
            if save_dirs is not None:
                train_idx, test_idx = stack.splits[i]
                path = f"{save_dirs[i]}/model_final.pth"
                summary["checkpoint"] = path
                save_checkpoint(path, model=stack.state_dict(row), epoch=epoch, history=history,
                                config=asdict(cfg) | {"model": model_config(cfg)}, run_id=run_id,
                                train_idx=train_idx, test_idx=test_idx)
        results[i] = {"status": status, "summary": summary, "history": history}
        bar.update(1)

    grokked: dict[int, int] = {}  # model -> its grokking epoch, once it has one (the stop rule's input)
    while len(stack):
        tick = time.perf_counter()
        losses = stack.train_step(loss_dtype, cfgs[0].loss).cpu()  # on a GPU: the step's one wait for the device
        step_seconds += time.perf_counter() - tick
        model_steps += len(stack)
        epoch += 1
        cfg_rows = [cfgs[i] for i in stack.index]
        diverged = (~torch.isfinite(losses)).tolist()
        last = [epoch >= c.epochs for c in cfg_rows]
        metrics = None  # this epoch's evaluation of every model in the stack, once computed
        if epoch % eval_every == 0 or any(last):
            metrics = stack.evaluate()
            seconds = time.perf_counter() - start
            for row, (i, m) in enumerate(zip(stack.index, metrics)):
                if (epoch % eval_every == 0 or last[row]) and not diverged[row]:
                    record(histories[i], epoch, m | {"seconds": seconds})
                    if i not in grokked and m["test_acc"] >= ACCURACY_BAR:
                        grokked[i] = epoch
        leaving = []
        for row, (i, cfg) in enumerate(zip(stack.index, cfg_rows)):
            history, stopped = histories[i], stop_rule(cfg, grokked.get(i), epoch)
            if diverged[row]:
                finish(row, "diverged", "non-finite loss")
            elif stopped:
                if history["epoch"][-1:] != [epoch]:  # as training.train: stopped between evaluations, one more
                    metrics = metrics or stack.evaluate()
                    record(history, epoch, metrics[row] | {"seconds": time.perf_counter() - start})
                finish(row, "done", stopped)
            elif last[row]:
                finish(row, "done", "epochs")
            else:
                continue
            leaving.append(row)
        if leaving:
            stack.keep(torch.tensor([r not in leaving for r in range(len(stack))]))
    bar.close()
    return results


def estimate_bytes(cfg: Config, n_models: int) -> int:
    """About the peak memory of training n_models of cfg's shape together (config.step_bytes each) and
    evaluating them."""
    return n_models * step_bytes(cfg, train_size(table_size(cfg.p, cfg.op), cfg.train_frac)) + EVAL_BYTES
