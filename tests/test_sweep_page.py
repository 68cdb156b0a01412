"""The sweep page (sweeps/page.py, python report.py --sweep DB): its cells' numbers on a database of hand-made runs
with known answers, its refusals, one tiny real sweep end to end, and (in a real headless Chromium, driven by
Playwright) that it loads offline without errors, that the dropdowns change the diagram and a click draws a cell's
curves.

The browser tests skip with a reason where the playwright package or /usr/bin/chromium is missing. To redraw the
docs' screenshot: python tests/test_sweep_page.py results/sweep.html docs/figures/sweep_page.png X Y X_VALUE Y_VALUE
(the settings on the axes, and the cell clicked).
"""
import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as a script too (the screenshot, at the end)
from conftest import CHROMIUM, open_page
from test_regimes import record
from test_sweep import run_sweep

import report
from config import Config
from sweeps import database, page

DRAWN = 2  # plotly layers to wait for: the phase diagram and the runs' curves are drawn
DIAGRAM = "train_frac|weight_decay"

# (train_frac, weight_decay, lr, seed): (memorization epoch, grokking epoch), None = never; "diverged"
HAND_RUNS = {
    (0.3, 1.0, 0.03, 0): (20, 400),   # grokking, delay 20
    (0.3, 1.0, 0.03, 1): (20, 600),   # grokking, delay 30
    (0.3, 1.0, 0.01, 0): (40, 200),   # comprehension, delay 5
    (0.3, 1.0, 0.01, 1): "diverged",
    (0.5, 1.0, 0.03, 0): (10, 50),    # comprehension, delay 5
    (0.5, 1.0, 0.01, 0): (10, None),  # memorization
    (0.3, 0.3, 0.03, 0): (None, None),  # confusion
}  # no run at (0.5, 0.3): an empty cell


def history(memorized, grokked, end: int = 1000) -> dict:
    """Accuracies that step to 1 at the given epochs (evaluated every 5 epochs)."""
    epochs = list(range(0, end + 1, 5))
    return {"epoch": epochs, "train_acc": [1.0 if memorized is not None and e >= memorized else 0.5 for e in epochs],
            "test_acc": [1.0 if grokked is not None and e >= grokked else 0.1 for e in epochs]}


def hand_record(settings: tuple, outcome) -> dict:
    tf, wd, lr, seed = settings
    cfg = Config(train_frac=tf, weight_decay=wd, lr=lr, seed=seed)
    if outcome == "diverged":
        return record(cfg, diverged=True, memorization_epoch=None, grokking_epoch=None, grokking_delay=None)
    memorized, grokked = outcome
    delay = grokked / memorized if memorized and grokked else None
    return record(cfg, memorization_epoch=memorized, grokking_epoch=grokked, grokking_delay=delay) | {
        "history": history(memorized, grokked)}


def write_db(path: Path, runs: dict) -> Path:
    conn = database.connect(path)
    database.put_runs(conn, [hand_record(settings, outcome) for settings, outcome in runs.items()])
    conn.close()
    return path


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory):
    return write_db(tmp_path_factory.mktemp("hand") / "sweep.sqlite", HAND_RUNS)


@pytest.fixture(scope="module")
def hand_data(hand_db):
    return page.page_data(page.load_runs(hand_db), hand_db)


def cell_at(view: dict, place: str) -> dict:
    return next(c for c in view["cells"] if c["place"] == place)


# ---------------------------------------------------------------- the numbers, on hand-made runs

def test_the_dropdowns_offer_the_settings_that_vary_and_a_view_per_ordered_pair(hand_data):
    assert hand_data["x_choices"] == hand_data["y_choices"] == ["train_frac", "lr", "weight_decay"]  # Config order
    assert sorted(hand_data["views"]) == ["lr|train_frac", "lr|weight_decay", "train_frac|lr",
                                          "train_frac|weight_decay", "weight_decay|lr", "weight_decay|train_frac"]
    assert len(hand_data["runs"]) == len(HAND_RUNS)


