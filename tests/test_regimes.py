"""The run-regime rule (after Liu et al. 2022) and the phase diagram's cells, on rows worked out by hand."""
import pytest

from config import Config
from sweeps import database, regimes
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
    for (tf, wd), names in spec.items():
        for seed, ph in enumerate(names):
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


def test_regime_of_a_row_reads_its_two_epochs():
    assert regime_of_row({"memorization_epoch": 20, "grokking_epoch": 300}) == "grokking"
    assert regime_of_row({"diverged": False, "memorization_epoch": 20, "grokking_epoch": None}) == "memorization"
    assert regime_of_row({"memorization_epoch": None, "grokking_epoch": None}) == "confusion"


def test_cells_sort_numbers_before_names_and_take_the_median_delay():
    rows = [{"x": x, "y": 1, "regime": "grokking", "grokking_epoch": 100 * (i + 1), "grokking_delay": d}
            for i, (x, d) in enumerate([(2, 10.0), (1, 20.0), ("b", 30.0), ("a", None), (1, 40.0), (1, None)])]
    data = regime_cells(rows, "x", "y")
    assert data["x"] == [1, 2, "a", "b"] and data["y"] == [1]
    assert data["cells"][(1, 1)] == {"n": 3, "counts": {"grokking": 3}, "regime": "grokking",
                                     "median_grokking_epoch": 500, "median_delay": 30.0}
    assert data["cells"][("a", 1)]["median_delay"] is None


def test_cells_refuse_what_they_cannot_draw():
    with pytest.raises(ValueError, match="^no runs to draw$"):
        regime_cells([], "train_frac", "weight_decay")
    with pytest.raises(ValueError, match="the runs have no setting 'data_seed': name train.py Config fields"):
        regime_cells(hand_rows(), "train_frac", "data_seed")
    mixed = hand_rows() + [{"train_frac": 0.2, "weight_decay": 1.0, "seed": 9, "lr": 0.01, "regime": "grokking"}]
    with pytest.raises(ValueError, match=r"differ in lr \(e.g. lr = 0.01, 0.03\): choose one value of each"):
        regime_cells(mixed, "train_frac", "weight_decay")
    assert len(regime_cells(mixed, "train_frac", "weight_decay", ignore=("seed", "lr"))["cells"]) == 4


@pytest.mark.parametrize("name, label", [
    ("train_frac", "train_frac (share of all p*p pairs used for training)"),  # cut at ", in (0, 1)"
    ("weight_decay", "weight_decay (AdamW decoupled weight decay)"),          # cut at " (>= 0)"
    ("batch_size", "batch_size (minibatch size)"),                            # cut at ";"
    ("not_a_field", "not_a_field"),
])
def test_axis_labels_are_the_field_and_the_start_of_its_help(name, label):
    assert regimes._axis_label(name) == label


def seeded_rows(seeds, **settings):
    return [{"arch": "mlp", "op": "add", "p": 113, "seed": s, "train_frac": 0.3, "weight_decay": 1.0} | settings
            for s in seeds]


@pytest.mark.parametrize("rows, x, y, title", [
    (seeded_rows(range(4)), "train_frac", "weight_decay",
     "Run regimes of ToyMLP on (a + b) mod 113 over train_frac × weight_decay, 4 seeds per cell (0-3)"),
    (seeded_rows([0, 2, 5], arch="transformer", op="sub"), "lr", "weight_decay",
     "Run regimes of 1-layer transformer on (a - b) mod 113 over lr × weight_decay, 3 seeds per cell (0, 2, 5)"),
    (seeded_rows([0, 1, 2]), "train_frac", "weight_decay",
     "Run regimes of ToyMLP on (a + b) mod 113 over train_frac × weight_decay, 3 seeds per cell (0, 1, 2)"),
    (seeded_rows([0, 2, 4, 6, 8, 10, 12, 14, 16]), "train_frac", "weight_decay",
     "Run regimes of ToyMLP on (a + b) mod 113 over train_frac × weight_decay, 9 seeds per cell "
     "(0, 2, 4, 6, 8, 10, 12, 14, ...)"),
    (seeded_rows([0]) + seeded_rows([1], p=97), "train_frac", "weight_decay",
     "Run regimes of ToyMLP over train_frac × weight_decay, 2 seeds per cell (0, 1)"),  # p varies: no task
    (seeded_rows([0], p=97) + seeded_rows([0]), "p", "weight_decay",
     "Run regimes of ToyMLP over p × weight_decay, 1 seed per cell (0)"),  # p on an axis
    (seeded_rows([0]) + seeded_rows([1], arch="transformer", op="mul"), "train_frac", "weight_decay",
     "Run regimes of runs over train_frac × weight_decay, 2 seeds per cell (0, 1)"),
    ([{"arch": "mlp", "op": "add", "p": 113}], "train_frac", "weight_decay",
     "Run regimes of ToyMLP on (a + b) mod 113 over train_frac × weight_decay"),  # no seeds recorded
])
def test_diagram_titles_say_what_the_cells_share(rows, x, y, title):
    assert regimes.diagram_title(rows, x, y) == title


