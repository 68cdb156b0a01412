"""Known answers for the transformer's analysis: a transformer built by hand whose two heads attend
by position only (head 0 to a, head 1 to b), copy the token embeddings into their own residual
directions and feed the hand-built Fourier MLP of handbuilt.py. Every answer is known by construction."""
import json
import math
import subprocess
import sys

import pytest
import torch

import interpretability
from analysis import attention
from analysis.circuit import Grid
from analysis.components import activation_mean, component_ablations, replace_at
from analysis.summary import analyze, findings
from config import Config
from conftest import ROOT
from core.checkpoint import save_checkpoint
from core.training import train
from dataset import make_data
from handbuilt import fourier_transformer, handbuilt_model

P, KEYS = 31, [3, 7, 11]


def grid_for(p=P):
    data = make_data(p, "add", 0.3, 0)
    return Grid(p, "add", data.train_idx, data.test_idx)


def test_the_handbuilt_transformer_computes_its_mlp_exactly():
    model, _ = fourier_transformer(P, KEYS)
    core, _ = handbuilt_model(P, KEYS)
    grid = grid_for()
    with torch.no_grad():
        torch.testing.assert_close(model(grid.a, grid.b), core(grid.a, grid.b), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(model.run_with_hooks(grid.a, grid.b), core(grid.a, grid.b), atol=1e-4, rtol=1e-5)
    assert grid.loss_acc(model(grid.a, grid.b))[1] == 1.0


def test_analysis_returns_exactly_the_built_frequencies_and_clusters():
    model, neuron_freq = fourier_transformer(P, KEYS)
    result = analyze(model, grid_for(), draws=1)
    f = result["fourier"]
    assert f["key_frequencies"] == KEYS
    assert f["neuron_cluster"] == neuron_freq  # every neuron in the cluster of the frequency it was built on
    assert f["neuron_frequency"] == neuron_freq
    assert f["key_frequency_power_fraction"] > 1 - 1e-9
    assert f["embed_key_power_fraction"] > 1 - 1e-9  # "=" (row p) is left out of the spectrum
    assert f["logit_variance_explained"] > 1 - 1e-6
    assert f["restricted_acc"] == 1.0
    ablation = {a["ablation"]: a for a in f["frequency_ablation"]}
    assert ablation["remove all non-key"]["acc"] == 1.0  # the embedding holds nothing else
    for k in KEYS:  # removing one of three frequencies costs loss, not every answer
        assert ablation[f"remove {k}"]["loss"] > 10 * result["losses"]["all"]["loss"]


def test_attention_patterns_are_the_two_fixed_position_patterns():
    model, _ = fourier_transformer(P, KEYS)
    patterns = attention.attention_patterns(model, grid_for())  # (heads, to a / to b, p, p)
    expected = torch.zeros(2, 2, P, P)
    expected[0, 0], expected[1, 1] = 1.0, 1.0
    torch.testing.assert_close(patterns, expected, atol=1e-6, rtol=0)


def test_mean_ablating_a_head_removes_its_operand():
    model, _ = fourier_transformer(P, KEYS)
    grid = grid_for()
    ablations = attention.head_ablations(model, grid)
    assert [a["head"] for a in ablations] == [0, 1]
    for a in ablations:
        # with one operand replaced by its mean the logits still depend on the other operand only,
        # so at most one answer per fixed b (or a) is right: accuracy <= 1/p
        assert a["acc"] <= 1 / P + 1e-9
        assert a["loss"] > 1.0


def test_head_ablations_equal_the_component_table_and_each_head_its_own():
    """On a perturbed model (heads mix, and their mean output at '=' is not 0) each head's mean ablation equals
    the component table's 'head h' row, and differs from zero-ablating it and from ablating every head."""
    model, _ = fourier_transformer(P, KEYS)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in model.parameters():
            w += 0.05 * w.abs().max() * torch.randn(w.shape, generator=gen)
    grid = grid_for()
    heads = attention.head_ablations(model, grid)
    table = {row["component"]: row for row in component_ablations(model, grid, KEYS)}
    for h, row in enumerate(heads):
        assert row["head"] == h
        assert row["loss"] == pytest.approx(table[f"head {h}"]["mean_loss"], rel=1e-6)
        assert row["acc"] == table[f"head {h}"]["mean_acc"]
        assert abs(row["loss"] - table[f"head {h}"]["zero_loss"]) > 1e-3
    both = {"attn.hook_z": replace_at(2, None, activation_mean(model, grid, "attn.hook_z"))}
    with torch.no_grad():
        all_heads = grid.score(lambda pairs: model.run_with_hooks(grid.a[pairs], grid.b[pairs], both))[0]
    assert all(abs(row["loss"] - all_heads) > 1e-3 for row in heads)
    assert abs(heads[0]["loss"] - heads[1]["loss"]) > 1e-6


def test_the_residual_stream_at_eq_is_all_key_frequency():
    model, _ = fourier_transformer(P, KEYS)
    grid = grid_for()
    r = attention.residual_key_directions(model, grid, KEYS)
    assert r["key_variance_share"] > 1 - 1e-9  # the two copied embeddings, pure key frequencies
    assert r["keep_key_acc"] == 1.0
    # without them the residual is constant, the hidden layer 0 and every logit equal: loss log p
    assert abs(r["remove_key_loss"] - math.log(P)) < 1e-4
    # with only one key frequency declared, the others are removed: the share drops to a third
    r1 = attention.residual_key_directions(model, grid, KEYS[:1])
    assert abs(r1["key_variance_share"] - 1 / 3) < 1e-6


def test_the_residual_streams_mean_is_kept_with_either_part():
    """"=" given an embedding in the block W_U reads: a constant in resid_mid that adds a bias to every
    input's logits. Both interventions keep resid_mid's mean, so the bias stays: keeping the key part
    (here all of the rest) gives exactly the model's loss, and removing it leaves logits = bias only."""
    model, _ = fourier_transformer(P, KEYS)
    grid = grid_for()
    O = 3 * 2 * len(KEYS) + 3  # handbuilt_transformer's output block
    bias = 3.0 * torch.cos(2 * math.pi * torch.arange(P) / P)
    with torch.no_grad():
        model.W_E[P, O:O + P] = bias
        full_loss = grid.loss_acc(model(grid.a, grid.b))[0]
    r = attention.residual_key_directions(model, grid, KEYS)
    assert abs(r["keep_key_loss"] - full_loss) <= 1e-3 * full_loss
    uniform_with_bias = float(torch.logsumexp(bias.double(), 0)) - float(bias.double()[grid.y].mean())
    assert abs(r["remove_key_loss"] - uniform_with_bias) < 1e-4


def test_run_writes_the_attention_plot_and_the_head_summary(tmp_path):
    model, _ = fourier_transformer(P, KEYS)
    data = make_data(P, "add", 0.3, 0)
    path = tmp_path / "model.pth"
    save_checkpoint(path, model=model.state_dict(), config={"p": P, "op": "add", "model": model.config()},
                    epoch=0, history={}, train_idx=data.train_idx, test_idx=data.test_idx)
    summary, paths = interpretability.run(path, tmp_path / "results", draws=1, progress=False)
    assert tmp_path / "results" / "attention_patterns.png" in paths
    assert (tmp_path / "results" / "attention_patterns.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results" / "analysis_summary.json").read_text())
    assert saved["key_frequencies"] == KEYS
    heads = saved["attention"]
    assert [round(h["mean_to_a"], 6) for h in heads] == [1.0, 0.0]
    assert [round(h["mean_to_b"], 6) for h in heads] == [0.0, 1.0]
    assert [h["mean_to_eq"] for h in heads] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert [h["head"] for h in heads] == [0, 1]
    assert {row["component"] for row in saved["component_ablations"]} >= {"head 0", "head 1"}
    assert 0.99 < saved["residual_key_directions"]["key_variance_share"] <= 1.0 + 1e-9
    text = " ".join(findings(saved))
    assert "Residual stream at '=': the key-frequency terms hold" in text and "Component ablations:" in text
    assert "head 0: 100% to a, 0% to b" in text and "head 1: 0% to a, 100% to b" in text


