"""report.py: the page's parts and missing inputs, and (in a real headless Chromium, driven by Playwright)
that it loads offline without errors, draws every figure and reacts to the slider and the dropdown.

The browser tests skip with a reason where the playwright package or /usr/bin/chromium is missing
(`pip install playwright`, `apt-get install chromium`; .ci/run installs both). To redraw the README's
screenshot from a default run: python tests/test_report.py results/report.html docs/figures/report_screenshot.png
"""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as a script too (the screenshot, at the end)
import interpretability  # noqa: E402
import progress  # noqa: E402
import report  # noqa: E402
from config import Config  # noqa: E402
from core.checkpoint import CheckpointError, load_model  # noqa: E402
from core.training import train  # noqa: E402
from conftest import CHROMIUM, open_page  # noqa: E402

PLOTS = ["training-curves", "epoch-slider", "neuron-explorer", "fourier-spectrum", "ablation-curves",
         "frequency-ablation"]
MAX_BYTES = 15_000_000


def small_run(folder: Path, **overrides) -> tuple[Path, Path]:
    """A few seconds: train a tiny model, analyse it and replay its snapshots, as the three commands do."""
    ckpt, res = folder / "c", folder / "r"
    cfg = Config(p=23, d_embed=16, d_hidden=32, epochs=60, eval_every=5, checkpoint_every=20, snapshot_every=10,
                 checkpoint_dir=str(ckpt), results_dir=str(res), **overrides)
    train(cfg, progress=False)
    interpretability.run(ckpt / "model_final.pth", res, draws=1, progress=False)
    progress.run(ckpt, res, progress=False)
    return ckpt, res


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return small_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def page_path(run):
    return report.build_report(*run)


def test_the_page_is_one_offline_file_with_every_part(page_path):
    text = page_path.read_text()
    assert page_path == page_path.parent / "report.html"
    assert text.count("plotly.js v") == 1  # the library's own header: embedded once, in the head
    head, body = text.split("</head>")
    assert head.count("<script>") == 1 and "<script src" not in body and "<link" not in body
    assert "Missing" not in body
    for name in PLOTS:
        assert f'id="{name}-plot"' in text
    assert "Key frequencies" in text or "No clear frequency structure" in text  # summary.findings
    assert "<th>weight_decay</th>" in text  # the config
    assert page_path.stat().st_size <= MAX_BYTES


def test_the_slider_takes_the_spectra_progress_measured_without_loading_a_snapshot(run):
    """progress_measures.json's per-snapshot spectra and accuracies (the same measures of the same snapshots) stand in
    for a second replay: equal numbers, and no snapshot file is opened (paths that do not exist still work)."""
    loaded = report.load_run(*run)
    measured = loaded["progress_measures"]["series"]
    fresh = report.snapshot_series(loaded["snapshots"], loaded["grid"], loaded["keys"])
    missing_files = [p.parent / "gone" / p.name for p in loaded["snapshots"]]
    reused = report.snapshot_series(missing_files, loaded["grid"], loaded["keys"], measured)
    assert [s["epoch"] for s in reused] == [s["epoch"] for s in fresh] == measured["epoch"]
    for a, b in zip(fresh, reused):
        assert (a["train_acc"], a["test_acc"]) == (b["train_acc"], b["test_acc"])
        assert a["key_share"] == pytest.approx(b["key_share"], rel=1e-6)
        assert a["share"] == pytest.approx(b["share"], rel=1e-6, abs=1e-12)
    swapped = measured | {"train_acc": measured["test_acc"], "test_acc": measured["train_acc"]}
    assert report.snapshot_series(loaded["snapshots"], loaded["grid"], loaded["keys"], swapped)[-1]["train_acc"] \
        == measured["test_acc"][-1]  # the accuracies are taken from the series as given
    older = {k: v for k, v in measured.items() if k != "embedding_power"}  # a progress_measures.json without spectra
    with pytest.raises(CheckpointError):
        report.snapshot_series(missing_files, loaded["grid"], loaded["keys"], older)  # so it replays
    history = loaded["ckpt"]["history"]  # train.py's: the accuracies where it has the snapshot's epoch
    from_history = report.snapshot_series(loaded["snapshots"], loaded["grid"], loaded["keys"], history)
    for a, b in zip(fresh, from_history):
        assert a["share"] == pytest.approx(b["share"]) and a["key_share"] == b["key_share"]
        if b["epoch"] in history["epoch"]:
            i = history["epoch"].index(b["epoch"])
            assert (b["train_acc"], b["test_acc"]) == (history["train_acc"][i], history["test_acc"][i])
        else:
            assert (b["train_acc"], b["test_acc"]) == (a["train_acc"], a["test_acc"])


