"""The failure modes an outside review found (issue 8): each test failed before its fix."""
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

import plots
from analysis import fourier
from analysis import summary as summary_module
from analysis.circuit import Grid
from analysis.summary import analyze, findings, summarize
from config import Config
from conftest import ROOT, start_training
from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.training import train
from dataset import make_data
from model import ToyMLP

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def small(folder, **overrides) -> Config:
    base = Config(p=23, d_embed=16, d_hidden=32, epochs=12, eval_every=2, checkpoint_every=4, snapshot_every=4,
                  checkpoint_dir=str(folder / "ckpt"), results_dir=str(folder / "res"))
    return replace(base, **overrides)


def run_script(script, *args):
    return subprocess.run([sys.executable, script, "--quiet", *args], cwd=ROOT, capture_output=True, text=True)


def one_error_line(out):
    return out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("other", [{"p": 13}, {"seed": 1}], ids=["other p", "same p, other run"])
def test_progress_refuses_snapshots_of_another_run(tmp_path, other):
    """An interrupted new run in the same folder leaves the old model_final.pth beside new snapshots."""
    train(small(tmp_path / "a"), progress=False)
    train(small(tmp_path / "b", **other), progress=False)
    snapshots = tmp_path / "a/ckpt/snapshots"
    shutil.rmtree(snapshots)
    shutil.copytree(tmp_path / "b/ckpt/snapshots", snapshots)
    out = run_script("progress.py", "--checkpoint-dir", str(tmp_path / "a/ckpt"), "--results-dir", str(tmp_path / "r"))
    assert one_error_line(out), out.stderr
    assert "belongs to another run" in out.stderr and "run id" in out.stderr
    assert not (tmp_path / "r").exists()


def test_every_file_of_a_run_carries_its_run_id(tmp_path):
    cfg = small(tmp_path)
    summary = train(cfg, progress=False)
    ids = {load_checkpoint(path).get("run_id") for path in (tmp_path / "ckpt").rglob("*.pth")}
    assert ids == {summary["run_id"]} and len(summary["run_id"]) >= 8
    resumed = train(replace(cfg, epochs=16), resume=load_checkpoint(tmp_path / "ckpt/latest.pth"), progress=False)
    assert resumed["run_id"] == summary["run_id"]  # a resumed run is the same run
    other = train(small(tmp_path / "other"), progress=False)
    assert other["run_id"] != summary["run_id"]


@pytest.mark.subprocess
@pytest.mark.parametrize("script, flag", [("train.py", "--results-dir"), ("train.py", "--checkpoint-dir"),
                                          ("interpretability.py", "--results-dir"), ("progress.py", "--results-dir")])
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path, script, flag):
    train(small(tmp_path / "run", epochs=4), progress=False)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    ckpt = tmp_path / "run/ckpt"
    args = {"train.py": ["--p", "23", "--checkpoint-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")],
            "interpretability.py": ["--checkpoint", str(ckpt / "model_final.pth"), "--results-dir", str(tmp_path / "r")],
            "progress.py": ["--checkpoint-dir", str(ckpt), "--results-dir", str(tmp_path / "r")]}[script]
    args[args.index(flag) + 1] = str(blocked / "sub")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = run_script(script, *args)
    assert one_error_line(out), out.stderr
    assert "is a file, not a folder" in out.stderr and not out.stdout
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.subprocess
@pytest.mark.skipif(AS_ROOT, reason="root may write anywhere, so a read-only folder cannot refuse it")
def test_an_output_folder_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = run_script("train.py", "--p", "23", "--results-dir", str(locked / "r"), "--checkpoint-dir", str(tmp_path / "c"))
    assert one_error_line(out) and "no permission to write" in out.stderr
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o000)  # cannot even be entered
    out = run_script("train.py", "--p", "23", "--results-dir", str(closed / "a/b"), "--checkpoint-dir", str(tmp_path / "c"))
    assert one_error_line(out) and "no permission" in out.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.subprocess
def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    """A run that stopped at stop_after_grok x its grokking epoch is finished: resuming it would train
    one more epoch and overwrite model_final.pth."""
    train(small(tmp_path, epochs=12), progress=False)
    latest = tmp_path / "ckpt/latest.pth"
    ckpt = load_checkpoint(latest)
    history = ckpt["history"]
    history["test_acc"] = [1.0 if e >= 4 else 0.0 for e in history["epoch"]]  # as if it grokked at epoch 4
    save_checkpoint(latest, **{k: v for k, v in ckpt.items() if k != "format"})
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    out = run_script("train.py", "--resume", str(latest), "--epochs", "1000")
    assert one_error_line(out), out.stderr
    assert "finished" in out.stderr and "grokked at epoch 4" in out.stderr and "--stop-after-grok 0" in out.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


