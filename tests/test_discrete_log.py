"""The analysis of mul and div in the discrete-log basis, on networks whose answer is known."""
import math

import pytest
import torch

import interpretability
from analysis import fourier
from analysis.circuit import Grid, key_frequency_losses, select_key_frequencies
from analysis.summary import analyze, summarize
from dataset import make_data
from handbuilt import discrete_log_model
from model import ToyMLP, cross_entropy_per_row

P, G, KEYS = 59, 2, [5, 17, 29]  # 29 = (p - 1) / 2: the sign character, one-dimensional


def grid_for(p=P, op="mul"):
    data = make_data(p, op, 0.3, 0)
    return Grid(p, op, data.train_idx, data.test_idx)


def is_generator(g, p):
    return len({pow(g, i, p) for i in range(p - 1)}) == p - 1


@pytest.mark.parametrize("p", [2, 3, 5, 7, 11, 13, 59, 97, 113, 127, 149, 191, 307])
def test_primitive_root_is_the_smallest_generator(p):
    g = fourier.primitive_root(p)
    assert is_generator(g, p) and not any(is_generator(h, p) for h in range(1, g))


def test_bases_by_hand():
    add = fourier.basis_for(7, "add")
    assert (add.n, add.op, add.generator, add.tokens.tolist()) == (7, "add", None, list(range(7)))
    assert fourier.basis_for(7, "sub").op == "sub"
    mul = fourier.basis_for(7, "mul")  # 3 generates Z_7^*: 3^0..3^5 = 1, 3, 2, 6, 4, 5
    assert (mul.n, mul.op, mul.generator, mul.tokens.tolist()) == (6, "add", 3, [1, 3, 2, 6, 4, 5])
    assert fourier.basis_for(7, "div").op == "sub"
    assert mul.grid_rows(7)[:3].tolist() == [1 * 7 + 1, 1 * 7 + 3, 1 * 7 + 2]
    grid = torch.arange(49).reshape(7, 7)
    assert mul.grid(grid)[1, 2].item() == 3 * 7 + 2 and mul.table(torch.arange(7) * 10)[3].item() == 60
    assert (add.name, mul.name) == ("Z_7", "discrete log base 3 (Z_6)")
    three = fourier.basis_for(3, "mul")  # the smallest odd prime: 2 generates {1, 2}
    assert (three.n, three.generator, three.tokens.tolist()) == (2, 2, [1, 2])
    for p, op in ((12, "mul"), (9, "div"), (2, "mul"), (4, "mul"), (8, "div")):
        with pytest.raises(fourier.NoBasis, match=f"^op {op} mod {p}: {p} is not an odd prime, so the non-zero residues "
                           "are not a cyclic group \\(zero divisors, and no generator in general\\) and there is no "
                           "discrete-log basis$"):
            fourier.basis_for(p, op)
    with pytest.raises(fourier.NoBasis, match="^op 'pow' has no known basis$"):
        fourier.basis_for(7, "pow")


@pytest.mark.parametrize("op", ["mul", "div"])
def test_the_hand_built_network_computes_the_op(op):
    model, _ = discrete_log_model(P, KEYS, G, op=op)
    data = make_data(P, op, 0.5, 0)
    with torch.no_grad():
        assert torch.equal(model(data.a, data.b).argmax(1), data.y)