def test_the_config_table_lists_only_the_runs_architecture(run, tmp_path):
    mlp = report.config_html(report.load_run(*run))
    assert "<th>d_hidden</th>" in mlp and "<th>d_model</th>" not in mlp and "<th>activation</th>" in mlp
    config = report.load_run(*run)["ckpt"]["config"] | {"arch": "transformer"}
    transformer = report.config_html({"training_summary": {"config": config}, "ckpt": None})
    assert "<th>d_model</th>" in transformer and "<th>n_heads</th>" in transformer
    assert "<th>d_embed</th>" not in transformer and "<th>d_hidden</th>" not in transformer


def test_the_page_passes_the_series_on_only_for_the_same_run(run, monkeypatch):
    passed = []
    monkeypatch.setattr(report, "snapshot_series", lambda paths, grid, keys, measured=None: passed.append(measured) or [])
    monkeypatch.setattr(report, "epoch_slider_figure", lambda *args: "figure")
    loaded = report.load_run(*run)
    report.sections(loaded)
    report.sections(loaded | {"progress_measures": loaded["progress_measures"] | {"run_id": "another"}})
    noisy = loaded["ckpt"] | {"config": loaded["ckpt"]["config"] | {"label_noise": 0.1}}
    report.sections(loaded | {"progress_measures": None, "ckpt": noisy})
    # its own progress measures; else train.py's history; under label noise neither (its train accuracy is
    # against the corrupted labels)
    assert passed == [loaded["progress_measures"]["series"], loaded["ckpt"]["history"], None]


def test_missing_analysis_still_writes_the_page_and_names_the_commands(run, tmp_path):
    ckpt, _ = run
    assert report.main(["--checkpoint-dir", str(ckpt), "--results-dir", str(tmp_path)]) == 0
    text = (tmp_path / "report.html").read_text()
    assert 'id="training-curves-plot"' in text and 'id="epoch-slider-plot"' in text  # from the checkpoints alone
    assert 'id="neuron-explorer-plot"' not in text and 'id="ablation-curves-plot"' not in text
    assert f"python interpretability.py --checkpoint {ckpt}/model_final.pth --results-dir {tmp_path}" in text
    assert f"python interpretability.py --progress --checkpoint {ckpt}" in text


