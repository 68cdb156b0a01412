"""Speed figures, measured side by side in one run on this machine.

    python bench.py                 # ~1-2 min on a 2-core CPU
    python bench.py --seeds 0 1 2 --rounds 7
    python bench.py --arch transformer   # our transformer step against the all-positions forward
    python bench.py --sweep              # model-steps/s: one model (train.py) vs the batched engine, and
                                         # (CPU) processes vs threads: how sweep.py spreads runs

Prints: ms per full-batch training step of ToyMLP (per-token tables) and of a naive model
(nn.Embedding, concatenate, two nn.Linear); ms per epoch of the seed-style DataLoader loop
(batch 64, 80% train); the machine's fp32 matmul peak and the share of it our step reaches;
seconds to 99% test accuracy with train.py's defaults over several seeds. With --arch transformer:
ms per full-batch step of the transformer's forward (what the "=" position needs, from per-token
tables) and of its spelled-out all-positions forward (run_with_hooks: every position, every head,
as the paper's code computes it), then seconds to grok with the transformer's defaults.
With --sweep: model-steps per second (one full-batch step of one model, evaluation every eval_every
epochs included) of train.py's loop and of the batched engine at several batch sizes, side by side,
with each way of reading the token tables (--lookups index onehot) and, with --compile, its forward
through torch.compile too; on a CPU also the batched engine in one process per core (one thread each)
against one process with every thread.
"""
import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import model
from config import ARCH_DEFAULTS, ARCH_FLAGS, LOSS_DTYPES, Config, model_config
from core.checkpoint import build_model
from core.training import epoch_runner, evaluate, make_optimizer, train, train_one_epoch
from core.utils import provenance, resolve_device
from dataset import make_data
from model import ToyMLP
from sweeps.batched import Stack


class NaiveMLP(nn.Module):
    """The textbook implementation: embed both tokens, concatenate, two Linear layers."""

    def __init__(self, p, d_embed=128, d_hidden=256):
        super().__init__()
        self.embed = nn.Embedding(p, d_embed)
        self.hidden = nn.Linear(2 * d_embed, d_hidden)
        self.unembed = nn.Linear(d_hidden, p)

    def forward(self, a, b):
        x = torch.cat([self.embed(a), self.embed(b)], dim=-1)
        return self.unembed(F.relu(self.hidden(x)))


def training_step(forward, optimizer, a, b, y, loss_dtype=torch.float32) -> None:
    """One full-batch step through any forward function (a model, or a model's run_with_hooks)."""
    loss = F.cross_entropy(forward(a, b).to(loss_dtype), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    x, y = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / time_ms(lambda: x @ y, repeats) / 1e6


def step_gflop(cfg: Config, n_train: int) -> float:
    """FLOPs of one ToyMLP training step: the token tables (forward + backward, 3 matmuls' worth)
    and the unembed (forward, weight gradient, input gradient)."""
    tables = 3 * 2 * (2 * cfg.p * cfg.d_embed * cfg.d_hidden)
    unembed = 3 * 2 * n_train * cfg.d_hidden * cfg.p
    return (tables + unembed) / 1e9


def step_timings(cfg: Config, rounds: int, steps: int) -> dict[str, list[float]]:
    """Interleave the three loops round by round, so a busy moment hurts each about equally."""
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed)
    ours, naive = ToyMLP(cfg.p, cfg.d_embed, cfg.d_hidden), NaiveMLP(cfg.p, cfg.d_embed, cfg.d_hidden)
    opt_ours, opt_naive = make_optimizer(ours, cfg), make_optimizer(naive, cfg)
    a, b, y = data.subset("train")

    classic = make_data(cfg.p, cfg.op, 0.8, cfg.data_seed)
    model_classic = NaiveMLP(cfg.p, cfg.d_embed, cfg.d_hidden)
    opt_classic = torch.optim.AdamW(model_classic.parameters(), lr=1e-3, weight_decay=1e-2)
    loader = DataLoader(TensorDataset(*classic.subset("train")), batch_size=64, shuffle=True)

    def classic_epoch():
        for xa, xb, xy in loader:
            training_step(model_classic, opt_classic, xa, xb, xy)

    times = {"ours": [], "naive": [], "classic_epoch": []}
    for _ in range(rounds):
        times["ours"].append(time_ms(lambda: train_one_epoch(ours, opt_ours, data, True, 0, None), steps))
        times["naive"].append(time_ms(lambda: training_step(naive, opt_naive, a, b, y), steps))
        times["classic_epoch"].append(time_ms(classic_epoch, 1))
    return times


