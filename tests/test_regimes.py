"""The run-regime rule (after Liu et al. 2022) and the phase diagram's cells, on rows worked out by hand."""
import pytest

from sweeps.regimes import draw_phase_diagram, regime, regime_cells, regime_of_history, regime_of_row

# --- the run-regime rule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("memorized, generalized, expected", [
    (20, 200, "grokking"),         # exactly 10x: grokking
    (20, 199, "comprehension"),    # just under 10x
    (20, 20, "comprehension"),
    (40, 25, "comprehension"),     # test before train
    (20, None, "memorization"),
    (None, None, "confusion"),
    (None, 300, "comprehension"),  # test reached without train (label noise)
])
def test_regime_rule_by_hand(memorized, generalized, expected):
    assert regime(memorized, generalized) == expected


@pytest.mark.parametrize("train_top, test_top, expected", [
    (0.99, 0.99, "grokking"),        # exactly 99 % counts as reached
    (0.99, 0.9899, "memorization"),
    (0.9899, 0.9899, "confusion"),
    (0.9899, 0.99, "comprehension"),
])
def test_regime_rule_at_exactly_99_percent(train_top, test_top, expected):
    history = {"epoch": [10, 20, 200], "train_acc": [0.5, train_top, train_top], "test_acc": [0.0, 0.1, test_top]}
    assert regime_of_history(history) == expected


def test_regime_of_a_diverged_run():
    assert regime_of_row({"p": 11, "seed": 0, "diverged": True}) == "diverged"


# --- the diagram ------------------------------------------------------------------------------------------

def hand_rows():
    rows = []
    spec = {(0.2, 1.0): ["memorization"] * 3, (0.3, 1.0): ["grokking", "grokking", "comprehension"],
            (0.3, 3.0): ["comprehension", "grokking"], (0.2, 3.0): ["confusion", "confusion", "memorization"]}
    epochs = {"grokking": 400, "comprehension": 100}
    for (tf, wd), regimes in spec.items():
        for seed, ph in enumerate(regimes):
            g = epochs.get(ph)
            rows.append({"train_frac": tf, "weight_decay": wd, "seed": seed, "lr": 0.03, "regime": ph,
                         "grokking_epoch": g + seed if g else None, "grokking_delay": g / 20 if g else None})
    return rows


def test_regime_cells_colour_by_majority_with_median_epochs():
    data = regime_cells(hand_rows(), "train_frac", "weight_decay")
    assert data["x"] == [0.2, 0.3] and data["y"] == [1.0, 3.0]
    cells = data["cells"]
    assert cells[(0.2, 1.0)] == {"n": 3, "counts": {"memorization": 3}, "regime": "memorization",
                                 "median_grokking_epoch": None, "median_delay": None}
    assert cells[(0.3, 1.0)]["regime"] == "grokking" and cells[(0.3, 1.0)]["counts"] == {"grokking": 2,
                                                                                        "comprehension": 1}
    assert cells[(0.3, 1.0)]["median_grokking_epoch"] == 400  # of 400, 401 and 102
    assert cells[(0.3, 3.0)]["regime"] == "tie"  # 1 comprehension, 1 grokking: no majority
    assert cells[(0.2, 3.0)]["regime"] == "confusion"


def test_diagram_draws_hand_made_rows_and_refuses_mixed_settings(tmp_path):
    data = draw_phase_diagram(None, "train_frac", "weight_decay", path=tmp_path / "d.png", rows=hand_rows())
    assert (tmp_path / "d.png").stat().st_size > 10_000 and len(data["cells"]) == 4
    data = draw_phase_diagram(None, "train_frac", "weight_decay", where={"train_frac": [0.3]},
                              path=tmp_path / "d.png", rows=hand_rows())
    assert sorted(data["cells"]) == [(0.3, 1.0), (0.3, 3.0)]
    mixed = hand_rows() + [{"train_frac": 0.2, "weight_decay": 1.0, "seed": 9, "lr": 0.01, "regime": "grokking"}]
    with pytest.raises(ValueError, match="differ in lr"):
        regime_cells(mixed, "train_frac", "weight_decay")
