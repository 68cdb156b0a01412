"""The analysis cut into chunks of pairs (large p), and its ablations into blocks of rows,
gives what it gives in one piece.

At p <= 322 every pair fits in one chunk (fourier.CHUNK_BYTES); here the chunk size is shrunk so that
a small grid is cut into several pieces of pairs (and groups of neurons), and the whole result of
summary.analyze must not change beyond float rounding."""
import math

import pytest
import torch

from analysis import fourier, neurons
from analysis.circuit import Grid
from analysis.neurons import row_blocks
from analysis.progress_measures import snapshot_measures
from analysis.summary import analyze
from dataset import make_data
from handbuilt import discrete_log_model, fourier_transformer, handbuilt_model
from model import ToyMLP


def grid_for(p, op):
    data = make_data(p, op, 0.3, 0)
    return Grid(p, op, data.train_idx, data.test_idx)


ORDERED_BY = {"causal_order": "mean_ablation_loss_increase", "activation_order": "activation_variance"}


def assert_same(whole, chunked, where="result"):
    """Equal structure; numbers equal to float rounding (the pieces' matmuls round differently)."""
    if isinstance(whole, dict):
        assert whole.keys() == chunked.keys(), where
        for key in whole:
            if key in ORDERED_BY:  # neurons with equal values (a hand-built model's) may swap places
                values = whole[ORDERED_BY[key]]
                assert_same(values[whole[key]], values[chunked[key]], f"{where}[{key!r}]")
            elif key != "agreement":  # a function of the two orders alone (so of such swaps)
                assert_same(whole[key], chunked[key], f"{where}[{key!r}]")
    elif isinstance(whole, (list, tuple)):
        assert len(whole) == len(chunked), where
        for i, (x, y) in enumerate(zip(whole, chunked)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(whole, torch.Tensor):
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6, msg=where)
    elif isinstance(whole, float):
        assert chunked == pytest.approx(whole, rel=1e-5, abs=1e-7), where
    else:
        assert chunked == whole, where


def trained_mlp(p):
    """A ToyMLP trained a little, so that its neurons differ (no exact ties in the causal order)."""
    torch.manual_seed(0)
    model = ToyMLP(p, 16, 24)
    data = make_data(p, "add", 0.5, 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data.a[data.train_idx], data.b[data.train_idx]),
                                          data.y[data.train_idx]).backward()
        optimizer.step()
    return model.eval()


