"""Plot jobs: drawn in this process or in a forked child, with the same files either way."""
import multiprocessing

import numpy as np
import pytest

import plots


def jobs(tmp_path, name="curves"):
    acts = np.random.default_rng(0).random((4, 7, 7))
    return [("plot_neuron_overview", (acts, ["a", "b", "c", "d"]), {"path": tmp_path / f"{name}_overview.png"}),
            ("plot_neuron_heatmaps", (acts, ["a", "b", "c", "d"]),
             {"path": tmp_path / f"{name}_heatmaps.png", "axes_names": ("i", "j")})]


def test_a_child_process_draws_the_same_files(tmp_path):
    inline = plots.draw(jobs(tmp_path, "inline"))
    process = plots.draw_in_background(jobs(tmp_path, "child"))
    assert process is not None and process.pid != multiprocessing.current_process().pid
    plots.finish_drawing(process)
    assert [p.name for p in inline] == ["inline_overview.png", "inline_heatmaps.png"]
    for path in inline:
        child = tmp_path / path.name.replace("inline", "child")
        assert child.read_bytes() == path.read_bytes()


def test_a_failing_job_in_the_child_raises(tmp_path):
    broken = [("plot_neuron_overview", (np.zeros((2, 3)), ["a"]), {"path": tmp_path / "x.png"})]  # 2-D, not 3-D
    with pytest.raises(RuntimeError, match="drawing the plots failed in a child process"):
        plots.finish_drawing(plots.draw_in_background(broken))


def test_without_fork_the_jobs_are_drawn_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert plots.draw_in_background(jobs(tmp_path)) is None
    assert all((tmp_path / f"curves_{n}.png").is_file() for n in ("overview", "heatmaps"))
    plots.finish_drawing(None)


def test_panels_are_tiled_row_by_row_each_scaled_to_its_own_range():
    acts = np.stack([np.arange(6.0).reshape(2, 3), np.full((2, 3), 5.0), -np.arange(6.0).reshape(2, 3)])
    mosaic, corners, side = plots.tile_panels(acts, cols=2)
    assert side == (2, 3)
    (x0, y0), (x1, y1), (x2, y2) = corners
    assert y0 == y1 > y2 == 0 and x0 == x2 == 0 < x1  # two on the top row (origin lower), one below
    np.testing.assert_allclose(mosaic[y0:y0 + 2, x0:x0 + 3], np.arange(6).reshape(2, 3) / 5)
    np.testing.assert_array_equal(mosaic[y1:y1 + 2, x1:x1 + 3], 0)  # a constant panel: its lowest colour
    np.testing.assert_allclose(mosaic[y2:y2 + 2, x2:x2 + 3], 1 - np.arange(6).reshape(2, 3) / 5)
    filled = np.zeros(mosaic.shape, bool)
    for x, y in corners:
        filled[y:y + 2, x:x + 3] = True
    assert np.isnan(mosaic[~filled]).all()  # gaps (and the empty fourth place) are drawn blank


def test_large_panels_are_thinned_to_at_most_max_side_points():
    acts = np.random.default_rng(0).random((2, 1009, 1009))
    mosaic, corners, side = plots.tile_panels(acts, cols=2, max_side=256)
    assert side == (253, 253)  # every 4th point of 1009
    x, y = corners[1]
    lo, hi = acts[1, ::4, ::4].min(), acts[1, ::4, ::4].max()
    np.testing.assert_allclose(mosaic[y:y + 253, x:x + 253], (acts[1, ::4, ::4] - lo) / (hi - lo), rtol=1e-6)