def test_a_cell_counts_its_runs_per_regime_and_takes_the_medians(hand_data):
    """(0.3, 1): grokking at 400 and 600 (20x, 30x), comprehension at 200 (5x), one diverged run, over two lr."""
    view = hand_data["views"][DIAGRAM]
    cell = cell_at(view, "train_frac = 0.3, weight_decay = 1")
    assert cell["summary"] == "1/4 comprehension, 2/4 grokking, 1/4 diverged, epoch 400, delay 20.0x"
    assert len(cell["runs"]) == 4
    assert {hand_data["runs"][i]["settings"]["lr"] for i in cell["runs"]} == {"0.01", "0.03"}  # pooled over lr
    tie = cell_at(view, "train_frac = 0.5, weight_decay = 1")
    assert tie["summary"] == "1/2 comprehension, 1/2 memorization, epoch 50, delay 5.0x"
    assert cell_at(view, "train_frac = 0.3, weight_decay = 0.3")["summary"] == "1/1 confusion"


def test_the_heatmap_colours_each_cell_by_its_majority_and_leaves_empty_cells_empty(hand_data):
    view = hand_data["views"][DIAGRAM]
    trace, layout = view["data"][0], view["layout"]
    assert (trace["x"], trace["y"]) == (["0.3", "0.5"], ["0.3", "1"])
    codes = page.CELL_CODES
    assert trace["z"] == [[codes.index("confusion"), None], [codes.index("grokking"), codes.index("tie")]]
    assert trace["customdata"][0][1] == -1 and trace["hovertext"][0][1] == ""  # (0.5, 0.3): no runs
    k = trace["customdata"][1][0]
    assert view["cells"][k]["place"] == "train_frac = 0.3, weight_decay = 1"  # what a click on it looks up
    assert "epoch 400<br>delay 20.0x" in trace["hovertext"][1][0]
    assert layout["xaxis"]["title"]["text"].startswith("train_frac (") and layout["yaxis"]["type"] == "category"
    assert "each cell pools the runs of every lr" in layout["title"]["text"]


def test_another_pair_regroups_the_same_runs(hand_data):
    view = hand_data["views"]["lr|train_frac"]
    assert view["data"][0]["x"] == ["0.01", "0.03"]
    assert cell_at(view, "lr = 0.01, train_frac = 0.3")["summary"] == "1/2 comprehension, 1/2 diverged, epoch 200, delay 5.0x"
    assert sum(len(c["runs"]) for c in view["cells"]) == len(HAND_RUNS)


def test_histories_are_cut_to_max_points_keeping_the_bar_crossings():
    long = history(235, 4015, end=10_000)  # 2,001 evaluations
    cut = page.downsample(long, max_points=50)
    assert 50 <= len(cut["epoch"]) <= 52 and cut["epoch"][0] == 5 and cut["epoch"][-1] == 10_000  # epoch 0 left out
    assert {235, 4015} <= set(cut["epoch"])
    at = {e: (tr, te) for e, tr, te in zip(cut["epoch"], cut["train_acc"], cut["test_acc"])}
    before = max(e for e in at if e < 235)
    assert (at[before], at[235], at[4015]) == ((0.5, 0.1), (1.0, 0.1), (1.0, 1.0))
    assert page.downsample(history(20, 400, end=100)) == {k: v[1:] for k, v in history(20, 400, end=100).items()}


def one_setting_db(folder: Path) -> Path:
    """train_frac 0.3 (two grokking seeds) and 0.5 (one comprehension run): one swept setting."""
    return write_db(folder / "one.sqlite", {k: v for k, v in HAND_RUNS.items() if k[1] == 1.0 and k[2] == 0.03})


def test_one_swept_setting_gives_a_one_row_diagram(tmp_path):
    db = one_setting_db(tmp_path)
    data = page.page_data(page.load_runs(db), db)
    assert (data["x_choices"], data["y_choices"]) == (["train_frac"], [page.ONE_ROW])
    view = data["views"][f"train_frac|{page.ONE_ROW}"]
    assert view["data"][0]["y"] == [""] and [c["place"] for c in view["cells"]] == ["train_frac = 0.3", "train_frac = 0.5"]
    assert "×" not in view["layout"]["title"]["text"] and view["layout"]["yaxis"]["title"]["text"] == ""