@pytest.mark.subprocess
def test_analysis_and_progress_commands_run_on_a_transformer_checkpoint(tmp_path):
    ckpt, res = tmp_path / "c", tmp_path / "r"
    train(Config(arch="transformer", p=23, d_model=16, n_heads=2, d_mlp=24, lr=1e-2, epochs=30,
                 checkpoint_dir=str(ckpt), results_dir=str(res)), progress=False)
    out = subprocess.run([sys.executable, "interpretability.py", "--quiet", "--checkpoint", str(ckpt / "model_final.pth"),
                          "--results-dir", str(res)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Attention from '='" in out.stdout and "Residual stream at '='" in out.stdout
    assert (res / "attention_patterns.png").stat().st_size > 10_000
    assert len(json.loads((res / "analysis_summary.json").read_text())["attention"]) == 2
    replay = subprocess.run([sys.executable, "interpretability.py", "--progress", "--quiet", "--checkpoint",
                             str(ckpt), "--results-dir", str(res)], cwd=ROOT, capture_output=True, text=True)
    assert replay.returncode == 0, replay.stderr
    measures = json.loads((res / "progress_measures.json").read_text())
    assert len(measures["series"]["epoch"]) == len(list((ckpt / "snapshots").glob("*.pth")))


def test_the_transformer_part_of_the_analysis_holds_its_three_measures():
    model, _ = fourier_transformer(P, KEYS)
    grid = grid_for()
    out = attention.analyze(model, grid, KEYS)
    assert sorted(out) == ["attention", "head_ablations", "residual_key_directions"]
    assert out["residual_key_directions"] == attention.residual_key_directions(model, grid, KEYS)
    assert out["head_ablations"] == attention.head_ablations(model, grid)
    torch.testing.assert_close(out["attention"], attention.attention_patterns(model, grid))
