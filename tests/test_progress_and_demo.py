import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from dataset import make_data
from handbuilt import handbuilt_model
from interpretability import Grid
from model import ToyMLP
from progress import phase_boundaries, snapshot_measures

P, KEYS = 59, [4, 11, 23]


def test_measures_on_the_handbuilt_network():
    model, _ = handbuilt_model(P, KEYS)
    data = make_data(P, "add", 0.3, 0)
    m = snapshot_measures(model, Grid(P, "add", data.train_idx, data.test_idx), KEYS)
    assert m["train_acc"] == m["test_acc"] == 1.0
    assert m["restricted_loss"] < 1e-6
    assert m["excluded_loss"] == pytest.approx(math.log(P), rel=1e-3)
    # W_E holds cos/sin of 3 of the 29 frequencies with equal power: Gini = 1 - 3/29
    assert m["fourier_gini"] == pytest.approx(1 - 3 / 29, abs=1e-9)


def test_weight_norm_by_hand():
    torch.manual_seed(0)
    model = ToyMLP(7, 3, 5)
    by_hand = sum(float(x) ** 2 for t in (model.W_E, model.W_in, model.b_in, model.W_U, model.b_U)
                  for x in t.detach().flatten())
    data = make_data(7, "add", 0.5, 0)
    m = snapshot_measures(model, Grid(7, "add", data.train_idx, data.test_idx), [])
    assert m["weight_norm"] == pytest.approx(by_hand, rel=1e-9)


def test_phase_rule_on_synthetic_curves():
    epochs = list(range(0, 101, 5))
    train_acc = [min(1.0, e / 20) for e in epochs]  # reaches 99% at epoch 20
    test_loss = [4 + e / 4 if e <= 40 else max(0.01, 14 - (e - 40) / 2) for e in epochs]  # peak 14 at 40
    phases = phase_boundaries(epochs, train_acc, test_loss)
    # after epoch 40 the loss falls by 2.5 per 5 epochs: 14, 11.5, 9, 6.5 (epoch 55) < 7
    assert phases == {"memorization_end": 20, "cleanup_start": 55}
    assert phase_boundaries(epochs, [0.5] * len(epochs), test_loss) == {"memorization_end": None,
                                                                       "cleanup_start": None}
    assert phase_boundaries(epochs, train_acc, [5.0] * len(epochs))["cleanup_start"] is None


def test_setup_script_passes_and_fails_on_unwritable_folder(tmp_path):
    ok = subprocess.run([sys.executable, "test_setup.py", "--checkpoint-dir", str(tmp_path / "c"),
                         "--results-dir", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    assert "✗" not in ok.stdout and ok.stdout.count("✓") == 11
    (tmp_path / "blocked").write_text("a file where a folder should be")
    bad = subprocess.run([sys.executable, "test_setup.py", "--results-dir", str(tmp_path / "blocked")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "✗ results folder: cannot write" in bad.stdout


def test_quick_start_runs_end_to_end_and_groks(tmp_path):
    ckpt, res = tmp_path / "c", tmp_path / "r"
    out = subprocess.run([sys.executable, "example_quick_start.py", "--quiet", "--p", "59",
                          "--checkpoint-dir", str(ckpt), "--results-dir", str(res)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "grokking" in out.stdout and "Key frequencies" in out.stdout
    training = json.loads((res / "training_summary.json").read_text())
    assert training["grokking_epoch"] >= 10 * training["memorization_epoch"]
    replay = json.loads((res / "progress_measures.json").read_text())
    phases = replay["phases"]
    assert phases["memorization_end"] == training["memorization_epoch"]
    assert phases["memorization_end"] < phases["cleanup_start"] <= training["grokking_epoch"]
    # the circuit's signature (Nanda et al.): at the end the key directions alone still predict well,
    # while the training set cannot be fitted without them
    assert replay["series"]["restricted_loss"][-1] < 0.1 < replay["series"]["excluded_loss"][-1]
    for name in ("training_curves", "progress_measures", "activation_heatmap", "ablation_curves",
                 "fourier_spectrum", "neuron_clusters", "frequency_ablation", "neuron_ranking"):
        assert (res / f"{name}.png").is_file()
    again = subprocess.run([sys.executable, "interpretability.py", "--progress", "--quiet", "--checkpoint",
                            str(ckpt / "model_final.pth"), "--results-dir", str(tmp_path / "r2")],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "Phases: memorization" in again.stdout
