"""Small helpers shared by the scripts: device choice, provenance, JSON output."""
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must exist (ValueError otherwise)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }.get(device.type, False)
    if not available:
        raise ValueError(f"device {name!r} is not available on this machine (try --device auto)")
    return device


def available_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, or the memory the OS says is available (MemAvailable) for a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def provenance() -> dict:
    """Where a result came from: command line, time and library versions."""
    import matplotlib
    import numpy

    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": numpy.__version__, "matplotlib": matplotlib.__version__},
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def atomic_write(path, write) -> None:
    """Call write(temporary path) in path's folder, then rename it over `path`: a reader (or a crash)
    sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


class OutputDirError(ValueError):
    """An output folder that cannot be written."""


def check_output_dir(path, flag: str) -> None:
    """Raise OutputDirError (one sentence) unless `path` is, or can be made, a writable folder.
    Creates nothing, so a script can check all its outputs before doing any work."""
    path = Path(path)
    try:
        existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor or "."))
    except PermissionError:  # a folder on the way cannot be entered
        raise OutputDirError(f"{flag} {path}: no permission to enter a folder on that path") from None
    if not existing.is_dir():
        where = "" if existing == path else f" (inside {path})"
        raise OutputDirError(f"{flag} {path}: {existing} is a file, not a folder{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"{flag} {path}: no permission to write in {existing}")


ACCURACY_BAR = 0.99  # memorized: train accuracy reaches it; grokked: test accuracy reaches it


def first_epoch_at(history: dict, key: str, threshold: float = ACCURACY_BAR):
    """The first evaluated epoch at which history[key] >= threshold (None if never): with the
    accuracies, the memorization (train) and grokking (test) epochs."""
    return next((e for e, v in zip(history["epoch"], history[key]) if v >= threshold), None)