def jittered(model, scale=1e-3):
    """The model with every weight moved by noise of this relative size: a hand-built network's exact
    ties (equal logits, whose order float rounding decides) are broken, its circuit kept."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in model.parameters():
            w += scale * w.abs().max() * torch.randn(w.shape, generator=gen)
    return model


@pytest.mark.parametrize("build, op", [(lambda: trained_mlp(23), "add"),
                                       (lambda: jittered(handbuilt_model(29, [3, 7])[0]), "add"),
                                       (lambda: jittered(discrete_log_model(29, [3, 7], 2)[0]), "mul"),
                                       (lambda: jittered(fourier_transformer(23, [4])[0]), "add")],
                         ids=["trained mlp", "hand-built mlp", "discrete log", "transformer"])
def test_the_analysis_in_chunks_equals_the_analysis_in_one_piece(build, op, monkeypatch):
    model = build()
    grid = grid_for(model.p, op)
    assert len(grid.chunks()) == 1
    whole = analyze(model, grid, draws=2)
    # 60 pairs per chunk (about 9 to 14 chunks), 1 or 2 neurons per group of the Fourier fractions,
    # and the ablations' row blocks of 7 rows (float32 margins; 3 rows in float64)
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 4 * model.p * 60)
    monkeypatch.setattr(neurons, "CACHE_BYTES", 4 * model.p * 7)
    assert len(grid.chunks()) == math.ceil(model.p**2 / 60) > 8
    assert len(row_blocks(torch.zeros(60, model.p))) == 9
    assert_same(whole, analyze(model, grid, draws=2))


@pytest.mark.parametrize("budget_neurons", [1, 3])
@pytest.mark.parametrize("spare_bytes", [0, 8 * 7 * 7 - 1])
def test_neuron_groups_fill_the_memory_budget_and_no_more(budget_neurons, spare_bytes, monkeypatch):
    """neuron_frequency_fractions measures as many neurons at a time as fit in CHUNK_BYTES of float64 power
    (p * p * 8 bytes each), at least one, and gives what it gives in one piece."""
    p, n = 7, 8
    acts = torch.randn(p, p, n, generator=torch.Generator().manual_seed(0))
    whole = fourier.neuron_frequency_fractions(acts)
    sizes = []
    one_group = fourier._frequency_fractions
    monkeypatch.setattr(fourier, "_frequency_fractions", lambda group: sizes.append(group.shape[-1]) or one_group(group))
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 8 * p * p * budget_neurons + spare_bytes)
    torch.testing.assert_close(fourier.neuron_frequency_fractions(acts), whole, rtol=1e-6, atol=1e-7)
    assert sizes == [budget_neurons] * (n // budget_neurons) + ([n % budget_neurons] if n % budget_neurons else [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_activations_in_chunks_are_the_cache_over_every_pair(dtype, monkeypatch):
    """grid_activations fills its (p, p, d) grids chunk by chunk: equal to one run_with_cache over all p*p pairs,
    in the model's own precision."""
    from analysis.circuit import grid_activations

    torch.manual_seed(0)
    model = ToyMLP(11, 8, 16).to(dtype)
    grid = grid_for(11, "add")
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 4 * 11 * 30)  # 30 pairs per chunk: 5 chunks
    assert len(grid.chunks()) == 5
    out = grid_activations(model, grid, ("hidden_pre", "hidden_post", "logits"))
    with torch.no_grad():
        cache = model.run_with_cache(grid.a, grid.b)[1]
    for name in ("hidden_pre", "hidden_post"):  # (a chunk's matrix products may round differently in float32)
        assert out[name].dtype == dtype
        torch.testing.assert_close(out[name], cache[name].reshape(11, 11, -1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["logits"], cache["logits"], rtol=1e-6, atol=1e-6)


def test_row_blocks_hold_as_many_rows_as_fit_and_at_least_one(monkeypatch):
    monkeypatch.setattr(neurons, "CACHE_BYTES", 4 * 10 * 3)  # three float32 rows of 10
    assert row_blocks(torch.zeros(7, 10)) == [slice(0, 3), slice(3, 6), slice(6, 9)]
    monkeypatch.setattr(neurons, "CACHE_BYTES", 4 * 10 - 1)  # less than one row: one row at a time
    assert row_blocks(torch.zeros(3, 10)) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_grid_chunks_hold_as_many_rows_as_fit_and_at_least_one(monkeypatch):
    grid = grid_for(7, "add")
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 4 * 7 * 20)  # 20 float32 logit rows of p = 7
    assert [len(c) for c in grid.chunks()] == [20, 20, 9] and torch.equal(torch.cat(grid.chunks()), torch.arange(49))
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 4 * 7 - 1)  # less than one row: one row at a time
    assert [c.tolist() for c in grid.chunks(torch.tensor([5, 2, 9]))] == [[5], [2], [9]]


@pytest.mark.parametrize("build, op", [(lambda: trained_mlp(23), "add"),
                                       (lambda: jittered(discrete_log_model(29, [3, 7], 2)[0]), "mul")],
                         ids=["trained mlp", "discrete log"])
def test_the_progress_measures_in_chunks_equal_those_of_one_piece(build, op, monkeypatch):
    """snapshot_measures runs the model once over a grid that fits in one chunk, and chunk by chunk for each
    measure over one that does not: the same measures."""
    model = build()
    grid = grid_for(model.p, op)
    rows = []  # the pairs of each forward pass
    model.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    whole = snapshot_measures(model, grid, [3, 7])
    assert rows == [model.p**2]  # one pass over the grid
    monkeypatch.setattr(fourier, "CHUNK_BYTES", 4 * model.p * 60)
    assert len(grid.chunks()) > 8
    rows.clear()
    assert_same(whole, snapshot_measures(model, grid, [3, 7]))
    assert len(rows) > 8 and max(rows) <= 60  # chunk by chunk
