import json
import math
import subprocess
import sys

import pytest
import torch

from analysis import fourier
from analysis.circuit import Grid, frequency_ablation
from analysis.neurons import ablated_logits, rank_neurons, ranking_agreement
from analysis.summary import analyze
from conftest import ROOT
from core.checkpoint import save_checkpoint
from dataset import make_data
from handbuilt import handbuilt_model
from model import ToyMLP, ablate_neurons

P, KEYS = 59, [4, 11, 23]


def full_grid(p, op="add", train_frac=0.3):
    data = make_data(p, op, train_frac, 0)
    return Grid(p, op, data.train_idx, data.test_idx)


@pytest.fixture
def handbuilt():  # per test: mutation testing maps a function only to the tests that run it
    model, neuron_freq = handbuilt_model(P, KEYS)
    grid = full_grid(P)
    with torch.no_grad():
        result = analyze(model, grid, draws=2)
    return model, neuron_freq, grid, result


def test_handbuilt_model_computes_modular_addition(handbuilt):
    model, _, grid, result = handbuilt
    assert result["losses"]["all"]["acc"] == 1.0
    logits = model(grid.a, grid.b).double()
    c = torch.arange(P).double()
    s = (grid.a + grid.b).double()[:, None]
    expected = sum(4 * 5.0 * torch.cos(2 * math.pi * k * (s - c) / P) for k in KEYS)
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("p", [2, 7, 12, 113])
def test_fourier_basis_is_orthonormal(p):
    basis, labels = fourier.fourier_basis(p)
    assert basis.shape == (p, p) and len(labels) == p
    torch.testing.assert_close(basis @ basis.T, torch.eye(p, dtype=torch.float64))


def test_power_of_a_pure_wave_sits_in_its_frequency():
    x = torch.arange(P, dtype=torch.float64)
    table = torch.stack([torch.cos(2 * math.pi * 7 * x / P + 0.3), 2 * torch.sin(2 * math.pi * 9 * x / P)], 1)
    power = fourier.power_per_frequency(table)
    assert torch.argsort(power, descending=True)[:2].tolist() == [8, 6]  # k = 9 (4x power), then k = 7
    torch.testing.assert_close(power.sum(), (table - table.mean(0)).pow(2).sum())


def test_handbuilt_key_frequencies_are_recovered_exactly(handbuilt):
    _, _, _, result = handbuilt
    f = result["fourier"]
    assert f["key_frequencies"] == KEYS
    assert f["key_frequency_power_fraction"] > 0.999


def test_every_handbuilt_neuron_is_assigned_to_its_frequency(handbuilt):
    _, neuron_freq, _, result = handbuilt
    f = result["fourier"]
    assert f["neuron_cluster"] == neuron_freq
    # (x +- y)^2: the cross term (freq k) holds 1 of the 1.25 units of variance, the squares (2k) 0.25
    assert all(abs(frac - 0.8) < 1e-6 for frac in f["neuron_frequency_fraction"])


def test_handbuilt_logits_are_explained_and_restricted_excluded_losses_separate(handbuilt):
    _, _, _, result = handbuilt
    f = result["fourier"]
    assert f["logit_variance_explained"] > 0.999
    assert all(abs(alpha - 20.0) < 1e-6 for alpha in f["logit_alphas"].values())
    assert f["restricted_loss"] < 1e-6 and f["restricted_acc"] == 1.0
    assert f["excluded_loss"] == pytest.approx(math.log(P), rel=1e-3)  # nothing left but a constant


def test_random_model_has_no_key_frequencies():
    torch.manual_seed(0)
    model = ToyMLP(P, d_embed=32, d_hidden=64).eval()
    with torch.no_grad():
        f = analyze(model, full_grid(P), draws=2)["fourier"]
    assert f["key_frequencies"] == []
    assert f["key_frequency_power_fraction"] == 0.0
    assert all(c is None for c in f["neuron_cluster"])


def test_key_and_rest_parts_add_up_to_the_logits():
    torch.manual_seed(1)
    logits = torch.randn(P * P, P)
    key_part, rest = fourier.split_logits(logits, KEYS)
    torch.testing.assert_close(key_part + rest, logits.double())
    torch.testing.assert_close(fourier.excluded_logits(logits, KEYS), rest)
    # the key part lies in the span of cos/sin(w_k (a + b)): projecting it again changes nothing
    again, _ = fourier.split_logits(key_part, KEYS)
    torch.testing.assert_close(again, key_part)
    assert fourier.split_logits(logits, [])[0].abs().max() == 0


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_shortcut_ablation_matches_hooked_forward(mode):
    """ablated_logits (one matmul) against the hooked forward pass, for single neurons and for sets."""
    torch.manual_seed(2)
    model = ToyMLP(13, 8, 16).eval()
    grid = full_grid(13)
    with torch.no_grad():
        logits, cache = model.run_with_cache(grid.a, grid.b)
        hidden = cache["hidden_post"]
        values = hidden.mean(0) if mode == "mean" else torch.zeros(16)
        ranking = rank_neurons(model, grid)
        losses = ranking["base_loss"] + ranking[f"{mode}_ablation_loss_increase"]
        accs = ranking[f"{mode}_ablation_acc"]
        for neurons in ([0], [7], [15], [1, 2, 3], list(range(16)), []):
            hooked = model.run_with_hooks(grid.a, grid.b, {"hidden_post": ablate_neurons(neurons, mode, values)})
            shortcut = ablated_logits(logits, hidden, model.neuron_readout(), neurons, values)
            torch.testing.assert_close(shortcut, hooked, rtol=1e-5, atol=1e-5)
            if len(neurons) == 1:
                loss, acc = grid.loss_acc(hooked)
                assert losses[neurons[0]].item() == pytest.approx(loss, rel=1e-5)
                assert accs[neurons[0]].item() == pytest.approx(acc)


