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
