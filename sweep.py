"""Train a grid of settings (the product of --set lists, --primes and --seeds), store each run in a database.

    python sweep.py                                  # seeds 0-9 at p = 113, the defaults otherwise
    python sweep.py --primes 53 59 71 97 127 149 --seeds 0 1 2 3 4 5 6 7 8 9
    python sweep.py --set train_frac=0.2,0.3,0.5 weight_decay=0.1,0.3,1,3 --seeds 0 1   # + phase_diagram.png
    python sweep.py --arch transformer --analyze     # the transformer with its own defaults

The grid is cut into chunks (sweeps/runner.py): the batched engine (sweeps/batched.py) trains a chunk's
models side by side in one process; chunks run in --workers local processes (default: one per CPU core) or
as Ray tasks (--backend ray). Every finished chunk is stored at once in results/sweep.sqlite
(sweeps/database.py), keyed by each run's settings; running the same command again trains only the runs not
stored yet, so an interrupted sweep loses at most the chunks in flight. results/sweep.csv and
results/sweep.json are exported from the database for this command's grid; a grid over exactly two settings
besides the seed (or --diagram X Y) also draws results/phase_diagram.png. Checkpoints go to a temporary folder
unless --save-checkpoints DIR keeps them in DIR/<config hash>/. With --wandb PROJECT each run trained is also
logged to Weights & Biases (core/wandb_log.py), one W&B run per model, grouped by the grid.
"""
import argparse
import hashlib
import itertools
import statistics
import subprocess
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

from tqdm import tqdm

from config import ARCH_DEFAULTS, ARCH_FLAGS, Config, parse_sets, validate
from core.utils import OutputDirError, check_output_dir, provenance
from core.wandb_log import import_wandb, log_run, run_name
from sweeps import database, runner
from sweeps.regimes import REGIME_RULE, REGIMES, draw_phase_diagram
from sweeps.runner import Interrupted, SweepError

ROOT = Path(__file__).resolve().parent


def expand_grid(base: Config, sets: dict[str, list], primes, seeds) -> list[Config]:
    """Every combination of the --primes, the --set lists (in the order given) and the --seeds (innermost),
    one Config each, applied over `base`; combinations with the same key (database.config_hash) once."""
    names, lists = ["p", *sets, "seed"], [list(primes), *sets.values(), list(seeds)]
    configs = {}
    for combo in itertools.product(*lists):
        cfg = replace(base, **dict(zip(names, combo)))
        configs.setdefault(database.config_hash(cfg), cfg)
    return list(configs.values())


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def is_done(record: dict | None, analyze: bool, save_checkpoints) -> bool:
    """Whether a stored run answers this command: it exists; with --analyze it holds the analysis; with
    --save-checkpoints its model_final.pth is there. (A diverged run is done: it would diverge again.)"""
    if record is None:
        return False
    if record["status"] == "diverged":
        return True
    if analyze and not record["analyzed"]:
        return False
    if save_checkpoints and not (Path(save_checkpoints) / record["config_hash"] / "model_final.pth").is_file():
        return False
    return True


def sweep(conn, configs: list[Config], analyze: bool = False, save_checkpoints=None, show=(), engine="batched",
          chunk: int = 0, backend: str = "local", workers: int = 1, threads: int = 1,
          address: str | None = None, wandb_group: str | None = None) -> tuple[int, int]:
    """Train the configurations not yet done in the database `conn`, storing each chunk as it finishes (one
    transaction per chunk; runner.py cuts the grid and runs it). show: the settings to name in each run's
    line. Each stored run whose Config names a W&B project (Config.wandb) is then logged there, in W&B group
    `wandb_group`. Returns (trained, skipped)."""
    stored = {r["config_hash"]: r for r in database.get_runs(conn, [database.config_hash(c) for c in configs],
                                                             history=False)}
    todo = [c for c in configs if not is_done(stored.get(database.config_hash(c)), analyze, save_checkpoints)]
    skipped = len(configs) - len(todo)
    chunks = runner.plan_chunks(todo, engine, chunk, analyze)
    where = (f"Ray ({address or 'a local instance'})" if backend == "ray" else
             f"{workers} processes x {threads} threads" if workers > 1 and len(chunks) > 1 else "this process")
    how = (f" in {len(chunks)} chunks ({', '.join(sorted({e for e, _ in chunks}))} engine) on {where}" if chunks
           else "")
    print(f"sweep: {len(configs)} runs in the grid; {skipped} already in the database (skipped), "
          f"{len(todo)} to train{how}", flush=True)
    if todo and todo[0].wandb:
        print(f"sweep: logging each run trained to W&B project {todo[0].wandb}, group {wandb_group}", flush=True)
    commit = git_commit()
    with tqdm(total=len(todo), desc="sweep", unit="run", disable=not todo) as bar:
        for records in runner.run_chunks(chunks, backend, workers, threads, address, analyze=analyze,
                                               save_checkpoints=save_checkpoints, commit=commit):
            database.put_runs(conn, records)
            for record in records:
                bar.write(format_row(database.flat_row(record), show))
                if record["config"].get("wandb"):
                    log_to_wandb(record, show, wandb_group)
            bar.update(len(records))
            sys.stdout.flush()  # each run's line reaches a log file (nohup) at once
    return len(todo), skipped


