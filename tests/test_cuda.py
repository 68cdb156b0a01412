"""What only a CUDA GPU can check: train.py's CUDA-graph step and the batched engine on the GPU.
Skipped without one (CI has none); run on a GPU machine with `python -m pytest tests/test_cuda.py`."""
from dataclasses import replace

import pytest
import torch

import model
from config import LOSS_DTYPES, Config, model_config
from core.checkpoint import build_model, load_checkpoint
from core.training import CapturedStep, evaluate, make_optimizer, train, train_one_epoch
from dataset import make_data
from sweeps.batched import Stack

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def fresh(cfg: Config, capturable: bool):
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg)).to(CUDA)
    return model, make_optimizer(model, cfg, capturable=capturable)


def relative_difference(a: dict, b: dict) -> float:
    """The largest ||a - b|| / ||b|| over the parameters.

    Not the largest single difference: on a GPU the embedding gradient is summed with atomic adds in any
    order, and where a gradient entry cancels to ~0 that rounding decides its sign, which Adam's early
    steps (about lr x sign) turn into a difference of ~lr in that one weight. Measured on an H100: after 10
    and 20 steps, single weights of otherwise matching runs differed by 0.001 to 0.07. A wrong step (a
    missed update, another weight decay or seed) moves whole tensors by percent."""
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b)


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_the_captured_step_replays_the_eager_step(arch):
    """20 steps through CapturedStep (3 eager, then graph replays) against 20 eager steps with the same
    capturable optimizer: the same weights up to the atomic adds' rounding (relative_difference)."""
    cfg = Config(arch=arch, loss_dtype="float64" if arch == "transformer" else "float32")
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed).to(CUDA)
    graphed, opt_graphed = fresh(cfg, capturable=True)
    eager, opt_eager = fresh(cfg, capturable=True)
    start = {n: w.detach().clone() for n, w in graphed.named_parameters()}
    step = CapturedStep(graphed, opt_graphed, data, LOSS_DTYPES[cfg.loss_dtype])
    for _ in range(20):
        step()
        train_one_epoch(eager, opt_eager, data, True, 0, None, LOSS_DTYPES[cfg.loss_dtype])
    assert step.graph is not None
    weights, expected = dict(graphed.named_parameters()), dict(eager.named_parameters())
    assert relative_difference(weights, start) > 0.05  # it trained
    assert relative_difference(weights, expected) < 1e-3, relative_difference(weights, expected)


def test_a_resumed_cuda_run_matches_an_uninterrupted_one(tmp_path):
    """Stopped at epoch 20 and resumed to 40 (3 eager steps again, a new graph) against 40 epochs at once
    (up to the atomic adds' rounding, see relative_difference; bit for bit is tested on the CPU)."""
    def run(name, epochs, resume=None):
        cfg = Config(device="cuda", epochs=epochs, stop_after_grok=0, checkpoint_every=20,
                     checkpoint_dir=str(tmp_path / name / "c"), results_dir=str(tmp_path / name / "r"))
        train(cfg, resume, progress=False)
        return load_checkpoint(tmp_path / name / "c" / "latest.pth")

    straight = run("straight", 40)
    first = run("split", 20)
    resumed = run("split", 40, resume=first)
    assert resumed["epoch"] == straight["epoch"] == 40
    assert relative_difference(resumed["model"], straight["model"]) < 1e-3
    assert resumed["history"]["test_acc"] == pytest.approx(straight["history"]["test_acc"], abs=0.01)


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_the_batched_engine_on_cuda_follows_train_py(arch):
    """Four models of different seeds and weight decays, 10 steps on the GPU: each within rounding of
    train.py's eager loop on the GPU (relative_difference; batched and single matrix products pick different
    kernels too), and evaluated alike."""
    base = Config(arch=arch, device="cuda", loss_dtype="float64" if arch == "transformer" else "float32")
    cfgs = [replace(base, seed=s, weight_decay=wd) for s, wd in ((0, 1.0), (1, 1.0), (2, 0.3), (3, 3.0))]
    stack = Stack(cfgs, CUDA)
    for _ in range(10):
        stack.train_step(LOSS_DTYPES[base.loss_dtype])
    metrics = stack.evaluate()
    for row, i in enumerate(stack.index):
        model, optimizer = fresh(cfgs[i], capturable=False)
        data = make_data(base.p, base.op, base.train_frac, base.data_seed).to(CUDA)
        for _ in range(10):
            train_one_epoch(model, optimizer, data, True, 0, None, LOSS_DTYPES[base.loss_dtype])
        batched = {name: w[row] for name, w in zip(stack.names, stack.params)}
        assert relative_difference(batched, dict(model.named_parameters())) < 1e-3, i
        expected = evaluate(model, data)
        for key in ("train_acc", "test_acc"):
            assert metrics[row][key] == pytest.approx(expected[key], abs=2e-3), (i, key)
        assert metrics[row]["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-3), i


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_the_onehot_lookup_on_cuda_repeats_bit_for_bit_and_follows_the_gather(arch, monkeypatch):
    """model.LOOKUP = "onehot" (matrix products instead of index_select and its atomic-add backward): two runs of
    10 batched steps give the same bits, and stay within rounding of the gather (relative_difference)."""
    base = Config(arch=arch, device="cuda", loss_dtype="float64" if arch == "transformer" else "float32")
    cfgs = [replace(base, seed=s) for s in range(4)]

    def ten_steps():
        stack = Stack(cfgs, CUDA)
        for _ in range(10):
            stack.train_step(LOSS_DTYPES[base.loss_dtype])
        return {name: w.detach().clone() for name, w in zip(stack.names, stack.params)}

    gathered = ten_steps()
    monkeypatch.setattr(model, "LOOKUP", "onehot")
    first, second = ten_steps(), ten_steps()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert relative_difference(first, gathered) < 1e-3
