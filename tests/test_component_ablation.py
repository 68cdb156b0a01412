"""Component ablations against weight surgery on hand-built networks, and clock or pizza in the analysis."""
import pytest
import torch

from analysis import attention
from analysis.circuit import Grid, correct_logit_in_basis, frequency_ablation
from analysis.components import activation_mean, component_ablations, hook_components, replace_at
from analysis.summary import analyze, findings, summarize
from dataset import make_data
from handbuilt import annotated_model, discrete_log_model, fourier_transformer, handbuilt_model, pizza_model
from core.transformer import Transformer
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


def test_activation_mean_is_the_mean_over_all_pairs():
    torch.manual_seed(0)
    model, grid = ToyMLP(11, 4, 6), grid_for(11)
    with torch.no_grad():
        direct = model.run_with_cache(grid.a, grid.b)[1]["hidden_post"].double().mean(0)  # one batch of all pairs
        torch.testing.assert_close(activation_mean(model, grid, "hidden_post"), direct)


def test_replace_at_changes_only_the_named_position_and_head():
    torch.manual_seed(0)
    x, value = torch.randn(4, 3, 2, 5), torch.randn(3, 2, 5).double()  # a mean in float64, as activation_mean's
    out = replace_at(2, 1, value)(x)
    assert torch.equal(out[:, 2, 1], value[2, 1].float().expand(4, 5))
    keep = torch.ones(3, 2, dtype=torch.bool)
    keep[2, 1] = False
    assert torch.equal(out[:, keep], x[:, keep]) and out.dtype == x.dtype
    assert torch.equal(replace_at(0)(x)[:, 0], torch.zeros(4, 2, 5))  # zero ablation of position 0
    flat, head_mean = torch.randn(4, 2, 5), torch.randn(2, 5)  # no position: x[:, index] is the head
    out = replace_at(None, 1, head_mean)(flat)
    assert torch.equal(out[:, 1], head_mean[1].expand(4, 5)) and torch.equal(out[:, 0], flat[:, 0])


@pytest.mark.parametrize("part, operand", [("embedding, a part", 0), ("embedding, b part", 1)])
def test_a_transformer_without_one_operands_embedding_no_longer_reads_it(part, operand):
    """Mean-ablating the token embedding at a's position (b's) leaves logits that are the same for every a (b)."""
    p = 7
    torch.manual_seed(1)
    model, grid = Transformer(p, d_model=8, n_heads=2, d_mlp=16).eval(), grid_for(p)
    hook, position, head = hook_components(model)[part]
    with torch.no_grad():
        mean = activation_mean(model, grid, hook)
        logits = model.run_with_hooks(grid.a, grid.b, {hook: replace_at(position, head, mean)}).reshape(p, p, p)
    ablated = logits.movedim(operand, 0)  # (the ablated operand, the other, classes)
    torch.testing.assert_close(ablated, ablated[:1].expand_as(ablated), atol=1e-6, rtol=0)
    other = logits.movedim(1 - operand, 0)
    assert (other - other[:1]).abs().max() > 1e-3  # the other operand still matters