def log_to_wandb(record: dict, show, group: str | None) -> None:
    """One W&B run in the record's project (Config.wandb): its Config, the stored history and summary row (with
    the run's key hash, regime and status); a diverged run is marked failed."""
    summary = record["summary"] | {k: record[k] for k in ("config_hash", "regime", "status")}
    log_run(record["config"]["wandb"], record["config"], record["history"], summary,
            run_name(record["config"], show), group, exit_code=0 if record["status"] == "done" else 1,
            silent=True)  # the sweep prints its own line per run


def wandb_group(hashes) -> str:
    """The W&B group of a sweep's runs, named after its grid: the same command run again (to finish an
    interrupted sweep) logs into the same group."""
    return "sweep-" + hashlib.sha256(" ".join(sorted(hashes)).encode()).hexdigest()[:8]


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_label(r: dict, show) -> str:
    return " ".join(f"{name} {_fmt(r[name])}" for name in show)


def format_row(r: dict, show=()) -> str:
    head = f"p {r['p']:4d} seed {r['seed']:2d}" + (f" | {settings_label(r, show)}" if show else "")
    if r.get("diverged"):
        return f"{head} | diverged (non-finite loss)"
    delay = f"{r['grokking_delay']:5.1f}x" if r["grokking_delay"] else "  none"
    line = (f"{head} | {r['regime']} | memorized {r['memorization_epoch']} | grokked {r['grokking_epoch']} "
            f"({delay}) | final test acc {r['final_test_acc']:.1%} | {r['epochs_run']} epochs, "
            f"{r['wall_seconds']:.1f} s")
    if r.get("basis"):
        line += (f" | keys {r['key_frequencies']} ({r['key_frequency_power_fraction']:.0%}; spectrum alone "
                 f"{r['key_frequency_candidates']}) | {r['verdict']} (s_g {r['gradient_symmetricity']:.2f}, "
                 f"q {r['distance_irrelevance']:.2f}) | circuit "
                 f"{r['circuit_size']} | restricted {r['restricted_loss']:.2g} excluded {r['excluded_loss']:.2g} | "
                 f"logit var {r['logit_variance_explained']:.1%} | clean-up {r['cleanup_start']}-{r['cleanup_end']} | "
                 "first 2x moves: " + ", ".join(f"{k[6:]} {r[k]}" for k in sorted(
                     (k for k in r if k.startswith("onset_")), key=lambda k: (r[k] is None, r[k] or 0))))
    return line


def mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0:.1f}"


