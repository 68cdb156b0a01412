"""The batched engine (sweeps/batched.py) against train.py: the same weights, histories and epochs per model."""
import tempfile
from dataclasses import replace

import pytest
import torch

from config import ARCH_DEFAULTS, LOSS_DTYPES, Config, model_config
from core.checkpoint import build_model, load_model
from core.training import EMBED_NOISE_SEED, make_optimizer, train, train_one_epoch
from dataset import make_data
from sweeps.batched import Stack, check_batchable, train_batched

SMALL = {"mlp": dict(p=23, d_embed=16, d_hidden=32),
         "transformer": dict(p=23, d_model=32, n_heads=2, d_mlp=64, **ARCH_DEFAULTS["transformer"])}


def solo_weights(cfg: Config, steps: int) -> dict:
    """train.py's model after `steps` full-batch epochs (its own optimizer, data and noise generator)."""
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed, cfg.label_noise)
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg))
    optimizer = make_optimizer(model, cfg)
    noise_gen = torch.Generator().manual_seed(cfg.seed ^ EMBED_NOISE_SEED)
    for _ in range(steps):
        train_one_epoch(model, optimizer, data, True, 0, None, LOSS_DTYPES[cfg.loss_dtype], cfg.embed_noise, noise_gen,
                        cfg.loss)
    return dict(model.named_parameters())


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_every_model_of_a_batch_follows_train_py(arch):
    """Different seeds, learning rates, weight decays, betas, label noise and embedding noise in one batch.
    ToyMLP: bit for bit. The transformer: within 1e-5 after 30 steps (measured ~1e-6): its per-model
    intermediates under vmap start at offsets MKL's matmul treats differently, so the last bits differ."""
    base = Config(arch=arch, **SMALL[arch])
    cfgs = [replace(base, seed=0), replace(base, seed=1, lr=base.lr / 3),
            replace(base, seed=2, weight_decay=0.1, beta2=0.99), replace(base, seed=3, label_noise=0.1),
            replace(base, seed=4, embed_noise=0.2, data_seed=7)]
    stack = Stack(cfgs, "cpu")
    for _ in range(30):
        stack.train_step(LOSS_DTYPES[base.loss_dtype])
    for row, i in enumerate(stack.index):
        solo = solo_weights(cfgs[i], 30)
        for name, w in zip(stack.names, stack.params):
            if arch == "mlp":
                assert torch.equal(w[row], solo[name]), (i, name, (w[row] - solo[name]).abs().max())
            else:
                torch.testing.assert_close(w[row], solo[name], atol=1e-5, rtol=0)


def test_padded_splits_of_different_sizes_stay_within_1e5_after_a_step():
    """Models with different train fractions share a batch by padding; one step later they agree to 1e-5
    (padding changes the summation order, so not bit for bit: sweep.py batches equal fractions only)."""
    base = Config(**SMALL["mlp"])
    cfgs = [replace(base, train_frac=0.3), replace(base, train_frac=0.5, seed=1)]
    stack = Stack(cfgs, "cpu")
    for i, (train_idx, _) in stack.splits.items():
        assert torch.equal(train_idx, make_data(23, "add", cfgs[i].train_frac, 598).train_idx)
    losses = stack.train_step(torch.float32)  # each the mean over the model's own split, not the padded width
    for row, i in enumerate(stack.index):
        torch.manual_seed(cfgs[i].seed)
        a, b, y = make_data(23, "add", cfgs[i].train_frac, 598).subset("train")
        solo_loss = torch.nn.functional.cross_entropy(build_model(model_config(cfgs[i]))(a, b), y)
        torch.testing.assert_close(losses[row], solo_loss, rtol=1e-6, atol=0)
    for row, i in enumerate(stack.index):
        solo = solo_weights(cfgs[i], 1)
        for name, w in zip(stack.names, stack.params):
            torch.testing.assert_close(w[row], solo[name], atol=1e-5, rtol=0)


def solo_summary(cfg: Config) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(replace(cfg, checkpoint_dir=f"{tmp}/c", results_dir=f"{tmp}/r"), progress=False)
        _, ckpt = load_model(f"{tmp}/c/model_final.pth")
    return summary, ckpt


