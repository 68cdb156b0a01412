import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
