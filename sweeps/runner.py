"""How sweep.py trains its grid: the runs cut into chunks, each chunk trained by one engine, the chunks spread
over local processes or a Ray cluster. Every chunk returns its database records (database.COLUMNS), which
sweep.py stores at once, so an interrupted sweep loses at most the chunks in flight.

Engines: "batched" (batched.train_batched: the chunk's models side by side in one process; full batch, no
snapshots) and "single" (training.train, one run after another; what --analyze and minibatch runs use, since
the progress measures replay a run's snapshots).
Backends: "local" (in this process, or a pool of --workers processes with --threads each) and "ray" (one Ray
task per chunk, one GPU per task where the cluster has GPUs).
"""
import importlib.util
import multiprocessing
import os
import signal
import socket
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch

from analysis.progress_measures import replay
from analysis.summary import analyze_checkpoint
from config import Config
from core.checkpoint import load_checkpoint
from core.training import NonFiniteLoss, StoppedAtOnce, train
from core.utils import provenance, resolve_device
from sweeps import database
from sweeps.batched import batch_key, estimate_bytes, train_batched
from sweeps.regimes import regime_of_row

ENGINES = ("batched", "single")
BACKENDS = ("local", "ray")
SUMMARY_KEYS = ("memorization_epoch", "grokking_epoch", "grokking_delay", "seconds_to_grok", "epochs_run",
                "final_train_acc", "final_test_acc", "final_test_loss", "wall_seconds", "ms_per_step",
                "corrupted_pairs", "clean_train_acc", "corrupted_true_acc", "corrupted_fit_acc")
CPU_CHUNK = 1  # models per chunk on a CPU: bench.py --sweep measured 1 and 4 equally fast; 1 loses least
GPU_CHUNK = 1024  # at most, on a GPU (fewer when estimate_bytes says they would not fit)


class Interrupted(Exception):
    """Ctrl-C during a run: the runs before it are stored, that one is not."""


class SweepError(Exception):
    """A setting of the sweep that cannot work (one sentence); nothing was trained."""


def engine_for(cfg: Config, engine: str, analyze: bool) -> str:
    """The batched engine where it can: not with --analyze (progress measures need snapshots), minibatches or the
    clean-up stop (it reads the snapshots' weight norms)."""
    return "single" if engine == "single" or analyze or cfg.batch_size or cfg.stop_at_cleanup_end else "batched"


def default_chunk(cfg: Config) -> int:
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        return CPU_CHUNK
    free = torch.cuda.mem_get_info(device)[0]
    n = GPU_CHUNK
    while n > 1 and estimate_bytes(cfg, n) > 0.8 * free:
        n //= 2
    return n


def plan_chunks(configs: list[Config], engine: str = "batched", chunk: int = 0,
                analyze: bool = False) -> list[tuple[str, list[Config]]]:
    """(engine, configs) per chunk: single-engine runs one each; batched runs grouped by what one batch must
    share (batched.BATCH_KEY) and by train fraction (equal split sizes keep every model's result equal to
    train.py's bit for bit), then cut into chunks of `chunk` models (0: default_chunk)."""
    chunks, groups = [], {}
    for cfg in configs:
        if engine_for(cfg, engine, analyze) == "single":
            chunks.append(("single", [cfg]))
        else:
            groups.setdefault(batch_key(cfg) + (cfg.train_frac,), []).append(cfg)
    for group in groups.values():
        size = chunk or default_chunk(group[0])
        chunks += [("batched", group[i:i + size]) for i in range(0, len(group), size)]
    return chunks


def train_chunk(engine: str, cfgs: list[Config], analyze: bool = False, save_checkpoints=None,
                commit: str | None = None) -> list[dict]:
    """Train one chunk; returns one database record per configuration, in order."""
    if engine == "single":
        return [run_one(cfg, analyze, save_checkpoints, commit) for cfg in cfgs]
    dirs = [Path(save_checkpoints) / database.config_hash(c) for c in cfgs] if save_checkpoints else None
    results = train_batched(cfgs, save_dirs=dirs)
    records = []
    for i, (cfg, r) in enumerate(zip(cfgs, results)):
        done = r["status"] == "done"
        row = _row(cfg, r["summary"] if done else None)
        records.append(make_record(cfg, r["status"], row, r["history"] if done else None,
                                   str(dirs[i]) if dirs and done else None, commit,
                                   f"batched.train_batched, {len(cfgs)} models side by side"))
    return records


