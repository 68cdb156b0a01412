"""Noise robustness (issue 11): --label-noise corrupts a seeded share of the training labels,
--embed-noise adds Gaussian noise to the token embeddings in training steps only."""
import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from config import Config
from conftest import ROOT
from core.checkpoint import load_checkpoint, load_model
from core.training import EMBED_NOISE_SEED, evaluate, make_optimizer, train
from core.transformer import Transformer
from dataset import corrupt_labels, make_data
from model import ToyMLP, cross_entropy_per_row


def small(folder, **overrides) -> Config:
    base = Config(p=23, d_embed=16, d_hidden=32, epochs=30, eval_every=5, checkpoint_every=10, snapshot_every=10,
                  checkpoint_dir=str(folder / "ckpt"), results_dir=str(folder / "res"))
    return replace(base, **overrides)


def tiny_transformer(folder, **overrides) -> Config:
    return small(folder, arch="transformer", d_model=16, n_heads=2, d_mlp=24, lr=1e-2, **overrides)


def final_weights(folder) -> dict:
    return load_checkpoint(folder / "ckpt/model_final.pth")["model"]


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# corrupt_labels and the data it feeds

@pytest.mark.parametrize("p, n, frac", [(13, 200, 0.1), (13, 200, 0.33), (2, 50, 0.5), (113, 3830, 0.05),
                                        (7, 40, 0.0), (7, 40, 0.99)])
def test_corrupt_labels_changes_exactly_round_frac_n_labels_each_to_a_wrong_one(p, n, frac):
    y = torch.randint(0, p, (n,), generator=torch.Generator().manual_seed(1))
    noisy, corrupted = corrupt_labels(y, p, frac, seed=5)
    assert corrupted.dtype == torch.bool and corrupted.shape == y.shape
    assert int(corrupted.sum()) == round(frac * n)
    assert torch.equal(noisy != y, corrupted)  # changed exactly where the mask says: never to the true label
    assert ((0 <= noisy) & (noisy < p)).all()


def test_corrupted_labels_are_uniform_over_the_other_classes():
    p, n = 5, 20_000
    y = torch.arange(n) % p
    noisy, corrupted = corrupt_labels(y, p, 0.5, seed=0)
    shift = ((noisy - y) % p)[corrupted]
    counts = torch.bincount(shift, minlength=p)
    assert counts[0] == 0
    assert (abs(counts[1:] / len(shift) - 1 / (p - 1)) < 0.02).all(), counts  # 10,000 draws: sd ~0.004


def test_corrupt_labels_is_seeded_and_ignores_the_global_rng():
    y = torch.arange(300) % 17
    torch.manual_seed(0)
    first = corrupt_labels(y, 17, 0.2, seed=3)
    torch.manual_seed(1)
    torch.rand(10)
    again = corrupt_labels(y, 17, 0.2, seed=3)
    other = corrupt_labels(y, 17, 0.2, seed=4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1]) and not torch.equal(first[0], other[0])


def test_label_noise_touches_training_labels_only_and_keeps_the_split():
    clean, noisy = make_data(23, "add", 0.3, 7), make_data(23, "add", 0.3, 7, label_noise=0.2)
    assert torch.equal(clean.train_idx, noisy.train_idx) and torch.equal(clean.y, noisy.y)  # y: the true labels
    assert torch.equal(noisy.subset("test")[2], clean.subset("test")[2])
    assert torch.equal(noisy.subset("train", true_labels=True)[2], clean.subset("train")[2])
    assert int(noisy.corrupted_train.sum()) == round(0.2 * len(noisy.train_idx)) > 0
    assert torch.equal(noisy.subset("train")[2] != clean.subset("train")[2], noisy.corrupted_train)
    assert not clean.corrupted_train.any()
    batches = list(noisy.train_batches(16, torch.Generator().manual_seed(0)))
    assert sum(int((y != (a + b) % 23).sum()) for a, b, y in batches) == int(noisy.corrupted_train.sum())