def test_draw_reads_a_database_by_path_or_connection_and_hands_the_plot_its_labels(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(regimes, "plot_phase_diagram", lambda *args: calls.append(args))
    conn = database.connect(tmp_path / "sweep.sqlite")
    database.put_runs(conn, [record(Config(train_frac=tf, seed=s), grokking_epoch=100 * (s + 1))
                             for tf in (0.3, 0.5) for s in (0, 1)])
    monkeypatch.chdir(tmp_path)
    data = draw_phase_diagram(tmp_path / "sweep.sqlite", "train_frac", "weight_decay")
    assert data["x"] == [0.3, 0.5] and [c["n"] for c in data["cells"].values()] == [2, 2]
    (drawn, path, x_label, y_label, title, names, rule, bar), = calls
    assert drawn is data and path == "results/phase_diagram.png"
    assert (x_label, y_label) == (regimes._axis_label("train_frac"), regimes._axis_label("weight_decay"))
    assert title == regimes.diagram_title([database.flat_row(r) for r in database.get_runs(conn)],
                                          "train_frac", "weight_decay")
    assert (names, rule, bar) == (regimes.REGIMES, regimes.REGIME_RULE, 0.99)
    data = draw_phase_diagram(conn, "train_frac", "weight_decay", where={"seed": 1, "train_frac": [0.5]})
    assert list(data["cells"]) == [(0.5, 1.0)] and data["cells"][(0.5, 1.0)]["median_grokking_epoch"] == 200
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4  # a connection passed in stays open
    conn.close()


def record(cfg, **summary) -> dict:
    row = {"p": cfg.p, "seed": cfg.seed, "memorization_epoch": 20, "grokking_epoch": 300,
           "grokking_delay": 15.0} | summary
    return {"config_hash": database.config_hash(cfg), "config_key": database.config_key(cfg), "config": vars(cfg),
            "status": "done", "regime": regime_of_row(row), "analyzed": 0, "summary": row, "history": None,
            "checkpoint": None, "created": "2026-01-01T00:00:00+00:00", "provenance": {"command": "test"}}


def test_numbers_sort_by_value_and_names_after_them_on_both_axes():
    rows = [{"x": x, "y": y, "regime": "grokking"} for x, y in [(10, 1), (9, "a"), ("b", 1), (9, 1)]]
    data = regime_cells(rows, "x", "y")
    assert data["x"] == [9, 10, "b"] and data["y"] == [1, "a"]  # 9 before 10: by value, not as text


def test_the_refusal_names_every_setting_that_varies():
    rows = hand_rows() + [{"train_frac": 0.2, "weight_decay": 1.0, "seed": 9, "lr": 0.01, "op": "sub",
                           "regime": "grokking"}]
    with pytest.raises(ValueError, match=r"the runs also differ in op, lr \(e.g. op = None, sub\)"):
        regime_cells(rows, "train_frac", "weight_decay")


@pytest.mark.parametrize("rows, x, title", [
    (seeded_rows([2, 3, 4, 5]), "train_frac", "Run regimes of ToyMLP on (a + b) mod 113 over train_frac × weight_decay, "
                                              "4 seeds per cell (2-5)"),
    (seeded_rows([0, 2, 4, 6, 8, 10, 12, 14]), "train_frac", "Run regimes of ToyMLP on (a + b) mod 113 over "
                                                             "train_frac × weight_decay, 8 seeds per cell "
                                                             "(0, 2, 4, 6, 8, 10, 12, 14)"),
    (seeded_rows([0], arch="lstm", op="pow"), "train_frac", "Run regimes of runs on (a pow b) mod 113 over "
                                                            "train_frac × weight_decay, 1 seed per cell (0)"),
    (seeded_rows([0]), "p", "Run regimes of ToyMLP over p × weight_decay, 1 seed per cell (0)"),
])
def test_diagram_titles_of_unusual_grids(rows, x, title):
    assert regimes.diagram_title(rows, x, "weight_decay") == title


def test_drawing_from_a_missing_database_creates_none(tmp_path):
    with pytest.raises(database.SweepDBError, match="no sweep database at"):
        draw_phase_diagram(tmp_path / "missing.sqlite", "train_frac", "weight_decay", path=tmp_path / "d.png")
    assert not (tmp_path / "missing.sqlite").exists() and not (tmp_path / "d.png").exists()
