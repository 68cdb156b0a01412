"""sweep.py's engines and backends give one table: batched or single engine, one process or a pool, Ray."""
import os
import shutil
import socket
import subprocess
import sys

import pytest

import sweep
from conftest import ROOT
from sweeps import database

# Tiny real runs (p = 11, 30 full-batch epochs) over two weight decays and two seeds.
GRID = ["--primes", "11", "--seeds", "0", "1", "--set", "d_embed=8", "d_hidden=16", "epochs=30",
        "weight_decay=0.5,1", "eval_every=3"]


def on_loopback_only(argv: list[str]) -> int:
    """Run `python sweep.py argv` in a new network namespace that has only the loopback interface, so
    every port Ray opens (it listens on all interfaces) is reachable from this machine only."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("isolating Ray's ports needs root with unshare and ip (CI runs as root)")
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, "sweep.py", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600).returncode


def table(tmp_path, name, *extra, run=sweep.main) -> dict:
    """Run the grid into its own database; {config_hash: (run regime, summary without timings, history)}."""
    db = tmp_path / f"{name}.sqlite"
    assert run([*GRID, "--db", str(db), "--out", str(tmp_path / name / "sweep.json"), *extra]) == 0
    conn = database.connect(db, create=False)
    try:
        runs = database.get_runs(conn)
    finally:
        conn.close()
    timing = ("wall_seconds", "ms_per_step", "seconds_to_grok")
    return {r["config_hash"]: (r["regime"], {k: v for k, v in r["summary"].items() if k not in timing},
                               {k: v for k, v in r["history"].items() if k != "seconds"}) for r in runs}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return table(tmp_path_factory.mktemp("ref"), "ref", "--workers", "1", "--engine", "single")


def test_the_batched_engine_gives_train_py_s_table(tmp_path, reference):
    mine = table(tmp_path, "batched", "--workers", "1", "--engine", "batched", "--chunk", "4")
    assert len(mine) == 4 and mine == reference


def test_a_pool_of_worker_processes_gives_the_same_table(tmp_path, reference):
    assert table(tmp_path, "pool", "--workers", "2", "--chunk", "1") == reference


def test_the_ray_backend_gives_the_same_table(tmp_path, reference):
    pytest.importorskip("ray")  # requirements-cluster.txt; .ci/run installs it
    # A local Ray instance (sweeps/runner.py starts and stops it), two chunks of two models, in a network
    # namespace with nothing but loopback.
    assert table(tmp_path, "ray", "--backend", "ray", "--chunk", "2", run=on_loopback_only) == reference


def test_an_unreachable_ray_address_is_one_error_and_the_database_stays_as_it_was(tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "sweep.sqlite"
    db.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([*GRID, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--db", str(db)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot reach a Ray head node at 127.0.0.1:{port}" in err and "Traceback" not in err
    assert db.read_bytes() == b""


@pytest.mark.parametrize("args, message", [(["--address", "x:1"], "--address needs --backend ray"),
                                           (["--chunk", "-1"], "--chunk and --workers must be >= 0"),
                                           (["--backend", "ray", "--address", "nohost"], "is not HOST:PORT")])
def test_bad_backend_settings_exit_2(tmp_path, capsys, args, message):
    if "--backend" in args:
        pytest.importorskip("ray")
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([*GRID, *args, "--db", str(tmp_path / "s.sqlite")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()
