import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from tqdm import tqdm

from config import ARCH_DEFAULTS, Config, build_parser, config_from_args
from conftest import ROOT, start_training
from core.checkpoint import load_checkpoint, load_model
from core import training
from core.training import (bar_description, evaluate, load_optimizer_state, make_optimizer, norm_stopped_falling,
                           show_stop, snapshot_epochs, stop_rule, train, train_one_epoch)
from core.transformer import Transformer
from dataset import make_data
from model import ToyMLP, sum_squared_weights


def small(tmp_path, **overrides) -> Config:
    base = Config(p=23, d_embed=16, d_hidden=32, epochs=40, eval_every=5, checkpoint_every=10,
                  snapshot_every=10, checkpoint_dir=str(tmp_path / "ckpt"), results_dir=str(tmp_path / "res"))
    return replace(base, **overrides)


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "train.py", "--quiet", *args], cwd=ROOT, capture_output=True,
                          text=True, **kwargs)


def assert_same_weights(path_a, path_b):
    a, b = load_checkpoint(path_a)["model"], load_checkpoint(path_b)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_split_is_independent_of_init_seed(tmp_path):
    train(small(tmp_path / "s0", seed=0, epochs=1), progress=False)
    train(small(tmp_path / "s1", seed=1, epochs=1), progress=False)
    c0 = load_checkpoint(tmp_path / "s0/ckpt/model_final.pth")
    c1 = load_checkpoint(tmp_path / "s1/ckpt/model_final.pth")
    assert torch.equal(c0["train_idx"], c1["train_idx"]) and torch.equal(c0["test_idx"], c1["test_idx"])
    assert not torch.equal(c0["model"]["W_E"], c1["model"]["W_E"])


@pytest.mark.parametrize("batch_size", [0, 64])
def test_resume_is_bit_identical(tmp_path, batch_size):
    train(small(tmp_path / "whole", batch_size=batch_size), progress=False)
    cfg = small(tmp_path / "split", batch_size=batch_size, epochs=17)
    train(cfg, progress=False)
    resume = load_checkpoint(tmp_path / "split/ckpt/latest.pth")
    assert resume["epoch"] == 17
    train(replace(cfg, epochs=40), resume=resume, progress=False)
    assert_same_weights(tmp_path / "whole/ckpt/model_final.pth", tmp_path / "split/ckpt/model_final.pth")


def tiny_transformer(tmp_path, **overrides) -> Config:
    return small(tmp_path, arch="transformer", d_model=16, n_heads=2, d_mlp=24, lr=1e-2, **overrides)


def test_transformer_resume_is_bit_identical(tmp_path):
    train(tiny_transformer(tmp_path / "whole"), progress=False)
    cfg = tiny_transformer(tmp_path / "split", epochs=17)
    train(cfg, progress=False)
    resume = load_checkpoint(tmp_path / "split/ckpt/latest.pth")
    train(replace(cfg, epochs=40), resume=resume, progress=False)
    assert_same_weights(tmp_path / "whole/ckpt/model_final.pth", tmp_path / "split/ckpt/model_final.pth")


def test_transformer_checkpoint_says_its_architecture_and_reloads(tmp_path):
    summary = train(tiny_transformer(tmp_path, epochs=3), progress=False)
    model, ckpt = load_model(tmp_path / "ckpt/model_final.pth")
    assert ckpt["config"]["arch"] == "transformer"
    assert ckpt["config"]["model"] == {"arch": "transformer", "p": 23, "d_model": 16, "n_heads": 2, "d_mlp": 24,
                                       "activation": "relu"}
    assert isinstance(model, Transformer) and model.W_Q.shape == (2, 16, 8)
    assert summary["config"]["arch"] == "transformer"