def run_one(cfg: Config, analyze: bool = False, save_checkpoints=None, commit: str | None = None) -> dict:
    """Train one configuration with training.train (and analyse it); returns its database record.
    Raises Interrupted on Ctrl-C."""
    h = database.config_hash(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(save_checkpoints) / h if save_checkpoints else Path(tmp) / "checkpoints"
        cfg = replace(cfg, checkpoint_dir=str(ckpt), results_dir=f"{tmp}/results")
        history, summary = None, None
        try:
            summary = train(replace(cfg, wandb=""), progress=False)  # sweep.py logs the stored record itself
        except NonFiniteLoss:
            status = "diverged"
        except StoppedAtOnce:
            raise Interrupted from None
        else:
            if summary["stopped"] == "interrupted":
                raise Interrupted
            status = "done"
            history = load_checkpoint(ckpt / "model_final.pth")["history"]
        row = _row(cfg, summary)
        if analyze and status == "done":
            row |= analysis_row(cfg)
    return make_record(cfg, status, row, history, str(ckpt) if save_checkpoints and status == "done" else None,
                       commit, "core.training.train, one run at a time", analyzed=analyze and status == "done")


def _row(cfg: Config, summary: dict | None) -> dict:
    if summary is None:
        return {"p": cfg.p, "seed": cfg.seed, "diverged": True}
    return {k: summary[k] for k in SUMMARY_KEYS} | {"p": cfg.p, "seed": cfg.seed}


def make_record(cfg: Config, status: str, row: dict, history: dict | None, checkpoint: str | None,
                commit: str | None, engine: str, analyzed: bool = False) -> dict:
    prov = provenance() | {"git_commit": commit, "device": str(resolve_device(cfg.device)), "engine": engine}
    return {"config_hash": database.config_hash(cfg), "config_key": database.config_key(cfg), "config": asdict(cfg),
            "status": status, "regime": regime_of_row(row), "analyzed": int(analyzed), "summary": row,
            "history": history, "checkpoint": checkpoint, "created": prov["created"], "provenance": prov}


def analysis_row(cfg: Config) -> dict:
    """The --analyze fields of a run's row: the analysis of its final model and its snapshots' progress
    measures (nothing written: the numbers go into the database)."""
    summary = analyze_checkpoint(f"{cfg.checkpoint_dir}/model_final.pth")["summary"]
    progress = replay(cfg.checkpoint_dir, progress=False)
    if summary["basis"] is None:  # no Fourier analysis (mul or div mod a composite): only what needs none
        return {"basis": None, "circuit_size": summary["circuit_size"], "key_frequencies": []}
    keep = ("key_frequencies", "key_frequency_candidates", "key_frequency_power_fraction", "circuit_size",
            "restricted_loss", "excluded_loss", "train_loss", "test_loss", "logit_variance_explained",
            "neurons_unassigned")
    row = {k: summary[k] for k in keep} | progress["training_phases"]
    row |= {f"onset_{k}": v for k, v in progress["onsets"].items()}
    row["basis"] = summary["basis"]["name"]
    row |= {k: summary["clock_pizza"][k] for k in ("gradient_symmetricity", "distance_irrelevance", "verdict")}
    row["all_pairs_loss"] = summary["losses"]["all"]["loss"]  # what the restricted loss (all pairs) compares with
    row["ranking_spearman"] = summary["neuron_importance"]["ranking_agreement"]["spearman"]
    row["worst_key_frequency_ablation_acc"] = min((r["acc"] for r in summary["frequency_ablation"][:-1]), default=None)
    row["non_key_ablation_acc"] = summary["frequency_ablation"][-1]["acc"]
    return row


# --- backends ----------------------------------------------------------------------------------------------

def default_workers(cfg: Config) -> int:
    """Local processes: one per CPU core on a CPU (bench.py measured it against threads), one on a GPU."""
    return 1 if resolve_device(cfg.device).type == "cuda" else max(1, len(os.sched_getaffinity(0)))


def run_chunks(chunks, backend: str = "local", workers: int = 1, threads: int = 1, address: str | None = None,
               **kwargs):
    """Yield each chunk's records as it finishes (in any order). kwargs go to train_chunk."""
    if backend == "ray":
        yield from _run_ray(chunks, address, kwargs)
    elif workers <= 1 or len(chunks) <= 1:
        for engine, cfgs in chunks:
            yield train_chunk(engine, cfgs, **kwargs)
    else:
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(chunks)), _init_worker, (threads,))
        try:
            yield from pool.imap_unordered(_train_chunk_args, [(e, c, kwargs) for e, c in chunks])
        except BaseException:
            pool.terminate()  # a Ctrl-C here ends the workers (they ignore it themselves) and their chunks
            raise
        else:
            pool.close()
        finally:
            pool.join()


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    torch.set_num_threads(threads)


def _train_chunk_args(args):
    engine, cfgs, kwargs = args
    return train_chunk(engine, cfgs, **kwargs)


def check_ray_address(address: str | None) -> None:
    """Raise SweepError unless Ray is installed and, for a host:port address, something listens there."""
    if importlib.util.find_spec("ray") is None:
        raise SweepError("--backend ray needs Ray: pip install -r requirements-cluster.txt")
    if address in (None, "auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError(f"--address {address!r} is not HOST:PORT (the head node's GCS port, 6379 by default)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise SweepError(f"cannot reach a Ray head node at {address}: {err.strerror or err}") from None


def _run_ray(chunks, address, kwargs):
    import ray

    started = not ray.is_initialized()
    if started and address in (None, "local"):  # a local instance for this sweep, reachable from this machine only
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False, configure_logging=False)
    elif started:  # a cluster: its workers get this repository's code (not results, checkpoints or the venv)
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env={"working_dir": str(Path(__file__).resolve().parent),
                              "excludes": [".git", ".venv", "results", "checkpoints", "*.pth", "*.sqlite"]})
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(train_chunk)
        pending = [task.remote(engine, cfgs, **kwargs) for engine, cfgs in chunks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()
