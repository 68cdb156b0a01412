"""model.LOOKUP: reading token-table rows by one-hot matrix products gives what the gather gives.

The forward is bit-identical (one_hot(a) @ T adds exact zeros to T[a]); the gradient is the same sum in
another order, so equal to float rounding. Training runs then drift apart the way any two summation orders
do: Adam turns a gradient entry that cancels to rounding noise into a step of about lr x its sign (float32:
~1e-3 relative after 10 steps); in float64 that noise is below Adam's eps, and 10 steps agree to 1e-9."""
from dataclasses import replace

import pytest
import torch

import model
from config import LOSS_DTYPES, Config, model_config
from core.checkpoint import build_model
from dataset import make_data
from sweeps.batched import Stack
from test_batched import SMALL

def config(arch):
    return Config(arch=arch, **SMALL[arch])


def built(cfg, dtype=torch.float32):
    torch.manual_seed(cfg.seed)
    return build_model(model_config(cfg)).to(dtype)


def with_lookup(mode, fn, monkeypatch):
    """fn() with model.LOOKUP set to mode, then the lookup as it was."""
    with monkeypatch.context() as patch:
        patch.setattr(model, "LOOKUP", mode)
        return fn()


def train_loss(net, data):
    a, b, y = data.subset("train")
    return torch.nn.functional.cross_entropy(net(a, b).double(), y)


def loss_and_grads(net, data):
    loss = train_loss(net, data)
    return loss, torch.autograd.grad(loss, list(net.parameters()))


@pytest.mark.parametrize("arch", SMALL)
def test_onehot_forward_is_the_gather_bit_for_bit_and_its_gradient_to_rounding(arch, monkeypatch):
    cfg = config(arch)
    net, data = built(cfg), make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed)
    a, b, _ = data.subset("test")
    gathered, (loss, grads) = net(a, b), loss_and_grads(net, data)
    one_hot = with_lookup("onehot", lambda: (net(a, b), loss_and_grads(net, data)), monkeypatch)
    assert torch.equal(one_hot[0], gathered)
    assert one_hot[1][0] == loss
    for g, h in zip(grads, one_hot[1][1]):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7)
    assert max(g.abs().max() for g in grads) > 1e-3  # a real gradient, not zeros


@pytest.mark.parametrize("arch", SMALL)
def test_ten_float64_adamw_steps_agree(arch, monkeypatch):
    cfg = config(arch)
    data = make_data(cfg.p, cfg.op, cfg.train_frac, cfg.data_seed)

    def train():
        net = built(cfg, torch.float64)
        start = [w.detach().clone() for w in net.parameters()]
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
        for _ in range(10):
            opt.zero_grad()
            train_loss(net, data).backward()
            opt.step()
        return start, [w.detach() for w in net.parameters()]

    start, gathered = train()
    one_hot = with_lookup("onehot", train, monkeypatch)[1]
    for w0, w, v in zip(start, gathered, one_hot):
        assert (w - w0).norm() > 1e-3 * w0.norm()  # it trained
        torch.testing.assert_close(v, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", SMALL)
def test_the_batched_engine_takes_the_onehot_lookup_too(arch, monkeypatch):
    """Under vmap, per model: the same losses and, to rounding, the same first step."""
    cfgs = [replace(config(arch), seed=s, weight_decay=wd) for s, wd in ((0, 1.0), (1, 0.3))]

    def one_step():
        stack = Stack(cfgs, torch.device("cpu"))
        losses = stack.train_step(LOSS_DTYPES[cfgs[0].loss_dtype])
        return losses, [w.detach() for w in stack.params], stack.evaluate()

    losses, params, metrics = one_step()
    one_hot = with_lookup("onehot", one_step, monkeypatch)
    assert torch.equal(one_hot[0], losses)
    for w, v in zip(params, one_hot[1]):
        torch.testing.assert_close(v, w, rtol=1e-5, atol=1e-6)
    assert [m["test_acc"] for m in one_hot[2]] == pytest.approx([m["test_acc"] for m in metrics], abs=0.02)
