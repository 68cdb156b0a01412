"""Component ablations against weight surgery on hand-built networks, and clock or pizza in the analysis."""
import pytest
import torch

from analysis import attention
from analysis.circuit import Grid, correct_logit_in_basis, frequency_ablation
from analysis.components import component_ablations
from analysis.summary import analyze, findings, summarize
from dataset import make_data
from handbuilt import annotated_model, discrete_log_model, fourier_transformer, handbuilt_model, pizza_model
from model import ToyMLP

P, KEYS = 59, [4, 11, 23]


def grid_for(p=P, op="add"):
    data = make_data(p, op, 0.3, 0)
    return Grid(p, op, data.train_idx, data.test_idx)


def surgery(model: ToyMLP, edit) -> ToyMLP:
    """A copy of model with edit(copy) applied to its weights under no_grad."""
    copy = ToyMLP(model.p, model.d_embed, model.d_hidden, model.activation)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        edit(copy)
    return copy.eval()


def loss_acc(model, grid):
    with torch.no_grad():
        return grid.loss_acc(model(grid.a, grid.b))


def by_name(rows):
    return {r["component"]: r for r in rows}


def test_toymlp_components_match_weight_surgery():
    model, parts = annotated_model(P, KEYS)
    grid = grid_for()
    rows = by_name(component_ablations(model, grid, KEYS))
    d = model.d_embed
    mean_embed = model.W_E.detach().mean(0)  # every token appears p times among the p*p pairs

    def zero_a(m):
        m.W_in[:d] = 0

    def mean_b(m):
        m.b_in += mean_embed @ m.W_in[d:]
        m.W_in[d:] = 0

    expected = {("embedding, a part", "zero"): surgery(model, zero_a),
                ("embedding, b part", "mean"): surgery(model, mean_b),
                ("bias b_U", "zero"): surgery(model, lambda m: m.b_U.zero_()),
                ("bias b_in", "zero"): surgery(model, lambda m: m.b_in.zero_())}
    for (name, mode), edited in expected.items():
        loss, acc = loss_acc(edited, grid)
        assert rows[name][f"{mode}_loss"] == pytest.approx(loss, rel=1e-5), (name, mode)
        assert rows[name][f"{mode}_acc"] == acc
    base = loss_acc(model, grid)
    # b_in holds the constant neuron (1^2 read out as BIAS) and b_U = BIAS: zeroing either removes a bias
    assert rows["bias b_in"]["zero_loss"] != pytest.approx(base[0], rel=1e-3)
    for name in ("bias b_in", "bias b_U"):  # a bias is the same on every input: its mean is itself
        assert (rows[name]["mean_loss"], rows[name]["mean_acc"]) == pytest.approx(base)
    assert rows["embedding, a part"]["zero_acc"] < 0.1


def test_frequency_components_are_the_frequency_ablation():
    model, _ = handbuilt_model(P, KEYS)
    with torch.no_grad():  # a token-mean the ablations must keep: a frequency's part averages 0, not the table
        model.W_E += 0.3 * torch.linspace(-1, 1, model.d_embed)
    grid = grid_for()
    rows = by_name(component_ablations(model, grid, KEYS))
    removal = frequency_ablation(model, grid, KEYS)
    for k, case in zip(KEYS, removal):
        for mode in ("zero", "mean"):  # a frequency k >= 1 averages to 0 over the tokens
            assert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.approx(case["loss"], rel=1e-6)
    assert rows["non-key frequencies"]["zero_loss"] == pytest.approx(removal[-1]["loss"], rel=1e-6)
    assert list(rows) == ["embedding, a part", "embedding, b part", "bias b_in", "bias b_U", "frequency 4",
                          "frequency 11", "frequency 23", "non-key frequencies"]


def test_transformer_components():
    """The hand-built transformer: each head carries one operand, so removing either leaves chance; the
    MLP computes everything, so without its output at '=' the logits are a constant."""
    model, _ = fourier_transformer(P, KEYS)
    grid = grid_for()
    rows = by_name(component_ablations(model, grid, KEYS))
    assert list(rows)[:5] == ["embedding, a part", "embedding, b part", "head 0", "head 1", "MLP output"]
    assert {"bias b_in", "bias b_out", "frequency 4", "non-key frequencies"} <= set(rows)
    with torch.no_grad():
        heads = attention.head_ablations(model, grid)
    for h in (0, 1):
        assert rows[f"head {h}"]["mean_loss"] == pytest.approx(heads[h]["loss"], rel=1e-6)
        assert rows[f"head {h}"]["zero_acc"] <= 2 / P
    assert rows["MLP output"]["zero_acc"] <= 2 / P and rows["MLP output"]["mean_acc"] <= 2 / P
    assert rows["non-key frequencies"]["zero_acc"] == 1.0


@pytest.mark.parametrize("build, expected", [(lambda: handbuilt_model(P, KEYS)[0], "clock"),
                                             (lambda: pizza_model(P, [17, 3, 44]), "pizza")])
def test_the_analysis_reports_clock_or_pizza(build, expected):
    model = build()
    with torch.no_grad():
        result = analyze(model, grid_for(), draws=1)
    summary = summarize(result, "built", {"p": P, "op": "add"})
    assert summary["clock_pizza"]["verdict"] == expected
    assert any(line.startswith("Clock or pizza") and f": {expected} (" in line
               for line in findings(summary))


@pytest.mark.parametrize("op", ["mul", "div"])
def test_clock_or_pizza_of_mul_and_div_reads_the_correct_logit_in_the_log_basis(op):
    """The discrete-log clock's correct logit is the same on every non-zero pair (q = 1 by the constant
    rule); over raw tokens the 0 pairs (a large class-0 logit) would make it vary, and so would the
    wrong class (i + j for div, whose answer is g^(i - j))."""
    model, _ = discrete_log_model(P, [5, 17], 2, op=op)
    grid = grid_for(op=op)
    with torch.no_grad():
        logits = model(grid.a, grid.b)
        correct = correct_logit_in_basis(logits, grid)
    assert correct.shape == (P - 1, P - 1)
    torch.testing.assert_close(correct, torch.full_like(correct, correct[0, 0].item()))
    with torch.no_grad():
        summary = summarize(analyze(model, grid, draws=1), "built", {"p": P, "op": op})
    assert summary["clock_pizza"]["distance_irrelevance"] == 1.0 and summary["clock_pizza"]["verdict"] == "clock"
