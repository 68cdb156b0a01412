"""The accelerators in both engines (each trains, resumes bit for bit, and the batched engine follows train.py) and
the lab, accelerators.py (its choice of the best configuration, its files, a rerun that trains nothing). Their
update rules on hand-computed answers: tests/test_optim.py."""
from dataclasses import replace

import pytest
import torch
from test_batched import SMALL, solo_weights
from test_optim import OPTIONS
from test_train import assert_same_weights, small

from accelerators import METHODS, LabConfig, best, counted_steps, median_steps, run
from config import LOSS_DTYPES, Config
from core.checkpoint import load_checkpoint
from core.training import train
from sweeps import database
from sweeps.batched import Stack, check_batchable


@pytest.mark.parametrize("name", OPTIONS)
def test_each_method_resumes_bit_identically(tmp_path, name):
    train(small(tmp_path / "whole", **OPTIONS[name]), progress=False)
    cfg = small(tmp_path / "split", epochs=17, **OPTIONS[name])
    train(cfg, progress=False)
    resume = load_checkpoint(tmp_path / "split/ckpt/latest.pth")
    assert resume["config"] | OPTIONS[name] == resume["config"]
    train(replace(cfg, epochs=40), resume=resume, progress=False)
    assert_same_weights(tmp_path / "whole/ckpt/model_final.pth", tmp_path / "split/ckpt/model_final.pth")


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_the_batched_engine_follows_train_py_for_every_method(arch):
    """Two models per method with different settings, each batch one method (the kind is in BATCH_KEY). ToyMLP
    bit for bit; the transformer within 1e-5 after 12 steps (its vmap offsets round differently, as for AdamW)."""
    base = Config(arch=arch, **SMALL[arch])
    for name, overrides in OPTIONS.items():
        first = replace(base, **overrides)
        second = replace(first, seed=1, lr=first.lr / 2, filter_lamb=1.0, filter_alpha=0.9,
                         weight_norm=first.weight_norm and 0.8)
        stack = Stack([first, second], "cpu")
        for _ in range(12):
            stack.train_step(LOSS_DTYPES[base.loss_dtype], first.loss)
        for row, i in enumerate(stack.index):
            solo = solo_weights([first, second][i], 12)
            for param, w in zip(stack.names, stack.params):
                if arch == "mlp":
                    assert torch.equal(w[row], solo[param]), (name, i, param, (w[row] - solo[param]).abs().max())
                else:
                    torch.testing.assert_close(w[row], solo[param], atol=1e-5, rtol=0, msg=f"{name} {param}")


def test_one_batch_shares_the_kind_of_method():
    with pytest.raises(ValueError, match="optimizer"):
        check_batchable([Config(), Config(optimizer="muon")])
    check_batchable([Config(), Config(orthograd=True, filter_lamb=5.0, weight_norm=0.5)])


def row(grokked, regime="grokking"):
    return {"grokking_epoch": grokked, "regime": regime}


def test_the_lab_picks_the_fewest_median_steps_and_for_textbook_only_configurations_that_grok():
    fast, slow, never = Config(lr=0.1), Config(lr=0.03), Config(lr=0.01)
    scored = [(slow, [row(400), row(500)]), (fast, [row(100, "comprehension"), row(120)]),
              (never, [row(None, "memorization"), row(None, "memorization")])]
    assert best(scored, "fastest") is fast
    assert best(scored, "textbook") is slow
    assert best([(never, scored[2][1])], "fastest") is None
    mixed = [row(100, "comprehension"), row(120), row(130)]  # its counted median (130) beats 450, but one seed
    assert best([(fast, mixed), (slow, scored[0][1])], "textbook") is slow  # did not grok: not a textbook setting
    assert median_steps([100, None, 300]) == 300 and median_steps([100, None, None]) is None


def test_the_textbook_board_counts_only_the_seeds_that_grokked():
    rows = [row(100, "comprehension"), row(300), row(None, "memorization"), row(250)]
    assert counted_steps(rows, "fastest") == [100, 300, None, 250]
    assert counted_steps(rows, "textbook") == [None, 300, None, 250]


def test_the_lab_writes_both_leaderboards_for_every_method_and_trains_nothing_twice(tmp_path, capsys):
    lab = LabConfig(p=31, grid=1, tune_seeds=1, seeds=2, epochs=300, workers=1, db=str(tmp_path / "lab.sqlite"),
                    results_dir=str(tmp_path / "res"), analyze=False)
    out = run(lab)
    for rows in out["boards"].values():
        assert sorted(r["method"] for r in rows) == sorted(METHODS)
        medians = [r["median"] for r in rows if r["median"] is not None]
        assert medians == sorted(medians)  # fastest first
        assert all(len(r["steps"]) == 2 for r in rows if r["config"] is not None)
    stored = database.get_runs(database.connect(lab.db), history=False)
    assert len(stored) >= len(METHODS)  # the tuning runs at least, one per method
    for name in ("accelerators.md", "accelerators.json", "accelerators.png"):
        assert (tmp_path / "res" / name).stat().st_size > 0
    assert "fastest textbook grokking" in (tmp_path / "res/accelerators.md").read_text()
    capsys.readouterr()
    run(lab)
    assert "0 to train" in capsys.readouterr().out and len(database.get_runs(database.connect(lab.db))) == len(stored)