def test_frequency_ablation_on_handbuilt_model():
    model, _ = handbuilt_model(P, KEYS)
    grid = full_grid(P)
    with torch.no_grad():
        base_loss, _ = grid.loss_acc(model(grid.a, grid.b))
        result = {r["ablation"]: r for r in frequency_ablation(model, grid, KEYS)}
    assert result["remove all non-key"]["loss"] == pytest.approx(base_loss, abs=1e-9)  # W_E has none
    for k in KEYS:
        assert result[f"remove {k}"]["loss"] > base_loss + 1e-3


def test_ranking_agreement_extremes():
    order = torch.arange(20)
    assert ranking_agreement(order, order)["spearman"] == pytest.approx(1.0)
    assert ranking_agreement(order, order.flip(0))["spearman"] == pytest.approx(-1.0)
    assert ranking_agreement(order, order.flip(0))["top10_overlap"] == 0.0


def test_gini_of_one_hot_and_flat_spectra():
    assert fourier.gini(torch.ones(10)) == pytest.approx(0.0)
    assert fourier.gini(torch.tensor([0.0] * 9 + [3.0])) == pytest.approx(0.9)
    assert fourier.gini(torch.tensor([1.0, 3.0])) == pytest.approx(0.25)  # by the mean-difference formula


def run_cli(*args):
    return subprocess.run([sys.executable, "interpretability.py", "--quiet", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.subprocess
def test_cli_on_handbuilt_checkpoint_writes_summary_and_plots(tmp_path):
    model, _ = handbuilt_model(P, KEYS)
    data = make_data(P, "add", 0.3, 0)
    save_checkpoint(tmp_path / "hand.pth", config={"p": P, "op": "add", "model": model.config()},
                    model=model.state_dict(), epoch=0, history={}, train_idx=data.train_idx, test_idx=data.test_idx)
    out = run_cli("--checkpoint", str(tmp_path / "hand.pth"), "--results-dir", str(tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "res/analysis_summary.json").read_text())
    for key in ("key_frequencies", "key_frequency_power_fraction", "neuron_importance", "ablations", "circuit_size",
                "restricted_loss", "excluded_loss", "logit_variance_explained", "frequency_ablation", "config",
                "checkpoint"):
        assert key in summary
    assert summary["key_frequencies"] == KEYS
    for name in ("activation_heatmap", "neuron_ranking", "ablation_curves", "fourier_spectrum", "neuron_clusters",
                 "frequency_ablation"):
        assert (tmp_path / f"res/{name}.png").stat().st_size > 10_000
    assert "Key frequencies [4, 11, 23]" in out.stdout


@pytest.mark.subprocess
def test_cli_missing_and_foreign_checkpoints(tmp_path):
    out = run_cli("--checkpoint", str(tmp_path / "none.pth"), "--results-dir", str(tmp_path / "res"))
    assert out.returncode != 0 and "python train.py" in out.stderr and out.stderr.count("\n") == 1
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    out = run_cli("--checkpoint", str(tmp_path / "foreign.pth"), "--results-dir", str(tmp_path / "res"))
    assert out.returncode == 2 and "not a checkpoint" in out.stderr
    (tmp_path / "corrupt.pth").write_bytes(b"garbage")
    out = run_cli("--checkpoint", str(tmp_path / "corrupt.pth"), "--results-dir", str(tmp_path / "res"))
    assert out.returncode == 2 and "not a readable checkpoint" in out.stderr
    assert not (tmp_path / "res").exists()


def test_precise_cross_entropy_matches_float64_reference():
    from model import cross_entropy_per_row

    torch.manual_seed(3)
    y = torch.randint(0, 11, (50,))
    for scale in (1.0, 10.0, 30.0):  # ordinary losses, and a confident model's tiny ones (~1e-13)
        logits = torch.randn(2, 50, 11, dtype=torch.float64) * 3
        logits.scatter_add_(-1, y.expand(2, -1)[..., None], torch.full((2, 50, 1), scale, dtype=torch.float64))
        ours = cross_entropy_per_row(logits.float(), y)[0].reshape(-1)
        if scale < 30:
            reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), y.repeat(2), reduction="none")
        else:  # float64 log_softmax itself loses these; use -log softmax_y = log(1 + sum_{c!=y} e^(z_c - z_y))
            reference = torch.tensor([math.log1p(sum(math.exp(z[c] - z[t]) for c in range(11) if c != t))
                                      for z, t in zip(logits.reshape(-1, 11).tolist(), y.repeat(2).tolist())],
                                     dtype=torch.float64)
            assert reference.max() < 1e-7  # below float32 log_softmax resolution (~2e-6 here)
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=0)


@pytest.mark.parametrize("p, op", [(7, "div"), (12, "add"), (11, "sub"), (11, "mul")])
def test_analysis_runs_for_every_op_and_even_p(p, op):
    """div leaves b = 0 out of the data set; an even p has a Nyquist frequency without a sine."""
    torch.manual_seed(0)
    model = ToyMLP(p, d_embed=8, d_hidden=16).eval()
    grid = full_grid(p, op, train_frac=0.5)
    assert len(grid.y) == (p * (p - 1) if op == "div" else p * p)
    with torch.no_grad():
        result = analyze(model, grid, draws=2)
    assert result["fourier"]["key_frequencies"] == []
    assert len(result["circuit_keep_acc"]) == 17
    assert 0 <= result["losses"]["all"]["acc"] <= 1 and math.isfinite(result["losses"]["test"]["loss"])
