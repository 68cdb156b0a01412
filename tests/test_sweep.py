"""sweep.py's grid, its database (sweeps/database.py) and the phase diagram drawn from it (phase_diagram.py)."""
import csv
import json
import sqlite3
from dataclasses import replace

import pytest
import torch

import sweep
from config import Config, parse_sets
from core.checkpoint import load_model
from core.training import train
from sweeps import batched, database, runner
from sweeps.regimes import draw_phase_diagram, regime_of_history, regime_of_row

# Tiny real runs: p = 11, 20 full-batch epochs, ~1 s each (most of it the training-curves plot).
TINY_SETS = ["d_embed=8", "d_hidden=16", "epochs=20", "snapshot_every=10", "checkpoint_every=10"]


def run_sweep(tmp_path, *sets, seeds=("0",), extra=(), workers="1"):
    return sweep.main(["--primes", "11", "--seeds", *seeds, "--set", *TINY_SETS, *sets, "--workers", workers,
                       "--db", str(tmp_path / "sweep.sqlite"), "--out", str(tmp_path / "out/sweep.json"), *extra])


@pytest.fixture
def trained(monkeypatch):
    """Count the runs sweep.py trains (train calls, models given to train_batched); `fail_on` = n makes
    the call that would train the n-th run a Ctrl-C."""
    calls = {"n": 0, "fail_on": None}

    def count(n):
        if calls["fail_on"] is not None and calls["n"] < calls["fail_on"] <= calls["n"] + n:
            raise KeyboardInterrupt
        calls["n"] += n

    def counting(cfg, *args, **kwargs):
        count(1)
        return train(cfg, *args, **kwargs)

    def counting_batched(cfgs, *args, **kwargs):
        count(len(cfgs))
        return batched.train_batched(cfgs, *args, **kwargs)

    monkeypatch.setattr(runner, "train", counting)
    monkeypatch.setattr(runner, "train_batched", counting_batched)
    return calls


def stored(tmp_path) -> list[dict]:
    conn = database.connect(tmp_path / "sweep.sqlite", create=False)
    try:
        return database.get_runs(conn)
    finally:
        conn.close()


# --- the grid ---------------------------------------------------------------------------------------------

def test_grid_is_the_product_of_primes_sets_and_seeds_in_order():
    sets = parse_sets(["lr=0.01,0.03", "op=add,sub", "epochs=7"])
    assert sets == {"lr": [0.01, 0.03], "op": ["add", "sub"], "epochs": [7]}
    assert type(sets["epochs"][0]) is int and type(sets["lr"][0]) is float  # parsed by the Config field's type
    grid = sweep.expand_grid(Config(), sets, primes=[11, 13], seeds=[0, 1])
    got = [(c.p, c.lr, c.op, c.epochs, c.seed) for c in grid]
    expected = [(p, lr, op, 7, s) for p in (11, 13) for lr in (0.01, 0.03) for op in ("add", "sub") for s in (0, 1)]
    assert got == expected and len(got) == 16
    assert all(c.weight_decay == Config().weight_decay for c in grid)  # the rest stays at the base


def test_one_value_per_setting_keeps_the_old_behaviour():
    """The README's `--set lr=0.01 weight_decay=3`: one run per (p, seed), those values in each."""
    grid = sweep.expand_grid(Config(), parse_sets(["lr=0.01", "weight_decay=3"]), [113], [0, 1, 2])
    assert [(c.p, c.seed, c.lr, c.weight_decay) for c in grid] == [(113, s, 0.01, 3.0) for s in (0, 1, 2)]


def test_duplicates_make_one_run():
    assert parse_sets(["lr=0.1,0.1,0.2"]) == {"lr": [0.1, 0.2]}
    assert len(sweep.expand_grid(Config(), {"weight_decay": [1.0]}, [11], [0, 0, 1])) == 2


@pytest.mark.parametrize("bad", ["nonsense=1", "lr=fast", "epochs=1.5", "lr=", "lr=0.1,,0.2", "lr", "p=11",
                                 "lr=0.1 lr=0.2", "lr=-1", "d_model=64"])
