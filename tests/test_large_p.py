"""Large p within bounded memory: a full batch that cannot fit is refused before anything is written, and
evaluation runs in chunks of pairs whose results equal one pass."""
import subprocess
import sys

import pytest
import torch

import config
from config import Config, check_memory, step_bytes
from conftest import ROOT
from core.training import score_pairs, train
from dataset import make_data
from model import ToyMLP, cross_entropy_per_row


def test_p_5000_full_batch_is_refused_with_a_batch_size_that_fits(tmp_path):
    """~440 GB for one full-batch step: refused by any machine, with one line and nothing written."""
    out = subprocess.run([sys.executable, "train.py", "--p", "5000", "--checkpoint-dir", str(tmp_path / "c"),
                          "--results-dir", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: a full batch of 7,500,000 training pairs at p = 5000 needs about")
    assert "--batch-size" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


def test_the_suggested_batch_size_fits_and_smaller_steps_pass(monkeypatch):
    monkeypatch.setattr(config, "available_bytes", lambda device: 2**30)  # a machine with 1 GB free
    cfg = Config(p=1009)
    with pytest.raises(ValueError, match=r"--batch-size (\d+)") as err:
        check_memory(cfg)
    suggested = int(err.value.args[0].split("--batch-size ")[1].split()[0])
    assert step_bytes(cfg, suggested) <= 2**30 / 4 < step_bytes(cfg, 4 * suggested)
    check_memory(Config(p=1009, batch_size=suggested))  # passes
    check_memory(Config(p=113))  # the default full batch needs ~0.1 GB


def test_step_bytes_grows_with_the_batch_and_the_loss_precision():
    small, big = step_bytes(Config(), 100), step_bytes(Config(), 200)
    assert 0 < small < big and step_bytes(Config(loss_dtype="float64"), 100) > small


def test_chunked_scores_equal_one_pass():
    torch.manual_seed(0)
    model = ToyMLP(31, 16, 32)
    data = make_data(31, "add", 0.5, 1, label_noise=0.2)
    a, b, y = data.subset("train")
    y_true = data.subset("train", true_labels=True)[2]
    whole = score_pairs(model, a, b, y, y_true)
    for rows in (1, 7, 100, 10**6):
        chunked = score_pairs(model, a, b, y, y_true, rows)
        for one, many in zip(whole, chunked):
            torch.testing.assert_close(one, many, rtol=1e-6, atol=0)
    loss, correct = cross_entropy_per_row(model(a, b), y)
    assert torch.equal(whole[1], correct) and torch.equal(whole[0], loss)


def test_an_analysis_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import interpretability
    from analysis import summary

    cfg = Config(p=23, d_embed=8, d_hidden=16, epochs=2, checkpoint_dir=str(tmp_path / "c"),
                 results_dir=str(tmp_path / "r"))
    train(cfg, progress=False)
    monkeypatch.setattr(summary, "available_bytes", lambda device: 10**5)  # < the estimate (2 GB)
    code = interpretability.main(["--checkpoint", str(tmp_path / "c/model_final.pth"), "--results-dir",
                                  str(tmp_path / "analysis"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: analysing this p = 23 model needs about") and err.count("\n") == 1
    assert not (tmp_path / "analysis").exists()


def test_bench_analysis_measures_every_phase_and_puts_the_chunks_back(tmp_path, capsys):
    import bench_analysis
    from analysis import circuit

    cfg = Config(p=23, d_embed=8, d_hidden=16, epochs=2, checkpoint_dir=str(tmp_path / "c"),
                 results_dir=str(tmp_path / "r"))
    train(cfg, progress=False)
    chunks = circuit.Grid.chunks
    assert bench_analysis.main(["--checkpoint", str(tmp_path / "c/model_final.pth"), "--chunks", "1",
                                "--results-dir", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    for name in ("rank_neurons", "ablation_curves", "circuit_size", "fourier_analysis", "component_ablations",
                 "clock_pizza", "write_plots"):
        assert f"\n{name} " in printed and "MB resident" in printed
    assert circuit.Grid.chunks is chunks  # the real analysis afterwards runs whole
    assert (tmp_path / "plots/ablation_curves.png").exists()
