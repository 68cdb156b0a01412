"""The sweep database: one SQLite file (stdlib sqlite3) holding every finished run, keyed by its configuration.

A run's key is the canonical JSON of the Config fields that decide its result (KEY_FIELDS: every field but
BOOKKEEPING) and a short hash of it. Each row holds the run's summary (the row sweep.py prints and exports), its
history (train.py's per-evaluation history), its run regime (sweeps/regimes.py), where its checkpoints were kept, the time it was
stored and its provenance. CSV and JSON files are exports of it; the database is the source of truth.

Writes are one transaction per call of put_runs, which takes any number of runs (one now; a batched engine
can store a whole chunk at once), so an interrupted sweep loses at most what was in flight. The file is opened
with a busy timeout, so two processes can share it.
"""
import csv
import hashlib
import io
import json
import sqlite3
from dataclasses import asdict, fields
from pathlib import Path

from config import Config
from core.utils import atomic_write

SCHEMA = "grokking-sweep/2"
UPGRADES = {"grokking-sweep/1": "ALTER TABLE runs RENAME COLUMN phase TO regime"}  # older schema -> SQL
# Config fields that do not change a run's result: where files go, how often they are written, which device
# ran it (CPU and GPU differ only by float rounding; the device used is in the row's provenance), and the
# Weights & Biases project it was logged to.
# eval_every is NOT here: it sets the resolution of the memorization/grokking epochs and so the stop rule.
BOOKKEEPING = frozenset({"checkpoint_dir", "results_dir", "device", "checkpoint_every", "snapshot_every", "wandb"})
KEY_FIELDS = tuple(f.name for f in fields(Config) if f.name not in BOOKKEEPING)
# Fields added after runs were stored: keyed only away from their default, so the runs stored before keep their key.
LATER_FIELDS = {f.name: f.default for f in fields(Config)
                if f.name in ("optimizer", "grad_filter", "filter_alpha", "filter_lamb", "filter_window", "orthograd",
                              "loss", "weight_norm")}
_TYPES = {f.name: f.type for f in fields(Config)}

_CREATE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    config_hash TEXT PRIMARY KEY,   -- first 16 hex digits of sha256(config_key)
    config_key  TEXT NOT NULL,      -- canonical JSON of the KEY_FIELDS of the run's Config (sorted keys)
    config      TEXT NOT NULL,      -- the full Config as JSON, bookkeeping fields included
    status      TEXT NOT NULL,      -- 'done' or 'diverged' (non-finite loss)
    regime      TEXT NOT NULL,      -- run regime: comprehension, grokking, memorization, confusion or diverged
    analyzed    INTEGER NOT NULL,   -- 1 if the summary holds the --analyze fields
    summary     TEXT NOT NULL,      -- JSON: the run's row (what sweep.py prints and exports)
    history     TEXT,               -- JSON: train.py's history (epoch, losses, accuracies, ...); NULL if diverged
    checkpoint  TEXT,               -- folder of the run's checkpoints (--save-checkpoints), else NULL
    created     TEXT NOT NULL,      -- UTC time the row was stored (ISO 8601)
    provenance  TEXT NOT NULL       -- JSON: command, library versions, git commit, device, engine
);
"""
COLUMNS = ("config_hash", "config_key", "config", "status", "regime", "analyzed", "summary", "history",
           "checkpoint", "created", "provenance")
JSON_COLUMNS = ("config", "summary", "history", "provenance")


class SweepDBError(ValueError):
    """A database that cannot be used (one sentence)."""


def key_config(cfg: Config) -> dict:
    """The fields that decide the run's result, each as its Config type (so 1 and 1.0 give one key)."""
    values = asdict(cfg)
    return {name: _TYPES[name](values[name]) for name in KEY_FIELDS
            if name not in LATER_FIELDS or values[name] != LATER_FIELDS[name]}