def test_memorization_grokking_epochs_and_history_equal_train_py_on_a_small_grid(tmp_path):
    """ToyMLP at p = 41 with half the pairs groks in ~400 epochs; each model stops by its own rule or budget."""
    base = Config(p=41, train_frac=0.5, stop_after_grok=1.5)
    cfgs = [replace(base, seed=s, weight_decay=wd, epochs=e) for s in (0, 1) for wd, e in ((1.0, 1000), (0.3, 100))]
    dirs = [tmp_path / str(i) for i in range(len(cfgs))]
    results = train_batched(cfgs, save_dirs=dirs)
    grokked = 0
    for cfg, result, folder in zip(cfgs, results, dirs):
        solo, solo_ckpt = solo_summary(cfg)
        mine = result["summary"]
        for key in ("memorization_epoch", "grokking_epoch", "epochs_run", "stopped", "final_test_acc"):
            assert mine[key] == solo[key], (cfg.seed, cfg.weight_decay, key)
        grokked += mine["grokking_epoch"] is not None
        assert result["history"]["epoch"] == solo_ckpt["history"]["epoch"]
        for key in ("train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"):  # to the last bit
            assert result["history"][key] == solo_ckpt["history"][key], (cfg.seed, cfg.weight_decay, key)
        model, ckpt = load_model(folder / "model_final.pth")  # what interpretability.py opens
        solo_model = build_model(solo_ckpt["config"]["model"])
        solo_model.load_state_dict(solo_ckpt["model"])
        for name, w in model.named_parameters():
            assert torch.equal(w, dict(solo_model.named_parameters())[name]), name
        assert ckpt["epoch"] == mine["epochs_run"] and torch.equal(ckpt["test_idx"], solo_ckpt["test_idx"])
    assert grokked >= 2  # the grid holds grokking runs, stopped by their rule, and runs cut by their budget
    assert {r["summary"]["stopped"] for r in results} == {"reached 1.5 x the grokking epoch", "epochs"}


def test_a_diverging_model_leaves_the_batch_and_the_others_are_untouched():
    base = Config(**SMALL["mlp"], epochs=15, eval_every=5)
    cfgs = [replace(base, seed=0), replace(base, seed=1, lr=1e30)]
    results = train_batched(cfgs)
    assert results[1]["status"] == "diverged" and results[1]["summary"] is None
    solo, _ = solo_summary(cfgs[0])
    assert results[0]["status"] == "done"
    assert results[0]["summary"]["final_train_loss"] == pytest.approx(solo["final_train_loss"], rel=1e-6)
    with pytest.raises(Exception):
        solo_summary(cfgs[1])  # train.py stops it too (NonFiniteLoss)


def test_label_noise_history_keys_match_train_py():
    cfg = Config(**SMALL["mlp"], epochs=10, label_noise=0.2)
    (result,) = train_batched([cfg])
    _, ckpt = solo_summary(cfg)
    for key in ("clean_train_acc", "noisy_fit_acc", "noisy_true_acc"):
        assert result["history"][key] == pytest.approx(ckpt["history"][key])
    assert result["summary"]["corrupted_pairs"] == round(0.2 * round(0.3 * 23 * 23))


@pytest.mark.parametrize("change, message", [({"p": 29}, "these differ: p"), ({"d_hidden": 8}, "d_hidden"),
                                             ({"batch_size": 64}, "full batch only"),
                                             ({"stop_at_cleanup_end": True}, "keeps no snapshots")])
def test_what_one_batch_cannot_mix_is_refused(change, message):
    base = Config(**SMALL["mlp"])
    alone = "batch_size" in change or "stop_at_cleanup_end" in change  # refused even when every model has it
    cfgs = [replace(base, **change)] if alone else [base, replace(base, **change)]
    with pytest.raises(ValueError, match=message):
        check_batchable(cfgs)


def test_the_compiled_forward_trains_as_the_plain_one():
    """Stack(compiled=True): the training step's forward through torch.compile; three steps of two models give
    the same losses and weights to float rounding."""
    cfgs = [Config(**SMALL["mlp"], seed=s, weight_decay=wd) for s, wd in ((0, 1.0), (1, 0.3))]
    plain, compiled = Stack(cfgs, torch.device("cpu")), Stack(cfgs, torch.device("cpu"), compiled=True)
    for _ in range(3):
        torch.testing.assert_close(compiled.train_step(torch.float32), plain.train_step(torch.float32),
                                   rtol=1e-6, atol=1e-7)
    for w, v in zip(plain.params, compiled.params):
        torch.testing.assert_close(v, w, rtol=1e-5, atol=1e-6)
    assert compiled.train_logits is not compiled.logits and plain.train_logits == plain.logits