def print_tables(rows: list[dict], group_by: list[str], analyze: bool) -> None:
    """One line per setting (all of group_by's values), summarising its seeds; with analyze, the analysis too."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in group_by), []).append(r)
    head = " | ".join(group_by)
    print(f"\n{head} | runs | run regimes | memorization epoch | grokking epoch | delay (grok/mem) | min delay | "
          "final test acc | wall s")
    for key, rs in groups.items():
        label = " | ".join(_fmt(v) for v in key)
        counts = {name: sum(r["regime"] == name for r in rs) for name in REGIMES}
        regimes = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        ok = [r for r in rs if not r.get("diverged")]
        if not ok:
            print(f"{label} | {len(rs)} | {regimes} | every run diverged")
            continue
        delays = [r["grokking_delay"] for r in ok]
        print(f"{label} | {len(rs)} | {regimes} | {mean_std(r['memorization_epoch'] for r in ok)} | "
              f"{mean_std(r['grokking_epoch'] for r in ok)} | {mean_std(delays)} | "
              f"{min((d for d in delays if d), default=0):.1f} | "
              f"{min(r['final_test_acc'] for r in ok):.1%} | {mean_std(r['wall_seconds'] for r in ok)}")
    if not analyze:
        return
    print(f"\n{head} | key frequencies (count) | their power share | circuit size | restricted loss | "
          "excluded loss | logit variance explained | clean-up starts")
    for key, rs in groups.items():
        rs = [r for r in rs if r.get("basis")]  # not diverged, and a Fourier analysis
        if not rs:
            continue
        print(f"{' | '.join(_fmt(v) for v in key)} | {mean_std(len(r['key_frequencies']) for r in rs)} | "
              f"{mean_std(100 * r['key_frequency_power_fraction'] for r in rs)}% | "
              f"{mean_std(r['circuit_size'] for r in rs)} | "
              f"{min(r['restricted_loss'] for r in rs):.1e}-{max(r['restricted_loss'] for r in rs):.1e} | "
              f"{mean_std(r['excluded_loss'] for r in rs)} | "
              f"{mean_std(100 * r['logit_variance_explained'] for r in rs)}% | "
              f"{mean_std(r['cleanup_start'] for r in rs)}")
    print(f"\n{head} | seed | memorized | clean-up starts | clean-up ends | grokked | first 2x move after "
          "memorization: embedding Gini up | restricted loss down | excluded loss up | test loss down")
    for key, rs in groups.items():
        for r in (r for r in rs if r.get("basis")):
            print(f"{' | '.join(_fmt(v) for v in key)} | {r['seed']:4d} | {r['memorization_epoch']!s:>9} | "
                  f"{r['cleanup_start']!s:>15} | {r['cleanup_end']!s:>13} | {r['grokking_epoch']!s:>7} | "
                  f"{r['onset_fourier_gini']!s:>17} | {r['onset_restricted_loss']!s:>20} | "
                  f"{r['onset_excluded_loss']!s:>16} | {r['onset_test_loss']!s:>14}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train every combination of --primes, --set lists and --seeds (train.py's defaults otherwise), "
                    "storing each finished run at once in a SQLite database; a rerun of the same command trains "
                    "only what is missing. Run regime of each run (after Liu et al. 2022, with a delay ratio instead of "
                    f"their 10^3-step gap): {REGIME_RULE}.")
    parser.add_argument("--primes", type=int, nargs="+", default=[113], help="moduli to train on")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="init seeds")
    parser.add_argument("--arch", choices=ARCH_FLAGS, default="mlp",
                        help="architecture; its defaults (config.ARCH_DEFAULTS) apply before --set")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=V1,V2",
                        help="train.py settings (Config field names, e.g. lr, weight_decay, train_frac, epochs), "
                             "each with one value or a comma-separated list; the grid is the product of all lists, "
                             "--primes and --seeds. E.g. --set lr=0.01 weight_decay=0.3,1,3")
    parser.add_argument("--analyze", action="store_true",
                        help="also run the analysis and progress measures (a stored run without them is retrained)")
    parser.add_argument("--db", default="results/sweep.sqlite",
                        help="the SQLite database every finished run is stored in, keyed by its settings (all "
                             "Config fields except " + ", ".join(sorted(database.BOOKKEEPING)) + "); runs already "
                             "in it are skipped")
    parser.add_argument("--out", default="results/sweep.json",
                        help="where to write the JSON table; the CSV goes beside it (sweep.csv). Both are exported "
                             "from the database after the sweep and hold the runs of this command's grid only")
    parser.add_argument("--save-checkpoints", metavar="DIR", default=None,
                        help="keep each run's checkpoints in DIR/<config hash>/ (model_final.pth for "
                             "interpretability.py, snapshots for progress.py); a stored run without them is retrained")
    parser.add_argument("--diagram", nargs=2, metavar=("X", "Y"), default=None,
                        help="draw the phase diagram over two swept settings (Config field names) into "
                             "phase_diagram.png beside --out (drawn without asking when exactly two settings other "
                             "than the seed vary): colour = majority run regime over the seeds of a cell, "
                             "text = regime counts, median epoch of 99%% test accuracy and median delay")
    parser.add_argument("--engine", choices=runner.ENGINES, default="batched",
                        help="batched: each chunk's models side by side in one process (sweeps/batched.py; full batch; "
                             "saves model_final.pth only); single: training.train one run at a time (always used "
                             "with --analyze and for minibatch runs). Both give the same numbers on a CPU")
    parser.add_argument("--chunk", type=int, default=0,
                        help=f"models per batched chunk, stored together when it finishes; 0 = {runner.CPU_CHUNK} "
                             f"on a CPU, as many as fit (up to {runner.GPU_CHUNK}) on a GPU")
    parser.add_argument("--workers", type=int, default=0,
                        help="local processes training chunks at once; 0 = one per CPU core on a CPU, 1 on a GPU")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker process (with one worker the chunks run in this process, "
                             "with torch's default threads)")
    parser.add_argument("--backend", choices=runner.BACKENDS, default="local",
                        help="local: this machine; ray: one Ray task per chunk (pip install -r "
                             "requirements-cluster.txt), on --address or on a Ray instance started for the sweep")
    parser.add_argument("--address", default=None,
                        help="with --backend ray: the head node's HOST:PORT (ray start --head prints it), or auto; "
                             "default: start a local Ray instance")
    parser.add_argument("--wandb", metavar="PROJECT", default="",
                        help="also log each run trained now to this Weights & Biases project (one W&B run per model: "
                             "its Config, history and summary row, logged when its chunk is stored; runs reused from "
                             "the database are not logged again), grouped as sweep-<hash of the grid>; "
                             "WANDB_MODE=offline keeps them on this machine. Needs pip install -r "
                             "requirements-interop.txt. Not part of a run's key")
    parser.add_argument("--diagram-only", action="store_true",
                        help="train nothing: draw --diagram from the runs of this grid already in --db")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sets = parse_sets(args.set)
    except ValueError as err:
        parser.error(f"--set: {err}")
    foreign = [k for flags in ARCH_FLAGS.values() for k in flags if k in sets and k not in ARCH_FLAGS[args.arch]]
    if foreign:
        parser.error(f"--set: {foreign[0]} does not apply to --arch {args.arch}")
    if args.wandb and not args.diagram_only:
        try:
            import_wandb()  # wandb missing: one error line before anything is trained
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    base = replace(Config(**ARCH_DEFAULTS[args.arch]), arch=args.arch, wandb=args.wandb)
    configs = expand_grid(base, sets, args.primes, args.seeds)
    try:
        for cfg in configs:
            validate(cfg)
    except ValueError as err:
        parser.error(f"--set: {err}")
    varying = [name for name in ("p", *sets, "seed") if len({getattr(c, name) for c in configs}) > 1]
    show = [name for name in varying if name not in ("p", "seed")]
    axes = [name for name in varying if name != "seed"]
    diagram = args.diagram or (axes if len(axes) == 2 else None)  # two settings swept: their diagram
    if args.diagram_only and not diagram:
        parser.error("--diagram-only needs --diagram X Y")
    if diagram:
        names = {f.name for f in fields(Config)}
        x, y = diagram
        if x not in names or y not in names or x == y:
            parser.error(f"--diagram takes two different Config field names, got {x} {y}")
        others = [name for name in varying if name not in (x, y, "seed")]
        if others:
            parser.error(f"--diagram {x} {y}: the grid also varies {', '.join(others)}, so a cell would mix "
                         "settings; sweep one value of it at a time, or draw slices with "
                         "phase_diagram.py --where")
    if args.chunk < 0 or args.workers < 0 or args.threads < 1:
        parser.error("--chunk and --workers must be >= 0 (0 = automatic), --threads >= 1")
    if args.address and args.backend != "ray":
        parser.error("--address needs --backend ray")
    if args.backend == "ray" and not args.diagram_only:
        try:
            runner.check_ray_address(args.address)
        except SweepError as err:
            parser.error(str(err))
    workers = args.workers or runner.default_workers(base)
    out = Path(args.out)
    try:
        for path, flag in ((out.parent, "--out"), (Path(args.db).parent, "--db")):
            check_output_dir(path, flag)
        if args.save_checkpoints:
            check_output_dir(args.save_checkpoints, "--save-checkpoints")
        conn = database.connect(args.db, create=not args.diagram_only)
    except (OutputDirError, database.SweepDBError) as err:
        parser.error(str(err))
    diagram_path = out.parent / "phase_diagram.png"
    hashes = [database.config_hash(c) for c in configs]
    try:
        if args.diagram_only:
            rows = [database.flat_row(r) for r in database.get_runs(conn, hashes, history=False)]
            print(f"{len(rows)} of the grid's {len(configs)} runs are in {args.db}")
            if not rows:
                print("error: none of this grid's runs is in the database: run the sweep first", file=sys.stderr)
                return 2
            draw_phase_diagram(None, *diagram, path=diagram_path, rows=rows)
            print(f"wrote {diagram_path}")
            return 0
        try:
            sweep(conn, configs, analyze=args.analyze, save_checkpoints=args.save_checkpoints, show=show,
                  engine=args.engine, chunk=args.chunk, backend=args.backend, workers=workers,
                  threads=args.threads, address=args.address, wandb_group=wandb_group(hashes))
        except (Interrupted, KeyboardInterrupt):
            done = len(database.get_runs(conn, hashes, history=False))
            print(f"\nerror: interrupted; {done} of the grid's {len(configs)} runs are stored in {args.db}. "
                  "Run the same command again to train the rest.", file=sys.stderr)
            return 130
        records = database.get_runs(conn, hashes, history=False)
    finally:
        conn.close()
    rows = [database.flat_row(r) for r in records]
    print_tables(rows, ["p", *show], args.analyze)
    csv_path = out.with_suffix(".csv")
    database.export(rows, csv_path, out, {"config": vars(args) | {"base": asdict(base), "grid": sets},
                                          "db": str(args.db), **provenance()})
    print(f"wrote {csv_path} and {out} ({len(rows)} runs of this grid, exported from {args.db})")
    if diagram:
        draw_phase_diagram(None, *diagram, path=diagram_path, rows=rows)
        print(f"wrote {diagram_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
