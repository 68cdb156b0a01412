"""Logging runs to Weights & Biases, an optional dependency (pip install -r requirements-interop.txt): wandb is
imported here only, and only when a run asks for it (train.py --wandb PROJECT, sweep.py --wandb PROJECT).

One W&B run per trained model. Its config is the run's whole Config; its history is train()'s history, one row
per evaluation with the epoch as the step (and as the key "epoch"), the same keys and values; its summary holds
the run's summary (training_summary.json, or a sweep's database row) beside W&B's last value of each key; its
figures are wandb.Image entries of the last row. W&B's own settings apply: WANDB_MODE=offline writes the run
under WANDB_DIR (default ./wandb) for a later `wandb sync`.

    log = RunLog("grokking", asdict(cfg), name=run_name(asdict(cfg)))
    log.history(history)                    # the evaluations not logged yet (call it after each one)
    log.finish(summary, figures={"training_curves": "results/training_curves.png"})
"""
import importlib

INSTALL_HINT = "pip install -r requirements-interop.txt"


def import_wandb():
    """The wandb module; ValueError (one sentence saying how to install it) if it cannot be imported."""
    try:
        return importlib.import_module("wandb")
    except ImportError:
        raise ValueError(f"--wandb needs the wandb package: {INSTALL_HINT}") from None


def run_name(config: dict, settings=()) -> str:
    """A W&B run's display name: the task and the seed, then the named settings (a sweep's swept ones)."""
    extra = "".join(f", {name} {config[name]:g}" if isinstance(config[name], float) else f", {name} {config[name]}"
                    for name in settings)
    return f"{config['arch']} {config['op']} mod {config['p']}, seed {config['seed']}{extra}"


class RunLog:
    """One W&B run, open from construction to finish()."""

    def __init__(self, project: str, config: dict, name: str, group: str | None = None, silent: bool = False):
        self._wandb = wandb = import_wandb()
        settings = wandb.Settings(silent=True) if silent else None  # silent: none of wandb's own lines
        self.run = wandb.init(project=project, config=config, name=name, group=group, reinit="create_new",
                              settings=settings)
        self.logged = 0  # history rows logged so far
        self.step = 0  # the epoch of the last one

    def history(self, history: dict) -> None:
        """Log the rows of `history` (train()'s dict of lists, one entry per evaluation) not logged yet."""
        for i in range(self.logged, len(history["epoch"])):
            self.step = history["epoch"][i]
            self.run.log({key: values[i] for key, values in history.items()}, step=self.step)
        self.logged = len(history["epoch"])

    def finish(self, summary: dict | None = None, figures: dict | None = None, exit_code: int = 0) -> None:
        """Log the figures ({key: PNG path}) into the last evaluation's row, add `summary` to the run's summary
        and close the run (a non-zero exit_code marks it failed)."""
        if figures:
            self.run.log({key: self._wandb.Image(str(path)) for key, path in figures.items()}, step=self.step)
        if summary:
            self.run.summary.update(summary)
        self.run.finish(exit_code=exit_code)


def log_run(project: str, config: dict, history: dict | None, summary: dict, name: str, group: str | None = None,
            exit_code: int = 0, silent: bool = False) -> None:
    """Log a finished run (its config, whole history and summary) as one W&B run."""
    log = RunLog(project, config, name, group, silent)
    if history:
        log.history(history)
    log.finish(summary, exit_code=exit_code)