@pytest.mark.subprocess
def test_second_ctrl_c_exits_130_with_one_line(tmp_path):
    ckpt = tmp_path / "c"
    # minibatches of 1 make an epoch 3,830 steps long (seconds), so the second Ctrl-C comes within the
    # epoch that the first one lets finish. The first is sent half a second into epoch 2: sent while
    # epoch 1's checkpoints were still being written, it once stopped the run at the end of epoch 1,
    # before the second arrived (CI, stop 17)
    proc = start_training(["--batch-size", "1", "--epochs", "100", "--checkpoint-every", "1", "--checkpoint-dir",
                           str(ckpt), "--results-dir", str(tmp_path / "r")], ckpt / "latest.pth", timeout=300)
    assert (ckpt / "latest.pth").exists(), "epoch 1 did not end within 300 s"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and stderr.strip().count("\n") == 0, stderr
    written = load_checkpoint(ckpt / "latest.pth")["epoch"]
    assert f"resume from epoch {written} with: python train.py --resume {ckpt / 'latest.pth'}" in stderr


@pytest.mark.subprocess
def test_a_folder_given_as_checkpoint_says_so(tmp_path):
    out = run_script("interpretability.py", "--checkpoint", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert one_error_line(out)
    assert "is a folder, not a checkpoint file" in out.stderr and "model_final.pth" in out.stderr
    out = run_script("train.py", "--resume", str(tmp_path), "--checkpoint-dir", str(tmp_path / "c"))
    assert one_error_line(out) and "latest.pth to resume" in out.stderr


@pytest.mark.subprocess
def test_progress_takes_the_run_folder_given_either_way(tmp_path):
    train(small(tmp_path), progress=False)
    ckpt = tmp_path / "ckpt"
    out = run_script("interpretability.py", "--progress", "--checkpoint", str(ckpt), "--results-dir", str(tmp_path / "a"))
    assert out.returncode == 0 and (tmp_path / "a/progress_measures.json").is_file(), out.stderr
    out = run_script("progress.py", "--checkpoint-dir", str(ckpt / "model_final.pth"), "--results-dir", str(tmp_path / "b"))
    assert one_error_line(out) and "is a file: pass the folder" in out.stderr and not (tmp_path / "b").exists()


@pytest.mark.subprocess
def test_sweep_checks_its_output_before_training(tmp_path):
    (tmp_path / "blocked").write_text("a file")
    out = subprocess.run([sys.executable, "sweep.py", "--seeds", "0", "--out", str(tmp_path / "blocked/sweep.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "is a file, not a folder" in out.stderr and "sweep:" not in out.stderr


@pytest.mark.parametrize("p, expected", [(5, "not applicable"), (7, "none")])
def test_small_p_says_the_rule_does_not_apply(p, expected):
    """p = 5 has 2 frequencies, too few for a median rule; p = 7 has 3, and a random model shows none."""
    torch.manual_seed(0)
    model = ToyMLP(p, 8, 16).eval()
    data = make_data(p, "add", 0.5, 0)
    with torch.no_grad():
        result = analyze(model, Grid(p, "add", data.train_idx, data.test_idx), draws=2)
    summary = summarize(result, "none.pth", {"p": p, "op": "add"})
    assert summary["structure"] == expected
    text = " ".join(findings(summary))
    assert ("not applied" in text) == (expected == "not applicable")
    assert ("memorizing" in text) == (expected == "none")
    assert (f"Z_{p} has only {p // 2} frequencies" in text) == (expected == "not applicable")
    del summary["basis"]  # a summary written before the basis was recorded reads as Z_p
    assert " ".join(findings(summary)) == text


def test_findings_name_the_combination_of_the_op():
    summary = {"losses": {"test": {"acc": 1.0}, "train": {"acc": 1.0}, "all": {"loss": 1e-6}},
               "config": {"p": 59, "op": "sub"}, "structure": "clear", "key_frequencies": [4],
               "key_frequency_power_fraction": 0.99, "neurons_per_key_frequency": {4: 8},
               "logit_variance_explained": 0.99, "restricted_loss": 1e-6, "excluded_loss": 4.0,
               "train_loss": 1e-6, "circuit_size": 8}
    assert "cos(w_k(a-b-c))" in " ".join(findings(summary))
    summary["config"]["op"] = "add"
    assert "cos(w_k(a+b-c))" in " ".join(findings(summary))


def test_findings_spell_out_attention_residual_clock_or_pizza_and_components():
    """The optional findings, each exactly as printed, from a summary written by hand."""
    summary = {"losses": {"test": {"acc": 1.0}, "train": {"acc": 1.0}, "all": {"loss": 1e-6}},
               "config": {"p": 59, "op": "add"}, "structure": "none", "key_frequencies": [], "circuit_size": 8,
               "attention": [{"head": 0, "mean_to_a": 0.9, "mean_to_b": 0.05, "acc": 0.5},
                             {"head": 1, "mean_to_a": 0.1, "mean_to_b": 0.8, "acc": 0.25}],
               "residual_key_directions": {"key_variance_share": 0.75, "keep_key_acc": 1.0, "keep_key_loss": 0.01,
                                           "remove_key_acc": 0.02, "remove_key_loss": 4.5},
               "clock_pizza": {"gradient_symmetricity": 0.5, "distance_irrelevance": 0.7, "verdict": "mixed",
                               "thresholds": {"pizza_if_symmetricity_above": 0.98, "pizza_if_irrelevance_below": 0.6}},
               "component_ablations": [{"component": "head 0", "mean_acc": 0.5, "mean_loss": 2.0},
                                       {"component": "mlp", "mean_acc": 0.01, "mean_loss": 6.0},
                                       {"component": "head 1", "mean_acc": 0.25, "mean_loss": 3.0}]}
    lines = findings(summary)
    assert lines[2:] == [
        "Attention from '=' (averaged over all pairs): head 0: 90% to a, 5% to b, mean-ablated acc 50.0%; "
        "head 1: 10% to a, 80% to b, mean-ablated acc 25.0%.",
        "Residual stream at '=': the key-frequency terms hold 75% of its variance; keeping only them gives accuracy "
        "100.0% (loss 0.01), removing them 2.0% (loss 4.5).",
        "Clock or pizza (Zhong et al. 2023): gradient symmetricity 0.500, distance irrelevance 0.700: mixed.",
        "Component ablations: mean-ablating mlp hurts most (accuracy 1.0%, loss 6); the whole table is in the summary "
        "and component_ablation.png.",
        "Circuit size: 8 neurons kept (the rest mean-ablated) retain >= 99% accuracy."]
    summary["clock_pizza"]["verdict"] = "pizza"
    assert findings(summary)[4].endswith(": pizza (pizza if s_g > 0.98 and q < 0.6, clock if neither).")
    for key in ("attention", "residual_key_directions", "clock_pizza", "component_ablations"):
        del summary[key]
    assert findings(summary)[2:] == [lines[-1]]


def test_spectrum_plot_draws_the_rules_threshold(tmp_path, monkeypatch):
    """For an even number of frequencies the median is the lower middle value; the line must sit where
    the rule's threshold is (by hand here: 10 x the lower middle value of 1..6, i.e. 30, over the total)."""
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    power = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 600.0], dtype=torch.float64)
    assert fourier.key_frequencies(power) == [6]
    plots.plot_fourier_spectrum(list(range(1, 7)), power.numpy(), power.numpy(), [6], fourier.key_threshold(power),
                                tmp_path / "s.png")
    line = [ln for ln in drawn["fig"].axes[1].lines if "threshold" in ln.get_label()][0]
    assert line.get_ydata()[0] == pytest.approx(30.0 / 615.0)


def test_the_analysis_memory_estimate_and_its_refusal(monkeypatch):
    """analysis_bytes: three float32 (p*p, neurons) activation grids plus 16 pieces of CHUNK_BYTES; above 80% of
    the available memory the analysis is refused in one sentence that gives both figures."""
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 2**30)
    model = ToyMLP(7, 4, 10)  # readout (10 neurons, 7 logits)
    need = 3 * 4 * 7 * 7 * 10 + 16 * 2**30
    assert summary_module.analysis_bytes(model) == need
    fits = need * 5 // 4  # need is exactly 80 % of it (and 0.8 * fits is exact in floating point)
    assert 0.8 * fits == need
    monkeypatch.setattr(summary_module, "available_bytes", lambda device: fits)
    summary_module.check_analysis_memory(model)
    monkeypatch.setattr(summary_module, "available_bytes", lambda device: fits - 8)
    with pytest.raises(CheckpointError) as refused:
        summary_module.check_analysis_memory(model)
    assert str(refused.value) == "analysing this p = 7 model needs about 16.0 GB and this machine has 20.0 GB available"


def test_analyze_checkpoint_defaults(tmp_path, monkeypatch, capsys):
    """Called with nothing: checkpoints/model_final.pth, 5 random draws per k, no progress bar."""
    train(Config(p=23, d_embed=8, d_hidden=16, epochs=3, checkpoint_dir=str(tmp_path / "checkpoints"),
                 results_dir=str(tmp_path / "results")), progress=False)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    default = summary_module.analyze_checkpoint()
    assert capsys.readouterr().err == ""
    assert default["summary"]["checkpoint"] == "checkpoints/model_final.pth" and default["checkpoint"]["epoch"] == 3
    assert default["summary"]["basis"]["pairs"] == "all pairs"
    summary_module.analyze_checkpoint(progress=True)
    assert "single-neuron ablations" in capsys.readouterr().err
    five, six = (summary_module.analyze_checkpoint("checkpoints/model_final.pth", draws)["result"]["ablation_curves"]
                 for draws in (5, 6))
    assert default["result"]["ablation_curves"] == five != six
    with torch.no_grad():  # analyze's own default is the same 5 draws
        assert analyze(default["model"], default["grid"])["ablation_curves"] == five