# the models' fast forward with embedding noise

@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_fast_forward_with_noise_equals_run_with_hooks_adding_it_to_the_embeddings(arch):
    p = 11
    torch.manual_seed(0)
    model = ToyMLP(p, 8, 16) if arch == "mlp" else Transformer(p, 16, 2, 24)
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    noise = 0.5 * torch.randn(len(a), 2, model.W_E.shape[1])
    if arch == "mlp":
        hooks = {"embed_a": lambda x: x + noise[:, 0], "embed_b": lambda x: x + noise[:, 1]}
    else:  # the token embedding of a and b (positions 0 and 1), not of "="
        hooks = {"hook_embed": lambda x: x + F.pad(noise, (0, 0, 0, 1))}
    fast, spelled = model(a, b, noise), model.run_with_hooks(a, b, hooks=hooks)
    torch.testing.assert_close(fast, spelled, rtol=0, atol=1e-5)
    assert (fast - model(a, b)).abs().max() > 1e-2  # the noise does reach the logits
    assert torch.equal(model(a, b, None), model(a, b))


# training with noise

def by_hand(cfg: Config, epochs: int, noise_scale: float = 0.0) -> dict:
    """Full-batch training as train.py did before the noise options (plus, if noise_scale, the
    embedding noise drawn from train.py's noise stream): the reference train() must match bit for bit."""
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed, cfg.label_noise)
    a, b, y = data.subset("train")
    torch.manual_seed(cfg.seed)
    model = ToyMLP(cfg.p, cfg.d_embed, cfg.d_hidden)
    optimizer = make_optimizer(model, cfg)
    noise_gen = torch.Generator().manual_seed(cfg.seed ^ EMBED_NOISE_SEED)
    for _ in range(epochs):
        noise = noise_scale * torch.randn(len(a), 2, cfg.d_embed, generator=noise_gen) if noise_scale else None
        loss = F.cross_entropy(model(a, b) if noise is None else model(a, b, noise), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.state_dict()


def test_zero_noise_trains_bit_identically_to_training_without_the_options(tmp_path):
    cfg = small(tmp_path, epochs=12, label_noise=0.0, embed_noise=0.0)
    train(cfg, progress=False)
    assert same_weights(final_weights(tmp_path), by_hand(cfg, 12))


def test_noisy_training_uses_the_corrupted_labels_and_the_noise_stream(tmp_path):
    cfg = small(tmp_path, epochs=12, label_noise=0.2, embed_noise=0.3)
    train(cfg, progress=False)
    assert same_weights(final_weights(tmp_path), by_hand(cfg, 12, noise_scale=0.3))
    assert not same_weights(final_weights(tmp_path), by_hand(replace(cfg, label_noise=0.0), 12, noise_scale=0.3))
    assert not same_weights(final_weights(tmp_path), by_hand(cfg, 12))


def test_embed_noise_changes_training_but_not_evaluation(tmp_path):
    clean = train(small(tmp_path / "clean", epochs=10), progress=False)
    noisy = train(small(tmp_path / "noisy", epochs=10, embed_noise=0.5), progress=False)
    assert not same_weights(final_weights(tmp_path / "clean"), final_weights(tmp_path / "noisy"))
    assert clean["final_train_loss"] != noisy["final_train_loss"]
    # The recorded evaluation is the noiseless forward of the final model, and evaluating again gives the same.
    model, _ = load_model(tmp_path / "noisy/ckpt/model_final.pth")
    data = make_data(23, "add", 0.3, 598)
    for split in ("train", "test"):
        a, b, y = data.subset(split)
        assert cross_entropy_per_row(model(a, b), y)[0].mean().item() == noisy[f"final_{split}_loss"]
    assert evaluate(model, data) == evaluate(model, data)


@pytest.mark.parametrize("make, batch_size", [(small, 0), (small, 64), (tiny_transformer, 0)],
                         ids=["mlp full batch", "mlp minibatch", "transformer"])
def test_resume_with_both_noises_is_bit_identical(tmp_path, make, batch_size):
    noise = {"label_noise": 0.2, "embed_noise": 0.3, "batch_size": batch_size}
    train(make(tmp_path / "whole", **noise), progress=False)
    cfg = make(tmp_path / "split", **noise, epochs=13)
    train(cfg, progress=False)
    resume = load_checkpoint(tmp_path / "split/ckpt/latest.pth")
    assert resume["epoch"] == 13 and "embed_noise" in resume["rng"]
    train(replace(cfg, epochs=30), resume=resume, progress=False)
    assert same_weights(final_weights(tmp_path / "whole"), final_weights(tmp_path / "split"))
    unused = torch.Generator().manual_seed(cfg.seed ^ EMBED_NOISE_SEED).get_state()
    assert not torch.equal(resume["rng"]["embed_noise"], unused)  # the noise stream was drawn from


def run_cli(*args):
    return subprocess.run([sys.executable, "train.py", "--quiet", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.subprocess
def test_checkpoints_from_before_the_noise_options_keep_resuming(tmp_path):
    train(small(tmp_path, epochs=5), progress=False)
    latest = load_checkpoint(tmp_path / "ckpt/latest.pth")
    for key in ("label_noise", "embed_noise"):
        del latest["config"][key]
    del latest["rng"]["embed_noise"]
    torch.save(latest, tmp_path / "old.pth")
    out = run_cli("--resume", str(tmp_path / "old.pth"), "--epochs", "7")
    assert out.returncode == 0, out.stderr
    final = load_checkpoint(tmp_path / "ckpt/model_final.pth")
    assert final["epoch"] == 7 and final["config"]["label_noise"] == final["config"]["embed_noise"] == 0.0


BAD_NOISE = [["--label-noise", "1"], ["--label-noise", "1.5"], ["--label-noise", "-0.1"], ["--label-noise", "nan"],
             ["--embed-noise", "-0.1"], ["--embed-noise", "nan"], ["--embed-noise", "inf"]]


@pytest.mark.subprocess
@pytest.mark.parametrize("args", BAD_NOISE, ids=" ".join)
def test_bad_noise_exits_2_with_one_error_line_and_writes_nothing(tmp_path, args):
    out = run_cli(*args, "--checkpoint-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"error: {args[0]} must") and out.stderr.count("\n") == 1, out.stderr
    assert not out.stdout and not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


@pytest.mark.subprocess
def test_resume_refuses_to_change_the_noise(tmp_path):
    train(small(tmp_path, epochs=5, label_noise=0.1), progress=False)
    for flag in ("--label-noise", "--embed-noise"):
        out = run_cli("--resume", str(tmp_path / "ckpt/latest.pth"), flag, "0.2", "--epochs", "10")
        assert out.returncode == 2 and out.stderr.startswith(f"error: {flag} cannot change"), out.stderr
    assert load_checkpoint(tmp_path / "ckpt/latest.pth")["epoch"] == 5


# what the summary and history report

class Lookup(torch.nn.Module):
    """A 'model' that predicts predicted[i] for pair i = a * p + b (the order of make_table)."""

    def __init__(self, predicted: torch.Tensor, p: int):
        super().__init__()
        self.p, self.logits = p, torch.nn.Parameter(F.one_hot(predicted, p).float())

    def forward(self, a, b):
        return self.logits[a * self.p + b]


def test_evaluate_scores_the_corrupted_pairs_against_both_labels():
    data = make_data(23, "add", 0.3, 598, label_noise=0.2)
    bad = data.train_idx[data.corrupted_train]  # pair indices of the corrupted training pairs
    good = data.train_idx[~data.corrupted_train]
    neither = (data.y + 1) % 23
    neither = torch.where(neither == data.y_fit, (data.y + 2) % 23, neither)  # neither the true nor the fitted label
    predicted = data.y.clone()  # right everywhere, except:
    predicted[bad[:10]] = data.y_fit[bad[:10]]  # 10 corrupted pairs predicted as their corrupted label
    predicted[bad[10:15]] = neither[bad[10:15]]  # 5 as neither
    predicted[good[:7]] = neither[good[:7]]  # 7 clean pairs wrong
    out = evaluate(Lookup(predicted, 23), data)
    n_bad, n_good = len(bad), len(good)
    assert out["noisy_fit_acc"] == 10 / n_bad
    assert out["noisy_true_acc"] == (n_bad - 15) / n_bad
    assert out["clean_train_acc"] == (n_good - 7) / n_good
    assert out["train_acc"] == (n_good - 7 + 10) / (n_good + n_bad)  # against the labels trained on
    assert out["test_acc"] == 1.0  # test labels are the true ones
    assert "noisy_fit_acc" not in evaluate(Lookup(data.y, 23), make_data(23, "add", 0.3, 598))


def test_summary_reports_the_corrupted_pairs_against_both_labels(tmp_path):
    s = train(small(tmp_path, epochs=20, label_noise=0.2, embed_noise=0.1), progress=False)
    data = make_data(23, "add", 0.3, 598, label_noise=0.2)
    corrupted = data.corrupted_train
    n, n_bad = len(corrupted), int(corrupted.sum())
    assert s["corrupted_pairs"] == n_bad == round(0.2 * n)
    assert s["config"]["label_noise"] == 0.2 and s["config"]["embed_noise"] == 0.1
    written = json.loads((tmp_path / "res/training_summary.json").read_text())
    assert written["corrupted_fit_acc"] == s["corrupted_fit_acc"] and written["corrupted_pairs"] == n_bad
    # By hand from the final model: predictions on the corrupted pairs against their true and corrupted labels.
    model, ckpt = load_model(tmp_path / "ckpt/model_final.pth")
    a, b, y_fit = data.subset("train")
    predicted = model(a, b).argmax(-1)
    y_true = data.subset("train", true_labels=True)[2]
    assert s["corrupted_true_acc"] == pytest.approx((predicted == y_true)[corrupted].double().mean().item())
    assert s["corrupted_fit_acc"] == pytest.approx((predicted == y_fit)[corrupted].double().mean().item())
    assert s["clean_train_acc"] == pytest.approx((predicted == y_true)[~corrupted].double().mean().item())
    assert s["corrupted_fit_acc"] > 0.5  # the small model has memorized most of the noise: the figures are not all 0
    # memorized and train_acc: against the labels trained on, the clean and the corrupted pairs together.
    clean_and_fitted = ((n - n_bad) * s["clean_train_acc"] + n_bad * s["corrupted_fit_acc"]) / n
    assert s["final_train_acc"] == pytest.approx(clean_and_fitted)
    history = ckpt["history"]
    for fit, true in zip(history["noisy_fit_acc"], history["noisy_true_acc"], strict=True):
        assert 0 <= fit + true <= 1
    assert len(history["noisy_true_acc"]) == len(history["clean_train_acc"]) == len(history["epoch"])


def test_summary_without_label_noise_has_no_corrupted_pairs(tmp_path):
    s = train(small(tmp_path, epochs=5), progress=False)
    assert s["corrupted_pairs"] == 0 and s["corrupted_true_acc"] is None and s["corrupted_fit_acc"] is None
    assert s["clean_train_acc"] == s["final_train_acc"]
    assert "noisy_true_acc" not in load_checkpoint(tmp_path / "ckpt/model_final.pth")["history"]


@pytest.mark.subprocess
def test_cli_prints_and_writes_the_label_noise_figures(tmp_path):
    out = run_cli("--p", "23", "--d-embed", "16", "--d-hidden", "32", "--epochs", "20", "--label-noise", "0.1",
                  "--embed-noise", "0.1", "--checkpoint-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "r/training_summary.json").read_text())
    assert f"label noise: {summary['corrupted_pairs']} corrupted training pairs" in out.stdout
    assert "label_noise=0.1" in out.stdout and "embed_noise=0.1" in out.stdout
