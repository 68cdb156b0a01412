"""Plot functions: each takes arrays and a path, writes one PNG and closes its figure."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402

TRAIN_COLOR, TEST_COLOR = "tab:blue", "tab:orange"


def _mark_epochs(ax, memorization_epoch, grokking_epoch):
    if memorization_epoch is not None:
        ax.axvline(memorization_epoch, color=TRAIN_COLOR, ls="--", lw=1, label=f"memorized (epoch {memorization_epoch})")
    if grokking_epoch is not None:
        ax.axvline(grokking_epoch, color=TEST_COLOR, ls="--", lw=1, label=f"grokked (epoch {grokking_epoch})")


def _save(fig, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_training_curves(history: dict, memorization_epoch, grokking_epoch, path, title: str = "") -> None:
    """Loss (log-log), accuracy and weight norm against epoch, with the two key epochs marked."""
    epochs = history["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), gridspec_kw={"wspace": 0.3})
    ax = axes[0]
    ax.plot(epochs, history["train_loss"], color=TRAIN_COLOR, label="train")
    ax.plot(epochs, history["test_loss"], color=TEST_COLOR, label="test")
    ax.set(xscale="log", yscale="log", xlabel="epoch (log scale)", ylabel="cross-entropy loss (log scale)",
           title="Loss")
    ax = axes[1]
    ax.plot(epochs, [100 * x for x in history["train_acc"]], color=TRAIN_COLOR, label="train")
    ax.plot(epochs, [100 * x for x in history["test_acc"]], color=TEST_COLOR, label="test")
    ax.set(xscale="log", xlabel="epoch (log scale)", ylabel="accuracy (%)", ylim=(-2, 102),
           title="Accuracy: train first, test much later")
    ax = axes[2]
    ax.plot(epochs, history["weight_norm"], color="tab:green")
    ax.set(xscale="log", xlabel="epoch (log scale)", ylabel="sum of squared weights",
           title="Weight norm (falls during clean-up)")
    for ax in axes:
        _mark_epochs(ax, memorization_epoch, grokking_epoch)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="center right")
    fig.suptitle(title or "Training curves")
    _save(fig, path)