@pytest.mark.parametrize("op", ["mul", "div"])
def test_the_analysis_finds_exactly_the_discrete_log_circuit(op):
    model, neuron_freq = discrete_log_model(P, KEYS, G, op=op)
    grid = grid_for(op=op)
    with torch.no_grad():
        result = analyze(model, grid, draws=1)
    f = result["fourier"]
    assert f["basis"].generator == G and f["basis"].n == P - 1 and f["basis"].op == ("add" if op == "mul" else "sub")
    assert f["key_frequencies"] == KEYS and f["key_frequency_candidates"] == KEYS
    # every circuit neuron in its own cluster; the zero detector in none, and so the neurons of the sign
    # character k = 29 whose phase is pi/2: cos(pi i + pi/2) = 0 for every i, so they are dead by construction
    dead_sign = [8 * 2 + 2 * 2 + s for s in range(2)]  # KEYS[2] = 29, its third phase (pi/2), both signs
    expected = [None if n in dead_sign else k for n, k in enumerate(neuron_freq)]
    assert f["neuron_cluster"] == expected
    assert f["key_frequency_power_fraction"] == pytest.approx(1.0, abs=1e-9)
    assert f["logit_variance_explained"] > 0.999  # over the non-zero pairs, the logits are the sum of the waves
    assert f["restricted_acc"] == 1.0 and f["excluded_acc"] < 0.2
    removal = {case["ablation"]: case for case in f["frequency_ablation"]}
    assert removal["remove all non-key"]["acc"] == 1.0
    base = result["losses"]["all"]["loss"]
    assert removal["remove 5"]["loss"] > 2 * base and removal["remove 17"]["loss"] > 2 * base
    # the sign character only separates classes of the other parity, which 5 and 17 already push far
    # down: removing it barely moves the loss, and its 6 live neurons are what make it key
    assert removal["remove 29"]["loss"] == pytest.approx(base, rel=1e-5)
    assert f["key_frequency_evidence"][29]["neurons"] == 6 and f["key_frequency_evidence"][29]["key"]
    summary = summarize(result, "built", {"p": P, "op": op})
    assert summary["basis"]["name"] == f"discrete log base {G} (Z_{P - 1})"
    assert summary["basis"]["pairs"].startswith("pairs without a 0 operand")
    assert summary["key_frequency_candidates"] == f["key_frequency_candidates"] == KEYS
    assert summary["key_frequency_evidence"] == f["key_frequency_evidence"] and summary["key_frequency_evidence"][29]["key"]
    assert summary["structure"] == "clear"


def test_the_zero_pairs_are_left_out_of_the_restricted_loss():
    """The restricted logits of the built network, over the non-zero pairs, are the model's own
    (its logits there are exactly the key waves plus a per-class constant), so the restricted loss
    equals the model's loss on exactly those pairs; counting the 0 pairs would change it."""
    model, _ = discrete_log_model(P, KEYS, G)
    grid = grid_for()
    with torch.no_grad():
        logits = model(grid.a, grid.b)
    losses = key_frequency_losses(logits, grid, KEYS)
    nonzero = grid.pairs("all", in_basis=True)
    assert len(nonzero) == (P - 1) ** 2 and len(grid.pairs("all")) == P * P
    loss, _ = cross_entropy_per_row(logits[grid.rows[nonzero]], grid.y[nonzero])
    assert losses["restricted_loss"] == pytest.approx(loss.mean().item(), rel=1e-6)
    assert losses["restricted_loss"] != pytest.approx(grid.loss_acc(logits)[0], rel=1e-3)
    # without the key waves only each class's mean over the non-zero pairs is left: the excluded loss is that
    # constant's loss on the non-zero training pairs
    constant = logits[grid.rows[nonzero]].double().mean(0)
    train = grid.pairs("train", in_basis=True)
    assert len(train) < len(grid.pairs("train"))
    loss, _ = cross_entropy_per_row(constant.expand(len(train), -1), grid.y[train])
    assert losses["excluded_loss"] == pytest.approx(loss.mean().item(), rel=1e-6)


def test_a_random_network_has_no_key_frequencies_in_the_log_basis():
    torch.manual_seed(0)
    model = ToyMLP(P, 32, 64).eval()
    with torch.no_grad():
        f = analyze(model, grid_for(), draws=1)["fourier"]
    assert f["key_frequencies"] == [] and f["basis"].generator == G


def test_a_composite_modulus_has_no_basis_and_the_rest_is_analysed(tmp_path, capsys):
    from core.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = ToyMLP(12, 8, 16).eval()
    data = make_data(12, "mul", 0.5, 0)
    save_checkpoint(tmp_path / "m.pth", config={"p": 12, "op": "mul", "model": model.config()}, model=model.state_dict(),
                    epoch=0, history={}, train_idx=data.train_idx, test_idx=data.test_idx)
    assert interpretability.main(["--checkpoint", str(tmp_path / "m.pth"), "--results-dir", str(tmp_path / "r"),
                                  "--quiet", "--draws", "1"]) == 0
    out = capsys.readouterr().out
    assert "No Fourier analysis: op mul mod 12: 12 is not an odd prime" in out
    import json
    summary = json.loads((tmp_path / "r" / "analysis_summary.json").read_text())
    assert summary["basis"] is None and summary["structure"] == "no known basis" and summary["circuit_size"] is None
    assert (tmp_path / "r" / "activation_heatmap.png").exists() and not (tmp_path / "r" / "fourier_spectrum.png").exists()