def test_bad_set_exits_2_before_anything_is_written(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["--seeds", "0", "--set", *bad.split(), "--db", str(tmp_path / "s.sqlite"),
                    "--out", str(tmp_path / "sweep.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: --set" in err and err.count("error") == 1
    assert list(tmp_path.iterdir()) == []


def test_diagram_refuses_a_grid_that_varies_a_third_setting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_sweep(tmp_path, "lr=0.01,0.03", "weight_decay=0.3,1", "train_frac=0.3,0.5",
                  extra=("--diagram", "train_frac", "weight_decay"))
    assert exit_.value.code == 2 and "also varies lr" in capsys.readouterr().err
    assert not (tmp_path / "sweep.sqlite").exists()


# --- the database -----------------------------------------------------------------------------------------

def test_key_ignores_bookkeeping_but_not_what_changes_the_result():
    base = Config()
    h = database.config_hash(base)
    assert database.config_hash(replace(base, weight_decay=1)) == h  # an int 1 is the float 1.0
    for name, value in [("checkpoint_dir", "elsewhere"), ("results_dir", "x"), ("device", "cpu"),
                        ("snapshot_every", 7), ("checkpoint_every", 3)]:
        assert database.config_hash(replace(base, **{name: value})) == h, name
    for name, value in [("eval_every", 1), ("epochs", 9), ("seed", 1), ("data_seed", 1), ("train_frac", 0.31)]:
        assert database.config_hash(replace(base, **{name: value})) != h, name
    for name, value in [("optimizer", "muon"), ("grad_filter", "ema"), ("filter_lamb", 2.0), ("orthograd", True),
                        ("loss", "stablemax"), ("weight_norm", 0.5)]:
        assert database.config_hash(replace(base, **{name: value})) != h, name
    assert json.loads(database.config_key(base)) == {k: getattr(base, k) for k in database.KEY_FIELDS
                                                     if k not in database.LATER_FIELDS}


def test_runs_stored_before_the_accelerators_keep_their_key_and_read_back_with_defaults():
    """The fields added later are keyed only away from their default: a default run's key is the one it had
    before they existed (written here by hand, without them), and its exported row shows their defaults."""
    base = Config(p=97, seed=3)
    older = {k: getattr(base, k) for k in database.KEY_FIELDS if k not in database.LATER_FIELDS}
    assert database.config_key(base) == json.dumps(older, sort_keys=True, separators=(",", ":"))
    row = database.flat_row({"config_hash": "h", "regime": "grokking", "config_key": json.dumps(older),
                             "summary": {"grokking_epoch": 300}})
    assert row["optimizer"] == "adamw" and row["orthograd"] is False and row["weight_norm"] == 0.0
    assert row["p"] == 97 and row["grokking_epoch"] == 300
    assert "optimizer" in json.loads(database.config_key(replace(base, optimizer="muon")))


def record(cfg: Config, **summary) -> dict:
    row = {"p": cfg.p, "seed": cfg.seed, "memorization_epoch": 20, "grokking_epoch": 300, "grokking_delay": 15.0,
           "key_frequencies": [3, 7]} | summary
    return {"config_hash": database.config_hash(cfg), "config_key": database.config_key(cfg), "config": vars(cfg),
            "status": "done", "regime": regime_of_row(row), "analyzed": 0, "summary": row,
            "history": {"epoch": [5, 10], "train_acc": [0.5, 1.0]}, "checkpoint": None,
            "created": "2026-01-01T00:00:00+00:00", "provenance": {"command": "test"}}


def test_database_round_trip(tmp_path):
    path = tmp_path / "db/sweep.sqlite"
    conn = database.connect(path)
    runs = [record(Config(seed=s)) for s in range(3)]
    database.put_runs(conn, runs[:1])
    database.put_runs(conn, runs[1:])  # several runs in one transaction
    conn.close()
    conn = database.connect(path, create=False)
    assert database.get_runs(conn) == runs
    assert database.get_runs(conn, [runs[2]["config_hash"], "missing", runs[0]["config_hash"]]) == [runs[2], runs[0]]
    database.put_runs(conn, [record(Config(seed=0), grokking_epoch=100)])  # the same key replaces its row
    assert [r["summary"]["grokking_epoch"] for r in database.get_runs(conn)] == [300, 300, 100]
    assert database.get_runs(conn, history=False)[0].get("history") is None
    conn.close()


def test_a_database_of_the_first_schema_is_upgraded_with_every_run_kept(tmp_path):
    """Schema grokking-sweep/1 named the run-regime column `phase`; opening such a file renames it in place."""
    path = tmp_path / "old.sqlite"
    runs = [record(Config(seed=s)) for s in range(2)]
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(database._CREATE.replace("    regime      TEXT", "    phase       TEXT"))
        conn.execute("INSERT INTO meta VALUES ('schema', 'grokking-sweep/1')")
        columns = ["phase" if c == "regime" else c for c in database.COLUMNS]
        conn.executemany(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         [tuple(json.dumps(r[c]) if c in database.JSON_COLUMNS else r[c] for c in database.COLUMNS)
                          for r in runs])
    conn.close()
    conn = database.connect(path, create=False)
    assert database.get_runs(conn) == runs and [r["regime"] for r in runs] == ["grokking", "grokking"]
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == database.SCHEMA
    conn.close()


@pytest.mark.parametrize("content", ["sqlite", "text"])
def test_a_foreign_file_is_refused_and_left_as_it_was(tmp_path, capsys, content):
    path = tmp_path / "other.sqlite"
    if content == "sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE runs (x)")
        conn.close()
    else:
        path.write_text("not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(database.SweepDBError):
        database.connect(path)
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["--seeds", "0", "--db", str(path), "--out", str(tmp_path / "sweep.json")])
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err
    assert path.read_bytes() == before and not (tmp_path / "sweep.json").exists()


# --- sweeping: store, skip, resume, export ----------------------------------------------------------------

def test_a_second_call_trains_nothing_and_exports_match_the_database(tmp_path, trained, capsys):
    assert run_sweep(tmp_path, "weight_decay=0.5,1", seeds=("0", "1")) == 0
    assert trained["n"] == 4
    runs = stored(tmp_path)
    assert len(runs) == 4 and all(r["status"] == "done" for r in runs)
    for r in runs:  # the stored history is the run's own, and its summary agrees with it
        assert r["history"]["epoch"][-1] == r["summary"]["epochs_run"] == 20
        assert r["regime"] == regime_of_history(r["history"])
        assert r["provenance"]["command"] and r["created"] and "versions" in r["provenance"]
    capsys.readouterr()
    assert run_sweep(tmp_path, "weight_decay=0.5,1", seeds=("0", "1")) == 0
    assert trained["n"] == 4  # nothing trained again
    assert "4 already in the database (skipped), 0 to train" in capsys.readouterr().out

    run_sweep(tmp_path, "weight_decay=1", seeds=("0",))  # a smaller grid: its export holds its one run only
    assert trained["n"] == 4
    exported = json.loads((tmp_path / "out/sweep.json").read_text())["runs"]
    assert len(exported) == 1 and exported[0]["weight_decay"] == 1.0 and exported[0]["seed"] == 0

    run_sweep(tmp_path, "weight_decay=0.5,1", seeds=("0", "1"))
    flat = [database.flat_row(r) for r in stored(tmp_path)]
    exported = json.loads((tmp_path / "out/sweep.json").read_text())["runs"]
    assert sorted(exported, key=lambda r: r["config_hash"]) == sorted(flat, key=lambda r: r["config_hash"])
    with open(tmp_path / "out/sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    by_hash = {r["config_hash"]: r for r in flat}
    assert len(table) == 4
    for line in table:
        for key, value in by_hash[line["config_hash"]].items():
            assert line[key] == ("" if value is None else str(value)), key


def test_an_interrupted_sweep_keeps_finished_runs_and_a_rerun_trains_only_the_rest(tmp_path, trained, capsys):
    trained["fail_on"] = 3  # Ctrl-C in the second chunk (seeds 2, 3) of four runs
    assert run_sweep(tmp_path, seeds=("0", "1", "2", "3"), extra=("--chunk", "2")) == 130
    assert "2 of the grid's 4 runs are stored" in capsys.readouterr().err
    assert sorted(r["summary"]["seed"] for r in stored(tmp_path)) == [0, 1]
    trained["fail_on"], trained["n"] = None, 0
    assert run_sweep(tmp_path, seeds=("0", "1", "2", "3"), extra=("--chunk", "1")) == 0
    assert trained["n"] == 2  # seeds 2 and 3 only
    assert sorted(r["summary"]["seed"] for r in stored(tmp_path)) == [0, 1, 2, 3]


@pytest.mark.parametrize("engine", ["batched", "single"])
def test_save_checkpoints_keeps_a_model_that_load_model_opens(tmp_path, trained, engine):
    keep = tmp_path / "kept"
    assert run_sweep(tmp_path, extra=("--save-checkpoints", str(keep), "--engine", engine)) == 0
    (run,) = stored(tmp_path)
    final = keep / run["config_hash"] / "model_final.pth"
    assert run["checkpoint"] == str(keep / run["config_hash"])
    model, ckpt = load_model(final)
    a = torch.arange(11)
    assert ckpt["config"]["p"] == 11 and model(a, a).shape == (11, 11)
    assert ckpt["history"] == run["history"]
    assert (keep / run["config_hash"] / "snapshots").is_dir() == (engine == "single")  # batched: model_final only
    run_sweep(tmp_path, extra=("--save-checkpoints", str(keep), "--engine", engine))
    assert trained["n"] == 1  # stored, with its checkpoints: skipped
    final.unlink()
    run_sweep(tmp_path, extra=("--save-checkpoints", str(keep), "--engine", engine))
    assert trained["n"] == 2 and final.is_file()  # asked for checkpoints that are gone: trained again


def test_diagram_after_the_sweep_and_from_the_database_alone(tmp_path, trained, capsys):
    grid = ("train_frac=0.4,0.6", "weight_decay=1")
    assert run_sweep(tmp_path, *grid, extra=("--diagram", "train_frac", "weight_decay")) == 0
    png = tmp_path / "out/phase_diagram.png"
    assert png.is_file() and trained["n"] == 2
    png.unlink()
    assert run_sweep(tmp_path, *grid, extra=("--diagram", "train_frac", "weight_decay", "--diagram-only")) == 0
    assert png.is_file() and trained["n"] == 2  # drawn without training
    data = draw_phase_diagram(tmp_path / "sweep.sqlite", "train_frac", "weight_decay", where={"seed": 0},
                              path=tmp_path / "again.png")
    assert sorted(data["cells"]) == [(0.4, 1.0), (0.6, 1.0)] and (tmp_path / "again.png").is_file()


def test_a_grid_over_two_settings_draws_its_diagram_unasked(tmp_path, trained):
    png = tmp_path / "out/phase_diagram.png"
    assert run_sweep(tmp_path, "train_frac=0.4") == 0 and not png.exists()  # one setting: no diagram
    assert run_sweep(tmp_path, "train_frac=0.4,0.6", "weight_decay=1,2") == 0 and png.is_file()


def test_analyze_uses_the_single_engine_and_survives_a_model_without_key_frequencies(tmp_path, trained):
    """20 epochs at p = 11: nothing learned, so no key frequency (min over none used to crash)."""
    assert run_sweep(tmp_path, extra=("--analyze",)) == 0
    (run,) = stored(tmp_path)
    assert run["analyzed"] == 1 and run["provenance"]["engine"].startswith("core.training.train")
    assert run["summary"]["key_frequencies"] == [] and run["summary"]["worst_key_frequency_ablation_acc"] is None


def test_the_engine_is_batched_unless_a_run_needs_snapshots_or_minibatches():
    base = Config(p=11)
    assert runner.engine_for(base, "batched", analyze=False) == "batched"
    assert runner.engine_for(base, "single", analyze=False) == "single"
    assert runner.engine_for(base, "batched", analyze=True) == "single"
    for change in ({"batch_size": 64}, {"stop_at_cleanup_end": True}):
        assert runner.engine_for(replace(base, **change), "batched", analyze=False) == "single"