def transformer_step_timings(cfg: Config, rounds: int, steps: int) -> dict[str, list[float]]:
    """The same transformer weights trained as train.py does (its fast forward) and through
    run_with_hooks, interleaved round by round; both with the run's loss precision."""
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed)
    a, b, y = data.subset("train")
    loss_dtype = LOSS_DTYPES[cfg.loss_dtype]
    ours, spelled = build_model(model_config(cfg)), build_model(model_config(cfg))
    spelled.load_state_dict(ours.state_dict())
    opt_ours, opt_spelled = make_optimizer(ours, cfg), make_optimizer(spelled, cfg)
    times = {"ours": [], "all_positions": []}
    for _ in range(rounds):
        times["ours"].append(time_ms(lambda: train_one_epoch(ours, opt_ours, data, True, 0, None, loss_dtype), steps))
        times["all_positions"].append(
            time_ms(lambda: training_step(spelled.run_with_hooks, opt_spelled, a, b, y, loss_dtype), steps))
    return times


def seconds_to_grok(cfg: Config, seeds) -> list[float]:
    out = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            run = replace(cfg, seed=seed, stop_after_grok=1.0, checkpoint_dir=f"{tmp}/c", results_dir=f"{tmp}/r")
            summary = train(run, progress=False)
        out.append(summary["seconds_to_grok"])
        print(f"  seed {seed}: test accuracy >= 99% at epoch {summary['grokking_epoch']}, "
              f"{summary['seconds_to_grok']:.1f} s (including evaluations every {cfg.eval_every} epochs)")
    return out


def single_rate(cfg: Config, epochs: int, graph: bool = True) -> float:
    """Model-steps per second of train.py's loop: full-batch epochs, an evaluation every eval_every. On CUDA
    its step is a CUDA graph replay (training.CapturedStep), or with graph=False the eager step."""
    device = resolve_device(cfg.device)
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed).to(device)
    net = build_model(model_config(cfg)).to(device)
    optimizer = make_optimizer(net, cfg, capturable=graph and device.type == "cuda")
    run_epoch = epoch_runner(net, optimizer, data, cfg, True)

    def run(n):
        for epoch in range(1, n + 1):
            run_epoch()
            if epoch % cfg.eval_every == 0:
                evaluate(net, data)

    return _rate(run, epochs, 1, device)