# ---------------------------------------------------------------- the command

def test_report_sweep_writes_the_page_beside_the_database(hand_db, capsys):
    assert report.main(["--sweep", str(hand_db)]) == 0
    out = hand_db.with_suffix(".html")
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    head, body = text.split("</head>")
    assert text.count("plotly.js v") == 1 and head.count("<script>") == 1  # plotly.js embedded once
    assert "<script src" not in text and "<link" not in text  # nothing to fetch
    embedded = json.loads(body.split("id='sweep-data'>")[1].split("</script>")[0])  # the JSON ends where it should
    assert len(embedded["runs"]) == len(HAND_RUNS) and embedded["db"] == str(hand_db)


def foreign_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.close()
    return path


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.sqlite", "no sweep database at"),
    (lambda tmp: foreign_db(tmp / "other.sqlite"), "not one written by sweep.py"),
    (lambda tmp: write_db(tmp / "seeds.sqlite", {(0.3, 1.0, 0.03, s): (20, 400) for s in (0, 1)}),
     "differ only in their seed"),
    (lambda tmp: write_db(tmp / "empty.sqlite", {}), "holds no runs"),
])
def test_a_database_the_page_cannot_show_is_one_error_line_and_exit_2(tmp_path, capsys, make, message):
    db = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    assert report.main(["--sweep", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert sorted(tmp_path.iterdir()) == before  # no page, no database made


@pytest.fixture(scope="module")
def real_page(tmp_path_factory):
    """A tiny real sweep (p = 11, 20 epochs, 2 x 2 settings, one seed), its page written by report.py --sweep."""
    folder = tmp_path_factory.mktemp("real")
    run_sweep(folder, "train_frac=0.3,0.6", "weight_decay=0.1,1")
    assert report.main(["--sweep", str(folder / "sweep.sqlite")]) == 0
    return folder / "sweep.html"


def test_a_real_sweep_gives_a_page_with_each_run_in_one_cell(real_page):
    data = page.page_data(page.load_runs(real_page.with_suffix(".sqlite")), real_page.with_suffix(".sqlite"))
    view = data["views"][DIAGRAM]
    assert [len(c["runs"]) for c in view["cells"]] == [1, 1, 1, 1]
    assert all(len(r["history"]["epoch"]) == 4 for r in data["runs"])  # epochs 5-20, every 5 (0 left out)
    assert real_page.stat().st_size < 6_000_000  # plotly.js is most of it


# ---------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def hand_page(browser, hand_db):
    shown, events = open_page(browser, page.build_sweep_page(hand_db, hand_db.parent / "hand.html"), DRAWN)
    yield shown, events
    shown.close()


def diagram(shown) -> dict:
    return shown.evaluate("""() => { const d = document.getElementById('phase-diagram');
        return {x: d.data[0].x, y: d.data[0].y, xtitle: d.layout.xaxis.title.text, ytitle: d.layout.yaxis.title.text}; }""")


def choose(shown, x: str, y: str) -> None:
    shown.select_option("#x-setting", x)
    shown.select_option("#y-setting", y)


def click_cell(shown, x: str, y: str) -> None:
    """A real mouse click at the middle of the heatmap cell with these tick labels."""
    point = shown.evaluate(f"""() => {{ const d = document.getElementById('phase-diagram'), L = d._fullLayout;
        const box = d.getBoundingClientRect();
        return [box.left + L.xaxis._offset + L.xaxis.l2p(d.data[0].x.indexOf('{x}')),
                box.top + L.yaxis._offset + L.yaxis.l2p(d.data[0].y.indexOf('{y}'))]; }}""")
    shown.wait_for_timeout(350)  # plotly takes a second click within 300 ms of the last for a double click
    shown.mouse.move(*point)
    shown.mouse.click(*point)


def curves(shown) -> dict:
    return shown.evaluate("""() => { const d = document.getElementById('run-curves');
        return {traces: d.data.length, names: d.data.map(t => t.name), title: d.layout.title.text}; }""")


def test_the_page_loads_from_file_without_errors_or_network(hand_page):
    shown, events = hand_page
    shown.wait_for_timeout(200)
    assert events["errors"] == []
    assert events["requests"] == [events["requests"][0]] and events["requests"][0].startswith("file:")
    assert diagram(shown)["xtitle"].startswith("train_frac") and curves(shown)["traces"] == 0


def test_the_dropdowns_change_the_diagram_and_one_setting_on_both_swaps_them(hand_page):
    shown, events = hand_page
    choose(shown, "lr", "weight_decay")
    drawn = diagram(shown)
    assert drawn["x"] == ["0.01", "0.03"] and drawn["xtitle"].startswith("lr (") and drawn["y"] == ["0.3", "1"]
    shown.select_option("#y-setting", "lr")  # lr on both axes: x takes y's previous setting
    drawn = diagram(shown)
    assert drawn["xtitle"].startswith("weight_decay") and drawn["ytitle"].startswith("lr")
    assert events["errors"] == []


def test_clicking_a_cell_draws_the_curves_of_its_runs(hand_page):
    shown, events = hand_page
    choose(shown, "train_frac", "weight_decay")
    click_cell(shown, "0.3", "1")  # 4 runs, one diverged: train and test curves of 3
    shown.wait_for_function("document.getElementById('run-curves').data.length > 0")
    drawn = curves(shown)
    assert drawn["traces"] == 2 * 3 and "(1 diverged: no curve)" in drawn["title"]
    assert sorted(drawn["names"])[:2] == ["test, lr 0.01, seed 0 (comprehension)", "test, lr 0.03, seed 0 (grokking)"]
    click_cell(shown, "0.5", "1")  # the tie: 2 runs
    shown.wait_for_function("document.getElementById('run-curves').data.length === 4")
    assert curves(shown)["title"].startswith("train_frac = 0.5, weight_decay = 1: 1/2 comprehension")
    click_cell(shown, "0.5", "0.3")  # no runs there: the curves stay
    assert curves(shown)["traces"] == 4 and events["errors"] == []


def test_a_one_row_page_draws_and_its_cells_click(browser, tmp_path):
    shown, events = open_page(browser, page.build_sweep_page(one_setting_db(tmp_path)), DRAWN)
    assert diagram(shown)["y"] == [""] and shown.input_value("#y-setting") == page.ONE_ROW
    click_cell(shown, "0.3", "")
    shown.wait_for_function("document.getElementById('run-curves').data.length === 4")  # two seeds
    assert curves(shown)["names"][0] == "train, seed 0 (grokking)" and events["errors"] == []
    shown.close()


def test_the_real_sweep_page_draws_in_the_browser(browser, real_page):
    shown, events = open_page(browser, real_page, DRAWN)
    click_cell(shown, "0.3", "1")
    shown.wait_for_function("document.getElementById('run-curves').data.length === 2")
    assert diagram(shown)["x"] == ["0.3", "0.6"] and events["errors"] == []
    shown.close()


def screenshot(shown, png: Path) -> None:
    """The page from its heading to the bottom of the curves."""
    bottom = shown.evaluate("document.getElementById('run-curves').getBoundingClientRect().bottom")
    shown.screenshot(path=str(png), clip={"x": 0, "y": 0, "width": 1400, "height": bottom + 10}, full_page=True)


if __name__ == "__main__":  # python tests/test_sweep_page.py PAGE.html OUT.png X Y X_VALUE Y_VALUE
    from playwright.sync_api import sync_playwright

    html_path, png_path, x_name, y_name, x_value, y_value = sys.argv[1:7]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        shown, recorded = open_page(chromium, Path(html_path), DRAWN)
        choose(shown, x_name, y_name)
        click_cell(shown, x_value, y_value)  # the mouse stays there: its hover shows in the picture
        shown.wait_for_timeout(500)
        screenshot(shown, Path(png_path))
        chromium.close()
        print(f"wrote {png_path}" + (f"; page errors: {recorded['errors']}" if recorded["errors"] else ""))
