"""--wandb PROJECT (core/wandb_log.py): what train.py and sweep.py log to Weights & Biases, read back from the
offline run files wandb writes (WANDB_MODE=offline; nothing leaves the machine), against the run's own records."""
import importlib.util
import json
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import sweep
import train
from config import Config, config_from_args, parse_sets
from conftest import ROOT
from core.checkpoint import load_checkpoint
from sweeps import database

needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb is not installed (pip install -r requirements-interop.txt)")
MISSING = "error: --wandb needs the wandb package: pip install -r requirements-interop.txt\n"
WANDB_KEYS = {"_step", "_runtime", "_timestamp"}  # what wandb adds to every history row
TINY = ["--p", "23", "--d-embed", "8", "--d-hidden", "16", "--eval-every", "5", "--stop-after-grok", "0"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb writes its runs under tmp_path/wandb, offline and without its own lines; yields that folder. wandb
    reads these settings once per process (wandb.setup), so its state is torn down before and after."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()
    yield tmp_path / "wandb"
    wandb.teardown()


# --- reading back an offline run: its .wandb file is a log of wandb_internal_pb2.Record protobufs ------------

BLOCK, RECORD_HEADER, FILE_HEADER = 32768, 7, 7  # the LevelDB log layout wandb's datastore writes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every Record in a run-*.wandb file, in order (each record's CRC checked)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb datastore"
    pos, body = FILE_HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        chunk = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 0 and length == 0:  # zero padding
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad checksum in {path} at {pos}"
        body += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(body)
            body = b""
            yield record


def put(target: dict, item) -> None:
    """Set an item (key or nested_key path, value_json) into the dict `target`."""
    path = list(item.nested_key) or [item.key]
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = json.loads(item.value_json)


def read_run(run_dir: Path) -> dict:
    """An offline run as {"config", "history" (rows), "summary", "group", "name", "files" (its folder)}."""
    run = {"config": {}, "history": [], "summary": {}, "files": run_dir / "files"}
    for record in records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run |= {"group": record.run.run_group, "name": record.run.display_name}
        if kind in ("run", "config"):
            for item in getattr(record, kind).config.update:
                put(run["config"], item)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                put(row, item)
            run["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                put(run["summary"], item)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    assert "exit_code" in run, f"{run_dir} was not closed"
    run["config"].pop("_wandb", None)
    return run


def read_runs(wandb_dir: Path) -> list[dict]:
    """The offline runs under wandb_dir, once wandb has written them out: run.finish() may return before its
    writer has flushed the file, so wandb's service is shut down first (as at the end of a process)."""
    import wandb

    wandb.teardown()
    return [read_run(d) for d in sorted(wandb_dir.glob("offline-run-*"))]


def assert_history_equal(rows: list[dict], history: dict) -> None:
    """The logged rows are the history: one per evaluation, at its epoch, with every key and value."""
    assert [row["_step"] for row in rows] == history["epoch"]
    for row in rows:
        assert set(row) - WANDB_KEYS - {"training_curves"} == set(history)
    for key, values in history.items():
        assert [row[key] for row in rows] == values, key


# --- train.py ----------------------------------------------------------------------------------------------

def train_args(tmp_path, *extra) -> list[str]:
    return ["--quiet", *TINY, "--checkpoint-dir", str(tmp_path / "ckpt"), "--results-dir", str(tmp_path / "res"),
            *extra]


@needs_wandb
def test_train_logs_config_every_evaluation_summary_and_curves(tmp_path, offline):
    argv = train_args(tmp_path, "--epochs", "23", "--label-noise", "0.1", "--wandb", "grokking-test")
    assert train.main(argv) == 0
    (run,) = read_runs(offline)
    final = load_checkpoint(tmp_path / "ckpt/model_final.pth")
    assert "noisy_true_acc" in final["history"] and final["history"]["epoch"][-1] == 23  # every key, the last epoch
    assert_history_equal(run["history"], final["history"])
    assert run["config"] == asdict(config_from_args(argv)[0]) == {k: v for k, v in final["config"].items()
                                                                 if k != "model"}
    summary = json.loads((tmp_path / "res/training_summary.json").read_text())
    assert {k: run["summary"][k] for k in summary} == summary
    curves = run["history"][-1]["training_curves"]
    assert curves["_type"] == "image-file" and (run["files"] / curves["path"]).is_file()
    assert run["name"] == "mlp add mod 23, seed 0" and run["exit_code"] == 0


@needs_wandb
def test_a_resumed_run_logs_its_whole_history(tmp_path, offline):
    assert train.main(train_args(tmp_path, "--epochs", "12")) == 0  # without --wandb: nothing logged
    assert not offline.exists()
    argv = ["--quiet", "--resume", str(tmp_path / "ckpt/latest.pth"), "--epochs", "20", "--wandb", "grokking-test"]
    assert train.main(argv) == 0
    (run,) = read_runs(offline)
    history = load_checkpoint(tmp_path / "ckpt/model_final.pth")["history"]
    assert history["epoch"] == [5, 10, 12, 15, 20]
    assert_history_equal(run["history"], history)
    assert run["config"]["wandb"] == "grokking-test" and run["config"]["epochs"] == 20


def test_without_wandb_the_flag_exits_2_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError, as when not installed
    assert train.main(train_args(tmp_path, "--epochs", "5", "--wandb", "grokking-test")) == 2
    assert capsys.readouterr().err == MISSING
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "res").exists()
    assert sweep.main(["--primes", "23", "--seeds", "0", "--wandb", "grokking-test", "--db",
                       str(tmp_path / "sweep.sqlite"), "--out", str(tmp_path / "out/sweep.json")]) == 2
    assert capsys.readouterr().err == MISSING
    assert not (tmp_path / "sweep.sqlite").exists()


@pytest.mark.subprocess
def test_wandb_is_imported_only_when_asked_for():
    code = "import sys, train, sweep, core.training; sys.exit('wandb' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_project_is_bookkeeping_set_by_the_flag_only():
    """The project does not change a run's key; sweep.py sets it with --wandb, not --set."""
    base = Config()
    assert database.config_hash(replace(base, wandb="grokking-test")) == database.config_hash(base)
    with pytest.raises(ValueError, match="--wandb"):
        parse_sets(["wandb=grokking-test"])


# --- sweep.py ----------------------------------------------------------------------------------------------

def sweep_args(tmp_path, engine, *extra) -> list[str]:
    return ["--primes", "23", "--seeds", "0", "1", "--set", "d_embed=8", "d_hidden=16", "epochs=12", "eval_every=5",
            "--engine", engine, "--workers", "1", "--db", str(tmp_path / "sweep.sqlite"),
            "--out", str(tmp_path / "out/sweep.json"), *extra]


@needs_wandb
@pytest.mark.parametrize("engine", ["batched", "single"])
def test_sweep_logs_one_run_per_model_trained(tmp_path, offline, engine, capsys):
    assert sweep.main(sweep_args(tmp_path, engine, "--wandb", "grokking-test")) == 0
    conn = database.connect(tmp_path / "sweep.sqlite")
    stored = {r["config"]["seed"]: r for r in database.get_runs(conn)}
    conn.close()
    runs = read_runs(offline)
    assert sorted(run["config"]["seed"] for run in runs) == [0, 1]  # one W&B run per model, none twice
    assert len({run["group"] for run in runs}) == 1 and runs[0]["group"].startswith("sweep-")
    for run in runs:
        record = stored[run["config"]["seed"]]
        assert run["config"] == record["config"] and run["config"]["wandb"] == "grokking-test"
        assert_history_equal(run["history"], record["history"])
        assert {k: run["summary"][k] for k in record["summary"]} == record["summary"]
        assert run["summary"]["config_hash"] == record["config_hash"]
    # the same grid without --wandb: the same keys, so nothing is trained again, nor logged
    assert sweep.main(sweep_args(tmp_path, engine)) == 0
    assert "0 to train" in capsys.readouterr().out
    assert len(read_runs(offline)) == 2
