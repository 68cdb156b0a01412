"""notebooks/walkthrough.ipynb: stored without outputs; its setup cell finds the repo from notebooks/; run top to
bottom (nbclient, a kernel of this interpreter) in a temporary folder, it trains a run that groks, prints the
analysis and shows its figures, the interactive ones with plotly.js embedded (no CDN), and writes nothing into the
repo. Not in the fast level: the run takes about a minute (docs/getting_started.md gives the measured time)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
PLOTLY_JSON = "application/vnd.plotly.v1+json"
CELL_TIMEOUT = 600  # seconds per cell; the training cell is the longest


def code_cells() -> list[dict]:
    return [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def test_the_notebook_is_stored_without_outputs():
    cells = code_cells()
    assert len(cells) >= 8
    dirty = [i for i, c in enumerate(cells) if c["outputs"] or c["execution_count"] is not None]
    assert not dirty, f"code cells {dirty} hold outputs or execution counts: clear them before committing"


def run_setup_cell(cwd: Path) -> subprocess.CompletedProcess:
    """The notebook's first code cell (standard library only) in a plain interpreter started in `cwd`."""
    setup = "".join(code_cells()[0]["source"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROKKING_LAB_")}
    return subprocess.run([sys.executable, "-c", setup + "\nprint('importable:', sys.path[0])"], check=False,
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.subprocess
def test_the_setup_cell_finds_the_repo_from_notebooks_and_says_so_elsewhere(tmp_path):
    found = run_setup_cell(NOTEBOOK.parent)
    assert found.returncode == 0, found.stderr
    assert f"repository: {ROOT.resolve()}" in found.stdout
    assert f"importable: {ROOT.resolve()}" in found.stdout
    assert f"writes: {ROOT.resolve() / 'checkpoints'}" in found.stdout
    lost = run_setup_cell(tmp_path)
    assert lost.returncode != 0 and "no repository found" in lost.stderr and "GROKKING_LAB_ROOT" in lost.stderr


def files_under(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for folder in folders if folder.exists() for p in folder.rglob("*")}


@pytest.mark.subprocess
def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="no nbformat package: pip install nbclient ipykernel")
    nbclient = pytest.importorskip("nbclient", reason="no nbclient package: pip install nbclient ipykernel")
    pytest.importorskip("ipykernel", reason="no ipykernel package (the python3 kernel): pip install ipykernel")
    monkeypatch.setenv("GROKKING_LAB_ROOT", str(ROOT))
    monkeypatch.setenv("GROKKING_LAB_OUT", str(tmp_path))  # checkpoints/ and results/ go here
    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    before = files_under(ROOT / "checkpoints", ROOT / "results")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('kernel:', sys.prefix, sys.executable, sep='\\n')"))
    # kernel python3: in a virtual environment jupyter_client prefers the environment's kernelspec, whose
    # "python" it replaces by this interpreter; the last cell checks that it did
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    data = [o.data for o in outputs if o.output_type in ("display_data", "execute_result")]
    html = [d["text/html"] for d in data if "text/html" in d]

    prefix, executable = text.split("kernel:\n")[1].split()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve() and os.path.samefile(executable, sys.executable)
    memorized = int(re.search(r"memorized \(train accuracy >= 99%\) at epoch (\d+)", text)[1])
    grokked = int(re.search(r"grokked \(test accuracy >= 99%\) at epoch (\d+)", text)[1])
    assert 0 < memorized < grokked
    keys = json.loads(re.search(r"key frequencies: (\[[\d, ]*\])", text)[1])
    assert keys and all(1 <= k <= 56 for k in keys)
    assert re.search(r"distance irrelevance q = [\d.]+: (clock|pizza|mixed)", text)
    assert re.search(r"Training phases: memorization 0-\d+, circuit formation", text)
    assert re.search(r"this notebook ran in \d+ s", text)

    assert sum("image/png" in d for d in data) >= 8  # plots.py's figures
    assert sum(PLOTLY_JSON in d for d in data) >= 3  # report.py's: the neuron explorer, the curves, the slider
    assert any("* plotly.js v" in h for h in html), "plotly.js is not embedded in the outputs"
    # (plotly.js names cdn.plot.ly itself, as the default topojsonURL for maps: a script that loads it is what counts)
    assert not any(re.search(r'<script[^>]*src="[^"]*plot\.?ly|import "https://cdn\.plot\.ly', h) for h in html), \
        "an output loads plotly.js from a CDN"

    assert (tmp_path / "checkpoints" / "model_final.pth").is_file()
    assert all((tmp_path / "results" / name).is_file() for name in ("analysis_summary.json", "progress_measures.png"))
    assert files_under(ROOT / "checkpoints", ROOT / "results") == before, "the notebook wrote into the repo"