def test_checkpoints_written_before_the_arch_flag_keep_loading(tmp_path):
    """A ToyMLP checkpoint whose config predates --arch and the transformer's flags resumes and loads."""
    train(small(tmp_path, epochs=5), progress=False)
    latest = load_checkpoint(tmp_path / "ckpt/latest.pth")
    for key in ("arch", "d_model", "n_heads", "d_mlp"):
        del latest["config"][key]
    del latest["config"]["model"]["arch"]
    torch.save(latest, tmp_path / "old.pth")
    model, _ = load_model(tmp_path / "old.pth")
    assert isinstance(model, ToyMLP)
    out = run_cli("--resume", str(tmp_path / "old.pth"), "--epochs", "7")
    assert out.returncode == 0, out.stderr
    assert load_checkpoint(tmp_path / "ckpt/model_final.pth")["epoch"] == 7


def test_arch_defaults_apply_under_explicit_flags():
    cfg, _, _ = config_from_args(["--arch", "transformer", "--lr", "0.5"])
    assert cfg.lr == 0.5  # an explicit flag wins
    for name, value in ARCH_DEFAULTS["transformer"].items():
        if name != "lr":
            assert getattr(cfg, name) == value, name
    assert config_from_args([])[0] == Config()  # ToyMLP's defaults are the dataclass's


def test_float64_loss_keeps_the_gradient_that_float32_rounds_away():
    """A confidently right model (logit 30 at the answer, 0 elsewhere): in float32 the correct class's
    softmax rounds to exactly 1, so its gradient is 0 while the wrong classes' are not (the gradient no
    longer sums to 0). In float64 it is -(sum of the wrong classes' gradients), as it should be, to
    float64's rounding of 1 - p (1e-16 against 5.6e-13: a relative error near 1e-3)."""
    y = torch.arange(7)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        logits = (30.0 * F.one_hot(y, 7).float()).requires_grad_()
        F.cross_entropy(logits.to(dtype), y).backward()
        grads[dtype] = logits.grad
    assert (grads[torch.float32][y, y] == 0).all() and (grads[torch.float32].sum(1) > 0).all()
    wrong = grads[torch.float64].sum(1) - grads[torch.float64][y, y]
    torch.testing.assert_close(grads[torch.float64][y, y], -wrong, rtol=1e-2, atol=0)


def test_train_one_epoch_computes_the_loss_in_the_given_dtype():
    data, cfg = make_data(7, "add", 0.5, 0), Config(p=7, d_embed=4, d_hidden=8)
    a, b, y = data.subset("train")
    torch.manual_seed(0)
    start = ToyMLP(7, 4, 8).state_dict()
    stepped = {}
    for dtype in (torch.float32, torch.float64):
        model = ToyMLP(7, 4, 8)
        model.load_state_dict(start)
        train_one_epoch(model, make_optimizer(model, cfg), data, True, 0, None, dtype)
        stepped[dtype] = model.state_dict()
    by_hand = ToyMLP(7, 4, 8)
    by_hand.load_state_dict(start)
    optimizer = make_optimizer(by_hand, cfg)
    F.cross_entropy(by_hand(a, b).double(), y).backward()
    optimizer.step()
    assert all(torch.equal(w, stepped[torch.float64][k]) for k, w in by_hand.state_dict().items())
    assert not all(torch.equal(w, stepped[torch.float32][k]) for k, w in by_hand.state_dict().items())


def test_checkpoints_snapshots_and_results_are_written(tmp_path):
    summary = train(small(tmp_path), progress=False)
    snaps = sorted((tmp_path / "ckpt/snapshots").glob("epoch_*.pth"))
    epochs = [load_checkpoint(s)["epoch"] for s in snaps]
    assert epochs == sorted(snapshot_epochs(40, 10)) == [0, 1, 2, 3, 5, 7, 10, 20, 30, 40]
    final = load_checkpoint(tmp_path / "ckpt/model_final.pth")
    assert final["epoch"] == 40 and final["history"]["epoch"][-1] == 40 and "optimizer" not in final
    assert "optimizer" in load_checkpoint(tmp_path / "ckpt/latest.pth")
    assert (tmp_path / "res/training_curves.png").stat().st_size > 10_000
    for key in ("memorization_epoch", "grokking_epoch", "final_train_acc", "final_test_acc", "wall_seconds",
                "ms_per_step", "versions", "command", "config"):
        assert key in summary