def batched_rate(cfg: Config, n_models: int, epochs: int, threads: int = 0, compiled: bool = False) -> float:
    """Model-steps per second of the batched engine with n_models (seeds 0..n-1), evaluations included (with
    compiled, after the compilation, which the warm-up steps trigger)."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    stack = Stack([replace(cfg, seed=s) for s in range(n_models)], device, compiled)

    def run(n):
        for epoch in range(1, n + 1):
            stack.train_step(LOSS_DTYPES[cfg.loss_dtype])
            if epoch % cfg.eval_every == 0:
                stack.evaluate()

    return _rate(run, epochs, n_models, device)


def _rate(run, epochs: int, n_models: int, device) -> float:
    run(5)  # warm-up: allocations, kernel choices
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(epochs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_models * epochs / (time.perf_counter() - start)


def _pool_rate(args) -> float:
    return batched_rate(*args)


def bench_sweep(cfg: Config, models, epochs: int, lookups=model.LOOKUPS, compile_too: bool = False) -> int:
    info = provenance()
    device = resolve_device(cfg.device)
    cores = len(os.sched_getaffinity(0))
    print(f"torch {info['versions']['torch']}, {info['threads']} threads, {cores} cores, {info['machine']}, "
          f"device {device}; {cfg.arch} at p={cfg.p}, {cfg.train_frac:.0%} train, full batch, evaluation every "
          f"{cfg.eval_every} epochs included; {epochs} epochs per measurement")
    one = single_rate(cfg, epochs)
    print(f"one model, train.py's loop:          {one:8.1f} model-steps/s  ({1e3 / one:.3f} ms per step)")
    if device.type == "cuda":
        eager = single_rate(cfg, epochs, graph=False)
        print(f"one model, eager step (no CUDA graph): {eager:6.1f} model-steps/s  ({1e3 / eager:.3f} ms per step)")
    chosen = model.LOOKUP
    try:
        for n in models:
            for mode in lookups:  # model.LOOKUP: how the token tables' rows are read (side by side)
                model.LOOKUP = mode
                for compiled in (False, True) if compile_too else (False,):
                    start = time.perf_counter()
                    rate = batched_rate(cfg, n, max(epochs // n, 5) if device.type == "cpu" else epochs, compiled=compiled)
                    took = f", {time.perf_counter() - start:.0f} s with the compilation" if compiled else ""
                    print(f"batched engine, {n:4d} models, {mode:6s} lookup{', compiled' if compiled else ''}: "
                          f"{rate:8.1f} model-steps/s  ({rate / one:.2f}x{took})")
    finally:
        model.LOOKUP = chosen  # the caller's choice again (a notebook may have set it)
    if device.type == "cpu" and cores > 1:
        with multiprocessing.get_context("spawn").Pool(cores) as pool:
            for n in (1, 4):
                rates = pool.map(_pool_rate, [(cfg, n, max(epochs // n, 5), 1)] * cores)
                print(f"{cores} processes x 1 thread, {n} models each: {sum(rates):8.1f} model-steps/s (sum of "
                      f"{', '.join(f'{r:.1f}' for r in rates)})")
        print(f"1 process x {cores} threads, 1 model:     {batched_rate(cfg, 1, epochs, cores):8.1f} model-steps/s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark training speed against naive loops.")
    parser.add_argument("--arch", choices=ARCH_FLAGS, default="mlp", help="mlp (ToyMLP) or transformer")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for time-to-grok")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--sweep", action="store_true", help="model-steps/s: one model vs the batched engine")
    parser.add_argument("--models", type=int, nargs="+", default=None,
                        help="with --sweep: batch sizes (default 1 4 16 on a CPU, 1 16 256 1024 on a GPU)")
    parser.add_argument("--epochs", type=int, default=200, help="with --sweep: epochs per measurement")
    parser.add_argument("--p", type=int, default=113, help="with --sweep: the modulus")
    parser.add_argument("--lookups", nargs="+", choices=model.LOOKUPS, default=list(model.LOOKUPS),
                        help="with --sweep: the batched engine with each way of reading token-table rows (model.LOOKUP)")
    parser.add_argument("--compile", action="store_true",
                        help="with --sweep: also the batched engine with its forward through torch.compile")
    args = parser.parse_args(argv)
    cfg = Config(**({"arch": args.arch} | ARCH_DEFAULTS[args.arch]))
    if args.sweep:
        cfg = replace(cfg, p=args.p)
        gpu = resolve_device(cfg.device).type == "cuda"
        return bench_sweep(cfg, args.models or ([1, 16, 256, 1024] if gpu else [1, 4, 16]), args.epochs, args.lookups, args.compile)
    if args.arch == "transformer":
        return bench_transformer(cfg, args)
    info = provenance()
    print(f"torch {info['versions']['torch']}, {info['threads']} threads, {info['machine']}; "
          f"p={cfg.p}, {cfg.train_frac:.0%} train, d_embed {cfg.d_embed}, d_hidden {cfg.d_hidden}")
    peak = statistics.median(matmul_peak_gflops() for _ in range(3))
    times = step_timings(cfg, args.rounds, args.steps)
    ours, naive = statistics.median(times["ours"]), statistics.median(times["naive"])
    classic = statistics.median(times["classic_epoch"])
    n_train = len(make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed).train_idx)
    gflop = step_gflop(cfg, n_train)
    print(f"fp32 matmul peak (1024^3): {peak:.0f} GFLOP/s")
    print(f"full-batch step, ours (token tables):    {ours:6.2f} ms  (min {min(times['ours']):.2f}; "
          f"{gflop:.2f} GFLOP -> {gflop / ours * 1e3:.0f} GFLOP/s = {gflop / ours * 1e3 / peak:.0%} of peak; "
          f"floor at peak {gflop / peak * 1e3:.1f} ms)")
    print(f"full-batch step, naive (cat + Linear):   {naive:6.2f} ms  (min {min(times['naive']):.2f})")
    print(f"speed-up of our step over naive:         {naive / ours:6.2f}x")
    print(f"seed-style epoch (DataLoader, batch 64, 80% train): {classic:.0f} ms per epoch")
    report_seconds_to_grok(cfg, args.seeds)
    return 0


def bench_transformer(cfg: Config, args) -> int:
    info = provenance()
    net = build_model(model_config(cfg))
    print(f"torch {info['versions']['torch']}, {info['threads']} threads, {info['machine']}; p={cfg.p}, "
          f"{cfg.train_frac:.0%} train; transformer d_model {cfg.d_model}, {cfg.n_heads} heads, d_mlp {cfg.d_mlp}, "
          f"{net.num_params():,} parameters")
    times = transformer_step_timings(cfg, args.rounds, args.steps)
    ours, spelled = statistics.median(times["ours"]), statistics.median(times["all_positions"])
    print(f"full-batch step, ours ('=' only, token tables): {ours:7.2f} ms  (min {min(times['ours']):.2f})")
    print(f"full-batch step, all positions (run_with_hooks): {spelled:7.2f} ms  (min {min(times['all_positions']):.2f})")
    print(f"speed-up of our step over all positions:        {spelled / ours:7.2f}x")
    report_seconds_to_grok(cfg, args.seeds)
    return 0


def report_seconds_to_grok(cfg: Config, seeds) -> None:
    print(f"seconds to 99% test accuracy with train.py's defaults for --arch {cfg.arch}:")
    secs = seconds_to_grok(cfg, seeds)
    spread = statistics.stdev(secs) if len(secs) > 1 else 0.0
    print(f"time to grok: {statistics.mean(secs):.1f} ± {spread:.1f} s (median {statistics.median(secs):.1f}) "
          f"over seeds {seeds}")


if __name__ == "__main__":
    sys.exit(main())