def config_key(cfg: Config) -> str:
    return json.dumps(key_config(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(config_key(cfg).encode()).hexdigest()[:16]


def connect(path, create: bool = True) -> sqlite3.Connection:
    """Open (or, with create, make) the sweep database at `path`; raise SweepDBError, leaving the file as it
    was, for a file that is not one (another program's SQLite file, or not SQLite at all)."""
    path = Path(path)
    if path.is_dir():
        raise SweepDBError(f"{path} is a folder: pass the database file (e.g. {path / 'sweep.sqlite'})")
    if not path.exists() and not create:
        raise SweepDBError(f"no sweep database at {path}: run the sweep first")
    fresh = not path.exists() or path.stat().st_size == 0
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60)  # waits up to 60 s for another process's write
    try:
        if fresh:
            with conn:
                conn.executescript(_CREATE)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        schema = (conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                  if "meta" in tables else None)
    except sqlite3.DatabaseError as err:
        conn.close()
        raise SweepDBError(f"{path} is not a SQLite database ({err})") from None
    if schema is None or "runs" not in tables:
        conn.close()
        raise SweepDBError(f"{path} is a database, but not one written by sweep.py: pass another --db")
    if schema[0] in UPGRADES:  # a database of an earlier sweep.py: upgraded in place, every run kept
        with conn:
            conn.execute(UPGRADES[schema[0]])
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA,))
        schema = (SCHEMA,)
    if schema[0] != SCHEMA:
        conn.close()
        raise SweepDBError(f"{path} has schema {schema[0]!r}; this sweep.py reads {SCHEMA!r}")
    return conn


def put_runs(conn: sqlite3.Connection, records: list[dict]) -> None:
    """Store runs (dicts with COLUMNS; JSON columns as Python objects) in one transaction, replacing rows
    with the same config_hash. A batched engine stores a chunk with one call."""
    rows = [tuple(json.dumps(r[c]) if c in JSON_COLUMNS and r[c] is not None else r[c] for c in COLUMNS)
            for r in records]
    with conn:  # commits, or rolls back on an exception
        conn.executemany(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(COLUMNS))})", rows)


def get_runs(conn: sqlite3.Connection, hashes=None, history: bool = True) -> list[dict]:
    """The stored runs (all, or those with the given hashes, in that order), JSON columns decoded."""
    columns = [c for c in COLUMNS if history or c != "history"]
    select = f"SELECT {', '.join(columns)} FROM runs"
    if hashes is None:
        results = conn.execute(select + " ORDER BY rowid").fetchall()
    else:
        hashes, results = list(hashes), []
        for i in range(0, len(hashes), 500):  # SQLite caps the number of ? per statement
            chunk = hashes[i:i + 500]
            results += conn.execute(select + f" WHERE config_hash IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
    found = {}
    for values in results:
        r = dict(zip(columns, values))
        for c in JSON_COLUMNS:
            if c in r and r[c] is not None:
                r[c] = json.loads(r[c])
        found[r["config_hash"]] = r
    return list(found.values()) if hashes is None else [found[h] for h in hashes if h in found]


def flat_row(record: dict) -> dict:
    """One exported row: hash and run regime, the run's key settings, then its summary row."""
    key = LATER_FIELDS | json.loads(record["config_key"])  # the later fields a key leaves out are at their default
    return {"config_hash": record["config_hash"], "regime": record["regime"], **{name: key[name] for name in KEY_FIELDS},
            **record["summary"]}


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else value)


def export(rows: list[dict], csv_path, json_path, extra: dict) -> None:
    """Write flat rows as CSV (lists as JSON text, None as an empty cell) and as JSON ({"runs": rows, **extra})."""
    columns = list(dict.fromkeys(k for r in rows for k in r))  # first-seen order over all rows

    def write_csv(tmp):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
        tmp.write_text(buffer.getvalue())

    atomic_write(csv_path, write_csv)
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps({"runs": rows, **extra}, indent=2) + "\n"))