def test_small_run_memorizes_long_before_it_generalizes(tmp_path):
    """A real grokking run at p = 59 with the default optimiser settings (a few seconds)."""
    s = train(small(tmp_path, p=59, d_embed=128, d_hidden=256, epochs=3000, eval_every=10,
                    stop_after_grok=1.0, checkpoint_every=1000, snapshot_every=1000), progress=False)
    assert s["memorization_epoch"] is not None and s["grokking_epoch"] is not None
    assert s["grokking_epoch"] >= 10 * s["memorization_epoch"]
    assert s["final_test_acc"] >= 0.99


def test_help_lists_every_flag():
    """--help formats (argparse reads % in a help string as a format) and names every Config field's flag."""
    text = build_parser().format_help()
    assert all(f"--{name.replace('_', '-')}" in text for name in Config.__dataclass_fields__)
    assert "99 % test" in text  # a literal % in a help string


BAD_INPUTS = [
    ["--p", "1"], ["--train-frac", "0"], ["--train-frac", "1.5"], ["--op", "div", "--p", "12"],
    ["--lr", "-0.1"], ["--op", "pow"], ["--activation", "tanh"], ["--device", "cuda:7"],
    ["--device", "tpu"], ["--epochs", "0"], ["--batch-size", "-1"], ["--resume", "nowhere.pth"],
    ["--p", "abc"], ["--preset", "fastest"],
    ["--arch", "rnn"], ["--arch", "transformer", "--n-heads", "3"], ["--arch", "transformer", "--d-mlp", "0"],
    ["--arch", "transformer", "--d-model", "0"], ["--arch", "transformer", "--n-heads", "0"],
    ["--arch", "transformer", "--d-hidden", "64"], ["--d-model", "64"], ["--loss-dtype", "float16"],
    ["--optimizer", "sgd"], ["--grad-filter", "lowpass"], ["--loss", "mse"], ["--filter-alpha", "1"],
    ["--filter-alpha", "-0.1"], ["--filter-lamb", "-1"], ["--filter-window", "0"], ["--weight-norm", "0"],
    ["--weight-norm", "-2"],
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=" ".join)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args):
    out = run_cli(*args, "--checkpoint-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    assert "error" in out.stderr.lower()
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()
    assert not out.stdout


def test_foreign_resume_file_exits_2(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pth")
    out = run_cli("--resume", str(tmp_path / "foreign.pth"), "--checkpoint-dir", str(tmp_path / "c"))
    assert out.returncode == 2 and "not a checkpoint written by" in out.stderr
    assert not (tmp_path / "c").exists()


def test_resume_refuses_to_change_the_run(tmp_path):
    train(small(tmp_path, epochs=5), progress=False)
    out = run_cli("--resume", str(tmp_path / "ckpt/latest.pth"), "--lr", "0.5", "--epochs", "10")
    assert out.returncode == 2 and "--lr cannot change" in out.stderr


@pytest.mark.parametrize("flags", [["--optimizer", "muon"], ["--grad-filter", "ema"], ["--orthograd"],
                                   ["--loss", "stablemax"], ["--weight-norm", "0.5"], ["--filter-lamb", "5"]])
def test_resume_refuses_another_method(tmp_path, flags):
    train(small(tmp_path, epochs=5), progress=False)
    out = run_cli("--resume", str(tmp_path / "ckpt/latest.pth"), *flags, "--epochs", "10")
    assert out.returncode == 2 and out.stderr.startswith(f"error: {flags[0]} cannot change") and not out.stdout
    assert load_checkpoint(tmp_path / "ckpt/latest.pth")["epoch"] == 5


@pytest.mark.parametrize("arch, other", [("mlp", "transformer"), ("transformer", "mlp")])
def test_resume_refuses_to_change_the_architecture(tmp_path, arch, other):
    train((small if arch == "mlp" else tiny_transformer)(tmp_path, epochs=5), progress=False)
    out = run_cli("--resume", str(tmp_path / "ckpt/latest.pth"), "--arch", other, "--epochs", "10")
    assert out.returncode == 2 and out.stderr.startswith("error: --arch cannot change") and not out.stdout
    assert load_checkpoint(tmp_path / "ckpt/latest.pth")["epoch"] == 5


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    out = run_cli("--p", "23", "--lr", "1e30", "--epochs", "50", "--checkpoint-every", "1",
                  "--checkpoint-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 1 and "loss became" in out.stderr
    assert not (tmp_path / "c/model_final.pth").exists()
    latest = load_checkpoint(tmp_path / "c/latest.pth")
    assert all(torch.isfinite(v).all() for v in latest["model"].values())


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    ckpt = tmp_path / "c"
    proc = start_training(["--p", "23", "--epochs", "100000", "--stop-after-grok", "0", "--checkpoint-dir", str(ckpt),
                           "--results-dir", str(tmp_path / "r")], ckpt / "snapshots/epoch_00050.pth")
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in stdout
    latest = load_checkpoint(ckpt / "latest.pth")
    assert latest["epoch"] >= 50 and "optimizer" in latest


def test_a_cuda_graph_runs_optimizer_state_resumes_on_a_cpu():
    """A checkpoint of a CUDA-graph run holds AdamW with capturable=True (its step counts on the GPU);
    loading it keeps this optimizer's own setting, so the CPU step works and continues the same state."""
    cfg = Config(p=23, d_embed=8, d_hidden=16)
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed)
    torch.manual_seed(0)
    model = ToyMLP(cfg.p, cfg.d_embed, cfg.d_hidden)
    optimizer = make_optimizer(model, cfg)
    train_one_epoch(model, optimizer, data, True, 0, None)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        group["capturable"] = True  # as a CUDA-graph run saves it
    plain = make_optimizer(model, cfg)
    plain.load_state_dict(saved)
    with pytest.raises(Exception):  # torch's own loader takes the flag along, and a capturable CPU step fails
        train_one_epoch(model, plain, data, True, 0, None)
    resumed = make_optimizer(model, cfg)
    load_optimizer_state(resumed, saved)
    assert not resumed.param_groups[0]["capturable"]
    train_one_epoch(model, resumed, data, True, 0, None)
    assert all(int(s["step"]) == 2 for s in resumed.state.values())


def test_the_bar_counts_to_the_stop_rule_once_the_run_groks():
    bar = tqdm(total=None, disable=True)
    show_stop(bar, Config(), None)
    assert bar.total is None  # not grokked yet: the stop epoch is unknown
    show_stop(bar, Config(), 390)
    assert bar.total == 1170 and "3 x 390 = 1170" in bar.desc
    show_stop(bar, Config(), 500)  # set once, at the grokking epoch
    assert bar.total == 1170
    bar = tqdm(total=None, disable=True)
    show_stop(bar, Config(epochs=1000, stop_after_grok=2.5), 401)
    assert bar.total == 1000  # --epochs comes first (2.5 x 401 = 1002.5)
    bar = tqdm(total=10_000, disable=True)
    show_stop(bar, Config(stop_after_grok=0), 390)
    assert bar.total == 10_000  # no stop rule: the bar counts to --epochs


def test_the_bar_names_the_stop_rule():
    assert bar_description(Config(stop_after_grok=0)) == "training"
    assert bar_description(Config()) == "training (stops at 3 x the grokking epoch)"
    cleanup = Config(stop_after_grok=2, stop_at_cleanup_end=True)
    assert bar_description(cleanup) == "training (stops at 2 x the grokking epoch or where the clean-up ends)"
    assert (bar_description(cleanup, 390, 780)
            == "training (grokked at 390, stops at 2 x 390 = 780 or where the clean-up ends)")


def test_the_stop_rules_by_hand():
    assert stop_rule(Config(), None, 5000, True) == ""  # not grokked: nothing stops the run but --epochs
    assert stop_rule(Config(), 390, 1169) == "" and stop_rule(Config(), 390, 1170) == "reached 3 x the grokking epoch"
    assert stop_rule(Config(stop_after_grok=0), 390, 5000) == ""
    cleanup = Config(stop_after_grok=2.0, stop_at_cleanup_end=True)
    assert stop_rule(cleanup, 390, 575, True) == "the weight norm stopped falling after grokking (the clean-up ended)"
    assert stop_rule(cleanup, 390, 575, False) == "" and stop_rule(Config(), 390, 575, True) == ""
    assert stop_rule(cleanup, 390, 390, True) == ""  # at the grokking epoch itself: not after it
    assert stop_rule(cleanup, 390, 780, False) == "reached 2 x the grokking epoch"


def test_the_weight_norm_stops_falling_at_a_snapshot_read_from_the_evaluations():
    snapshots = {0, 10, 20, 30}
    history = {"epoch": [5, 10, 15, 20], "weight_norm": [9.0, 8.0, 7.0, 8.0]}
    assert norm_stopped_falling(history, snapshots, 20)  # 8 at 20 against 8 at 10: no lower
    # 7.5 against 8 at snapshot 10: still falling (the rise since the evaluation at 15 is not a snapshot's)
    assert not norm_stopped_falling(history | {"weight_norm": [9.0, 8.0, 7.0, 7.5]}, snapshots, 20)
    assert norm_stopped_falling(history | {"weight_norm": [9.0, 8.0, 7.0, 7.5]}, {0, 10, 15, 20}, 20)  # vs 7 at 15
    assert not norm_stopped_falling(history, snapshots, 15)  # 15 is no snapshot
    assert not norm_stopped_falling(history, {0, 20}, 20)  # the snapshot before (0) was not evaluated
    assert not norm_stopped_falling({"epoch": [10, 15], "weight_norm": [1.0, 2.0]}, snapshots, 20)  # 20 not evaluated


def test_a_run_that_stops_where_the_clean_up_ends_is_finished(tmp_path):
    """A real run at p = 59 (as test_small_run_memorizes_long_before_it_generalizes) with the clean-up stop: it
    stops at a snapshot after grokking whose weight norm (replayed from the snapshot files) is no lower than the
    snapshot's before, every earlier snapshot after grokking had a falling norm, and train.py will not resume it."""
    cfg = small(tmp_path, p=59, d_embed=128, d_hidden=256, epochs=3000, eval_every=5, stop_after_grok=3.0,
                stop_at_cleanup_end=True, checkpoint_every=1000, snapshot_every=25)
    s = train(cfg, progress=False, plot=False)
    epoch, grokked = s["epochs_run"], s["grokking_epoch"]
    assert s["stopped"] == "the weight norm stopped falling after grokking (the clean-up ended)" and epoch < 3 * grokked
    snapshots = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "ckpt" / "snapshots").glob("epoch_*.pth"))
    folder = tmp_path / "ckpt" / "snapshots"
    norms = [sum_squared_weights(load_model(folder / f"epoch_{e:05d}.pth")[0]) for e in snapshots]
    assert snapshots[-1] == epoch and epoch > grokked and norms[-1] >= norms[-2]
    assert all(norms[i] < norms[i - 1] for i, e in enumerate(snapshots) if grokked < e < epoch)
    refused = run_cli("--resume", str(tmp_path / "ckpt" / "latest.pth"))
    assert refused.returncode == 2 and "the run is finished" in refused.stderr and "clean-up ended" in refused.stderr


def test_evaluation_in_chunks_gives_the_numbers_of_one_piece(monkeypatch):
    data = make_data(113, "add", 0.3, 598)
    torch.manual_seed(0)
    model = ToyMLP(113, 32, 64)
    chunked = evaluate(model, data)
    assert training.eval_rows(113, torch.device("cpu")) < len(data.train_idx)  # two chunks or more per split
    monkeypatch.setattr(training, "CPU_EVAL_LOGITS", 2**30)
    assert evaluate(model, data) == chunked
