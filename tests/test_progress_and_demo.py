import json
import math
import subprocess
import sys

import pytest
import torch

from analysis.circuit import Grid
from analysis.progress_measures import ONSETS, describe, onsets, snapshot_measures, training_phases
from conftest import ROOT
from dataset import make_data
from handbuilt import handbuilt_model
from model import ToyMLP

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
    # the power per frequency (report.py's slider): each key's cos and sin columns, p/2 each squared over a
    # (so (p/2)^2 * 2 / p = p/2 per column in the orthonormal basis, p for the pair), the rest 0
    power = m["embedding_power"]
    assert len(power) == P // 2 and all(power[k - 1] == pytest.approx(P, rel=1e-6) for k in KEYS)
    assert sum(power) == pytest.approx(len(KEYS) * P, rel=1e-6)


def test_weight_norm_by_hand():
    torch.manual_seed(0)
    model = ToyMLP(7, 3, 5)
    by_hand = sum(float(x) ** 2 for t in (model.W_E, model.W_in, model.b_in, model.W_U, model.b_U)
                  for x in t.detach().flatten())
    data = make_data(7, "add", 0.5, 0)
    m = snapshot_measures(model, Grid(7, "add", data.train_idx, data.test_idx), [])
    assert m["weight_norm"] == pytest.approx(by_hand, rel=1e-9)