def test_missing_checkpoints_still_write_the_page_from_the_json_files(run, tmp_path):
    _, res = run
    shutil.copytree(res, tmp_path / "r")
    assert report.main(["--checkpoint-dir", str(tmp_path / "none"), "--results-dir", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.html").read_text()
    assert 'id="ablation-curves-plot"' in text and 'id="frequency-ablation-plot"' in text
    assert 'id="training-curves-plot"' not in text and 'id="epoch-slider-plot"' not in text
    assert f"Missing checkpoints: run <code>python train.py --checkpoint-dir {tmp_path / 'none'}" in text


def test_default_folders_give_the_plain_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report.main([]) == 0
    text = (tmp_path / "results" / "report.html").read_text()
    for command in ("python train.py</code>", "python interpretability.py</code>",
                    "python interpretability.py --progress</code>"):
        assert command in text


def test_an_unwritable_results_folder_is_one_error_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "blocked").write_text("a file where the folder should be")
    assert report.main(["--results-dir", str(tmp_path / "blocked" / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --results-dir") and len(err.strip().splitlines()) == 1
    assert (tmp_path / "blocked").read_text() == "a file where the folder should be"


def test_the_default_size_page_stays_under_15_mb(tmp_path):
    """p = 113 and the default widths (one epoch: the size does not depend on training), with a neuron
    table for the explorer; the neurons' heatmaps and plotly.js are nearly all of the page."""
    ckpt, res = tmp_path / "c", tmp_path / "r"
    train(Config(epochs=1, checkpoint_dir=str(ckpt), results_dir=str(res)), progress=False)
    model, _ = load_model(ckpt / "model_final.pth")
    neurons = [{"neuron": n, "causal_rank": n, "dominant_frequency": 1 + n % 56, "dominant_frequency_fraction": 0.5,
                "cluster": None, "mean_ablation_loss_increase": 0.0} for n in range(model.d_hidden)]
    (res / "neuron_ranking.json").write_text(json.dumps({"neurons": neurons}))
    path = report.build_report(ckpt, res)
    assert 'id="neuron-explorer-plot"' in path.read_text()
    assert 5_000_000 < path.stat().st_size <= MAX_BYTES


def test_a_transformer_report_shows_each_heads_attention(tmp_path):
    ckpt, res = small_run(tmp_path, arch="transformer", d_model=16, n_heads=2, d_mlp=24, lr=1e-2)
    parts = {title: content for title, _, content in report.sections(report.load_run(ckpt, res))}
    attention = parts["Attention heads"]
    assert [trace.type for trace in attention.data] == ["heatmap"] * 4  # 2 heads x (to a, to b)
    model, _ = load_model(ckpt / "model_final.pth")
    assert torch.allclose(torch.tensor(attention.data[1].z), report.attention.attention_patterns(
        model, report.load_run(ckpt, res)["grid"])[0, 1], atol=1e-6)


# ---------------------------------------------------------------- in a real browser

@pytest.fixture
def page(browser, page_path):
    page, events = open_page(browser, page_path, len(PLOTS))
    yield page, events
    page.close()


def test_the_page_loads_from_file_without_errors_or_network(page):
    page, events = page
    page.wait_for_timeout(300)
    assert events["errors"] == []
    assert events["requests"] and all(url.startswith(("file:", "data:", "about:")) for url in events["requests"])


def test_every_figure_draws(page):
    page, _ = page
    drawn = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')].map(
        d => [d.id, d.querySelectorAll('svg.main-svg .trace, svg.main-svg .hm').length]))""")
    assert sorted(drawn) == sorted(f"{name}-plot" for name in PLOTS)
    assert all(count > 0 for count in drawn.values()), drawn


def plot_state(page, div: str, trace: int, key: str):
    """The drawn values of one trace (plotly's full data, after its typed arrays are decoded) and the title."""
    return page.evaluate(f"""() => {{ const d = document.getElementById('{div}');
        const v = d._fullData[{trace}].{key};
        return [Array.from(v, row => typeof row === 'number' ? row : Array.from(row)), d.layout.title.text]; }}""")


def test_moving_the_epoch_slider_changes_the_spectrum(page):
    page, events = page
    before, title = plot_state(page, "epoch-slider-plot", 0, "y")
    assert title.startswith("epoch 60:")  # the slider starts at the last snapshot
    rail = page.locator("#epoch-slider-plot .slider-rail-touch-rect")
    rail.scroll_into_view_if_needed()
    box = rail.bounding_box()
    page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)  # the rail's left end: epoch 0
    page.wait_for_function("document.getElementById('epoch-slider-plot').layout.title.text.startsWith('epoch 0:')")
    after, _ = plot_state(page, "epoch-slider-plot", 0, "y")
    assert len(after) == len(before) and max(abs(x - y) for x, y in zip(before, after)) > 1e-3
    assert events["errors"] == []


def test_choosing_another_neuron_changes_the_heatmap(page, run):
    page, events = page
    ckpt, res = run
    neurons = json.loads((res / "neuron_ranking.json").read_text())["neurons"]
    before, title = plot_state(page, "neuron-explorer-plot", 0, "z")
    assert title.startswith(f"neuron {neurons[0]['neuron']}, causal rank 1")
    page.locator("#neuron-explorer-plot .updatemenu-header").click()
    page.locator("#neuron-explorer-plot .updatemenu-dropdown-button").nth(1).click()
    page.wait_for_function("document.getElementById('neuron-explorer-plot').layout.title.text"
                           ".includes('causal rank 2')")
    raw, title = plot_state(page, "neuron-explorer-plot", 0, "z")
    reordered, _ = plot_state(page, "neuron-explorer-plot", 1, "z")
    assert title.startswith(f"neuron {neurons[1]['neuron']}, causal rank 2") and raw != before
    model, _ = load_model(ckpt / "model_final.pth")
    expected = report.neuron_activations(model, report.load_run(ckpt, res)["grid"], neurons[1:2])[0]
    assert torch.allclose(torch.tensor(raw), torch.from_numpy(expected[0]), atol=1e-5)  # a rows, b columns
    assert torch.allclose(torch.tensor(reordered), torch.from_numpy(expected[1]), atol=1e-5)
    assert events["errors"] == []


def screenshot(page, png: Path, sections: int = 3) -> None:
    """The top of the page: findings and the first `sections` parts."""
    bottom = page.evaluate(f"document.querySelectorAll('section')[{sections}].getBoundingClientRect().bottom")
    page.screenshot(path=str(png), clip={"x": 0, "y": 0, "width": 1400, "height": bottom + 10}, full_page=True)


def test_a_screenshot_is_written(page, tmp_path):
    page, _ = page
    screenshot(page, tmp_path / "report.png")
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and int.from_bytes(png[16:20], "big") == 1400 and len(png) > 50_000


if __name__ == "__main__":  # python tests/test_report.py PAGE.html OUT.png
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        shown, recorded = open_page(chromium, Path(sys.argv[1]), len(PLOTS))
        shown.wait_for_timeout(500)
        screenshot(shown, Path(sys.argv[2]))
        chromium.close()
        print(f"wrote {sys.argv[2]}" + (f"; page errors: {recorded['errors']}" if recorded["errors"] else ""))
