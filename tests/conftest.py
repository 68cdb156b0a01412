import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")  # the Debian package; playwright's own browser download is not used
sys.path.insert(0, str(ROOT))  # the repo is flat scripts, not a package


def start_training(flags, wait_for: Path, timeout: float = 60):
    """Start `python train.py --quiet FLAGS` in the background; return the process once `wait_for`
    (a snapshot, say) exists, so a signal sent next arrives inside the training loop."""
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "train.py", "--quiet", *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not wait_for.exists() and time.time() < deadline:
        time.sleep(0.05)
    return proc


# The fast level (python -m pytest -q -m fast tests): unit tests and known answers on hand-built networks,
# without the tests that run a script in a child process. The whole suite is the other level (what CI runs).
FAST_FILES = {"test_checkpoint.py", "test_clock_pizza.py", "test_component_ablation.py", "test_dataset.py",
              "test_discrete_log.py", "test_fourier_laws.py", "test_interventions.py", "test_known_answers.py",
              "test_layout.py", "test_model.py", "test_optim.py", "test_plots.py", "test_regimes.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in FAST_FILES and not item.get_closest_marker("subprocess"):
            item.add_marker(pytest.mark.fast)
    # Under mutmut (it sets MUTANT_UNDER_TEST and runs in mutants/, next to its timings): the quickest files first
    # and in each the quickest tests, since a mutant's run stops at its first failing test; a file's tests stay
    # together, so that its module-scoped fixtures are built once.
    stats = Path("mutmut-stats.json")
    if os.environ.get("MUTANT_UNDER_TEST") and stats.is_file():
        duration = json.loads(stats.read_text())["duration_by_test"]
        per_file = {}
        for item in items:
            per_file[item.path] = per_file.get(item.path, 0.0) + duration.get(item.nodeid, 0.0)
        items.sort(key=lambda item: (per_file[item.path], duration.get(item.nodeid, 0.0)))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright; skips with the reason where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright package: pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, path: Path, svgs: int):
    """The page opened from file:// once plotly has drawn at least `svgs` of its layers (.main-svg, one or more
    per figure), with its console errors, page errors and requests recorded: (page, {"errors", "requests"})."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    events = {"errors": [], "requests": []}
    page.on("console", lambda msg: msg.type == "error" and events["errors"].append(msg.text))
    page.on("pageerror", lambda err: events["errors"].append(str(err)))
    page.on("request", lambda request: events["requests"].append(request.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {svgs}")
    return page, events