def synthetic_run():
    """A run by hand: memorized at epoch 20, grokked at 90; snapshots every 10 epochs.
    restricted loss: 4 (peak, epoch 20), 3.9, 3.5, 2.5, 1.9 (epoch 60: first <= 2), 1, 0.5, ...
    weight norm: falls until epoch 100, rises at 110; it also rises at 60 (so clean-up waits for 70)."""
    history = {"epoch": list(range(0, 141, 5))}
    history["train_acc"] = [min(1.0, e / 20) for e in history["epoch"]]
    history["test_acc"] = [1.0 if e >= 90 else 0.0 for e in history["epoch"]]
    series = {"epoch": list(range(0, 141, 10)),
              "restricted_loss": [3.0, 3.5, 4.0, 3.9, 3.5, 2.5, 1.9, 1.0, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1],
              "weight_norm": [100, 90, 80, 79, 78, 77, 78, 70, 60, 50, 45, 46, 44, 43, 42],
              "excluded_loss": [4.0, 2.0, 0.1, 0.12, 0.15, 0.19, 0.3, 1.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0],
              "fourier_gini": [0.05, 0.05, 0.05, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7],
              "test_loss": [4.0, 8.0, 12.0, 11.0, 9.0, 6.5, 5.0, 2.0, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}
    return history, series


def test_phase_rule_by_hand():
    history, series = synthetic_run()
    # epoch 60: restricted 1.9 <= 4 / 2 but the weight norm rose (77 -> 78); epoch 70: 1.0, and 78 -> 70
    # clean-up ends at the first snapshot where the weight norm does not fall: 45 -> 46 at epoch 110
    assert training_phases(history, series) == {"memorization_end": 20, "generalized": True,
                                                 "cleanup_start": 70, "cleanup_end": 110}
    series["weight_norm"] = [100 - e / 10 for e in series["epoch"]]  # falls to the end: clean-up never ends
    assert training_phases(history, series)["cleanup_end"] is None
    series["restricted_loss"] = [3.0, 3.5, 4.0] + [2.1] * 12  # never halves: no clean-up
    assert training_phases(history, series)["cleanup_start"] is None


def test_onsets_by_hand():
    history, series = synthetic_run()
    # since epoch 20: excluded min 0.1 -> first >= 0.2 at 60 (0.3); gini min 0.05 -> first >= 0.1 at 50;
    # restricted max 4 -> first <= 2 at 60; test loss max 12 -> first <= 6 at 60 (5.0)
    assert onsets(series, 20) == {"excluded_loss": 60, "fourier_gini": 50, "restricted_loss": 60, "test_loss": 60}
    assert onsets(series, None) == dict.fromkeys(ONSETS)
    assert onsets(series, 100)["excluded_loss"] is None  # flat after epoch 100


def test_no_phase_after_memorization_for_a_run_that_did_not_generalize(tmp_path):
    history, series = synthetic_run()
    history["test_acc"] = [0.5] * len(history["epoch"])
    phases = training_phases(history, series)
    assert phases == {"memorization_end": 20, "generalized": False, "cleanup_start": None, "cleanup_end": None}
    text = describe({"training_phases": phases, "series": series, "onsets": onsets(series, 20), "grokking_epoch": None,
                     "key_frequencies": [4]})
    assert "did not generalize" in text and "clean-up" not in text.replace("or clean-up", "")
    history["train_acc"] = [0.5] * len(history["epoch"])
    assert training_phases(history, series)["memorization_end"] is None


def test_describe_states_the_phases_and_what_moved_first():
    history, series = synthetic_run()
    result = {"training_phases": training_phases(history, series), "series": series, "onsets": onsets(series, 20),
              "grokking_epoch": 90, "key_frequencies": [4]}
    text = describe(result)
    assert "memorization 0-20, circuit formation 20-70, clean-up 70-110" in text
    assert "grokked (test acc >= 99%) at epoch 90" in text
    assert "fourier gini at 50, excluded loss at 60, restricted loss at 60, test loss at 60" in text


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_quick_start_runs_end_to_end_and_groks(tmp_path):
    ckpt, res = tmp_path / "c", tmp_path / "r"
    out = subprocess.run([sys.executable, "example_quick_start.py", "--quiet", "--p", "59",
                          "--checkpoint-dir", str(ckpt), "--results-dir", str(res)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "grokking" in out.stdout and "Key frequencies" in out.stdout
    story = out.stdout.split("What happened")[1].split("\n\nPlots:")[0].splitlines()[1:]
    assert len(story) >= 8 and all(line.startswith("- ") for line in story)  # one bullet per line
    training = json.loads((res / "training_summary.json").read_text())
    assert training["grokking_epoch"] >= 10 * training["memorization_epoch"]
    replay = json.loads((res / "progress_measures.json").read_text())
    phases = replay["training_phases"]
    assert phases["memorization_end"] == training["memorization_epoch"]
    assert phases["memorization_end"] < phases["cleanup_start"] <= training["grokking_epoch"]
    # the demo stops where the clean-up ends (or at 2 x the grokking epoch): the replay sees the whole phase
    assert training["stopped"] in ("the weight norm stopped falling after grokking (the clean-up ended)",
                                   "reached 2 x the grokking epoch")
    if training["stopped"].startswith("the weight norm"):
        assert phases["cleanup_end"] is not None and phases["cleanup_end"] <= training["epochs_run"]
    # the circuit's signature (Nanda et al.): at the end the key directions alone still predict well,
    # while the training set cannot be fitted without them
    assert replay["series"]["restricted_loss"][-1] < 0.1 < replay["series"]["excluded_loss"][-1]
    for name in ("training_curves", "progress_measures", "activation_heatmap", "ablation_curves",
                 "fourier_spectrum", "neuron_clusters", "frequency_ablation", "neuron_ranking"):
        assert (res / f"{name}.png").is_file()
    again = subprocess.run([sys.executable, "interpretability.py", "--progress", "--quiet", "--checkpoint",
                            str(ckpt / "model_final.pth"), "--results-dir", str(tmp_path / "r2")],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "Training phases: memorization" in again.stdout
    assert f"Interactive report: {res / 'report.html'}" in out.stdout
    assert (res / "report.html").stat().st_size > 1_000_000  # plotly.js is inside the page


@pytest.mark.parametrize("memorized, restricted, norm, expected", [
    # the snapshot at memorization (epoch 10) holds the peak, 4; 2.0 at epoch 30 is exactly half of it
    (10, [5.0, 4.0, 3.0, 2.0, 1.0], [9, 8, 7, 6, 5], (30, None)),
    # 1.9 lies between a third and a half of the peak: it counts
    (10, [5.0, 4.0, 3.0, 1.9, 1.0], [9, 8, 7, 6, 5], (30, None)),
    # a repeated norm is not falling: clean-up waits for the next fall to start ...
    (10, [5.0, 4.0, 3.0, 1.0, 1.0], [9, 8, 7, 7, 6], (40, None)),
    # ... and ends where the norm stops falling
    (10, [5.0, 4.0, 1.0, 0.5, 0.4], [9, 8, 7, 7, 6], (20, 30)),
    # memorized at epoch 0: the first snapshot has no predecessor, so it cannot be "falling"
    (0, [0.0, 0.0, 0.0, 0.0, 0.0], [5, 4, 3, 2, 10], (10, 40)),
])
def test_phase_rule_edges_by_hand(memorized, restricted, norm, expected):
    epochs = [0, 10, 20, 30, 40]
    history = {"epoch": epochs, "train_acc": [1.0 if e >= memorized else 0.0 for e in epochs], "test_acc": [1.0] * 5}
    phases = training_phases(history, {"epoch": epochs, "restricted_loss": restricted, "weight_norm": norm})
    assert (phases["cleanup_start"], phases["cleanup_end"]) == expected


def test_onset_at_exactly_the_factor():
    series = {"epoch": [0, 10, 20], "excluded_loss": [1.0, 2.0, 9.0], "fourier_gini": [0.1, 0.2, 0.9],
              "restricted_loss": [4.0, 2.0, 0.1], "test_loss": [4.0, 2.0, 0.1]}
    assert onsets(series, 0) == dict.fromkeys(ONSETS, 10)  # a factor of exactly 2 counts


def test_without_key_frequencies_the_clean_up_rule_does_not_apply():
    _, series = synthetic_run()
    phases = {"memorization_end": 20, "generalized": True, "cleanup_start": None, "cleanup_end": None}
    text = describe({"training_phases": phases, "series": series, "onsets": dict.fromkeys(ONSETS), "grokking_epoch": 90,
                     "key_frequencies": []})
    assert text == ("Training phases: memorization 0-20, circuit formation 20-140 (no key frequencies, so the clean-up rule, "
                    "which reads the restricted loss, does not apply); grokked (test acc >= 99%) at epoch 90.")


@pytest.mark.parametrize("phases, expected", [
    ({"memorization_end": None, "generalized": False, "cleanup_start": None, "cleanup_end": None},
     "The model never memorized its training set (train accuracy < 99%): no phases to mark."),
    ({"memorization_end": 20, "generalized": False, "cleanup_start": None, "cleanup_end": None},
     "Memorization 0-20. The run did not generalize (test accuracy never reached 99%), "
     "so no circuit-formation or clean-up phase is named."),
    ({"memorization_end": 20, "generalized": True, "cleanup_start": None, "cleanup_end": None},
     "Training phases: memorization 0-20, circuit formation 20-140 (no clean-up: the restricted loss never halved "
     "while the weight norm fell); grokked (test acc >= 99%) at epoch 90."),
    ({"memorization_end": 20, "generalized": True, "cleanup_start": 70, "cleanup_end": None},
     "Training phases: memorization 0-20, circuit formation 20-70, clean-up 70-140 (the weight norm was still falling "
     "at the end); grokked (test acc >= 99%) at epoch 90."),
    ({"memorization_end": 20, "generalized": True, "cleanup_start": 70, "cleanup_end": 110},
     "Training phases: memorization 0-20, circuit formation 20-70, clean-up 70-110; grokked (test acc >= 99%) at epoch 90.\n"
     "First moves after memorization (a factor 2 from the extreme since then): fourier gini at 50, "
     "excluded loss at 60, restricted loss at 60, test loss at 60."),
])
def test_describe_word_for_word(phases, expected):
    _, series = synthetic_run()
    moved = onsets(series, 20) if phases["cleanup_end"] else dict.fromkeys(ONSETS)
    result = {"training_phases": phases, "series": series, "onsets": moved, "grokking_epoch": 90, "key_frequencies": [4]}
    assert describe(result) == expected