def test_the_key_frequency_rule_by_hand():
    """A candidate is key with a neuron in its cluster or a removal that doubles the loss, not otherwise."""
    neuron_freq, share = [3, 3, 7, 9, 9], [0.9, 0.4, 0.6, 0.3, 0.2]  # 3: one member; 7: one; 9: none (< 50 %)
    removal = [{"loss": 1.0}, {"loss": 1.0}, {"loss": 1.9}, {"loss": 2.0}]
    keys, evidence = select_key_frequencies([3, 7, 9, 11], neuron_freq, share, removal, 1.0)
    assert keys == [3, 7, 11]  # 9: no neuron and 1.9x; 11: no neuron but exactly 2x
    assert evidence[9] == {"neurons": 0, "removal_loss_ratio": 1.9, "key": False}
    assert evidence[3]["neurons"] == 1 and evidence[7]["neurons"] == 1 and evidence[11]["removal_loss_ratio"] == 2.0
    # a neuron with exactly half its variance in k counts; the ratio is the removal's loss over the base loss
    keys, evidence = select_key_frequencies([5, 6], [5, 6], [0.5, 0.49], [{"loss": 3.0}, {"loss": 3.0}], 2.0)
    assert keys == [5] and evidence[5]["neurons"] == 1 and evidence[6] == {"neurons": 0, "removal_loss_ratio": 1.5,
                                                                           "key": False}
    # a model whose loss rounds to exactly 0: any removal that costs something counts as an infinite ratio
    keys, evidence = select_key_frequencies([9], neuron_freq, share, [{"loss": 1e-9}], 0.0)
    assert keys == [9] and evidence[9]["removal_loss_ratio"] == float("inf")


def test_a_frequency_that_stands_out_but_does_not_matter_is_not_key():
    """The add circuit of handbuilt_model plus a faint frequency-13 wave in a spare embedding direction
    that reaches every neuron through a tiny weight: it stands out of the spectrum (every other
    non-key frequency has no power at all), no neuron is dominated by it and removing it changes
    the loss by far less than 2x. The old rule (spectrum only) reported it; the new one does not."""
    from handbuilt import handbuilt_model

    p, keys = 59, [4, 11]
    core, _ = handbuilt_model(p, keys)
    model = ToyMLP(p, core.d_embed + 1, core.d_hidden, "quadratic")
    x = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        for w in model.parameters():
            w.zero_()
        model.W_E[:, :-1] = core.W_E
        model.W_E[:, -1] = torch.cos(2 * math.pi * 13 * x / p)
        model.W_in[:core.d_embed] = core.W_in[:core.d_embed]
        model.W_in[core.d_embed + 1:-1] = core.W_in[core.d_embed:]
        model.W_in[core.d_embed] = 0.01  # a's spare direction feeds every neuron a little
        model.W_U.copy_(core.W_U)
    data = make_data(p, "add", 0.3, 0)
    with torch.no_grad():
        f = analyze(model.eval(), Grid(p, "add", data.train_idx, data.test_idx), draws=1)["fourier"]
    assert f["key_frequency_candidates"] == [4, 11, 13]
    assert f["key_frequencies"] == keys
    assert f["key_frequency_evidence"][13]["neurons"] == 0 and f["key_frequency_evidence"][13]["removal_loss_ratio"] < 1.1


def test_grid_score_in_basis_leaves_out_the_pairs_with_a_zero_operand():
    """Logits right on every pair with no 0 operand and wrong on the others: in the basis the accuracy is 1
    and the loss is taken over the (p - 1)^2 covered pairs only; over all pairs both show the wrong ones."""
    p = 7
    grid = grid_for(p)
    y = grid.a * grid.b % p  # the answer at each grid position (a, b)
    logits = torch.nn.functional.one_hot(y, p).double() * 10  # (p*p, p) over the grid
    has_zero = (grid.a == 0) | (grid.b == 0)
    logits[has_zero] = logits[has_zero].roll(1, dims=1)
    covered = ~has_zero
    assert (grid.position[has_zero] == -1).all() and grid.position[covered].sort()[0].tolist() == list(range(36))
    assert grid.score(logits, in_basis=True) == pytest.approx(
        (float(cross_entropy_per_row(logits[covered], y[covered])[0].mean()), 1.0))
    loss, acc = grid.score(logits)
    assert acc == pytest.approx((p - 1) ** 2 / p**2)
    assert loss == pytest.approx(float(cross_entropy_per_row(logits, y)[0].mean()))
