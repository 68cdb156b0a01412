"""Check that this machine can run the repo, in a few seconds.

    python test_setup.py

Prints ✓ or ✗ per check, with a hint for each failure, and exits 1 if any check fails.
"""
import argparse
import importlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
INSTALL_HINT = "run: pip install -r requirements.txt (inside the virtual environment)"


def check_python():
    if sys.version_info < (3, 10):
        raise RuntimeError(f"Python {sys.version.split()[0]} is too old; use Python 3.10 or newer")
    return f"Python {sys.version.split()[0]}"


def check_package(name):
    def check():
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise RuntimeError(f"{name} is not installed; {INSTALL_HINT}") from None
        return f"{name} {getattr(module, '__version__', '?')}"

    return check


def check_torch_works():
    import torch

    x = torch.arange(6.0).reshape(2, 3)
    if float((x @ x.T).sum()) != 83.0:  # [[5, 14], [14, 50]]
        raise RuntimeError("a small matrix product gave a wrong result; reinstall torch (see README)")
    return f"matmul ok, {torch.get_num_threads()} threads"


def check_device():
    from core.utils import resolve_device

    return f"--device auto -> {resolve_device('auto')}"


def check_forward_backward():
    import torch
    import torch.nn.functional as F

    from dataset import make_data
    from model import ToyMLP

    data = make_data(7, "add", 0.5, 0)
    model = ToyMLP(7, d_embed=4, d_hidden=8)
    a, b, y = data.subset("train")
    loss = F.cross_entropy(model(a, b), y)
    loss.backward()
    if not all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()):
        raise RuntimeError("gradients are missing or not finite")
    return f"dataset.py and model.py import; loss {loss.item():.2f}, gradients finite"


def check_writable(folder):
    def check():
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path):
                pass
        except OSError as err:
            raise RuntimeError(f"cannot write to {path}/ ({err.strerror}); check its permissions, "
                               "or pass another folder with --checkpoint-dir / --results-dir") from None
        return f"{path}/ is writable"

    return check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check the environment for this repo.")
    parser.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="folder train.py writes to")
    parser.add_argument("--results-dir", default=str(ROOT / "results"), help="folder for plots and JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    checks = [("Python version", check_python)]
    checks += [(f"package {name}", check_package(name)) for name in ("torch", "numpy", "matplotlib", "tqdm", "pytest")]
    checks += [("torch computes", check_torch_works), ("device", check_device),
               ("tiny forward/backward", check_forward_backward),
               ("checkpoints folder", check_writable(args.checkpoint_dir)),
               ("results folder", check_writable(args.results_dir))]
    failed = 0
    for name, check in checks:
        try:
            print(f"✓ {name}: {check()}")
        except Exception as err:  # every failure becomes a line with a hint, never a traceback
            failed += 1
            print(f"✗ {name}: {err}")
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
