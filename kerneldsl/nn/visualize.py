"""Training curves of a NeuralNet, as nolearn's `visualize.plot_loss` (matplotlib: the `plot` extra)."""

from __future__ import annotations

import math


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("kerneldsl.nn.visualize needs matplotlib: pip install 'kerneldsl[plot]' "
                          "(or pip install matplotlib)") from None
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _has_display() -> bool:
    import os
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def plot_loss(net, path=None):
    """Train and valid loss per epoch (and valid accuracy on a second axis for a classifier);
    saved to `path` when given. Returns the matplotlib figure."""
    history = getattr(net, "train_history_", None)
    if not history:
        raise ValueError("plot_loss: the network has no training history yet; call fit first")
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    valid = [h["valid_loss"] for h in history]
    if not all(math.isnan(v) for v in valid):
        ax.plot(epochs, valid, label="valid loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    acc = [h.get("valid_accuracy", float("nan")) for h in history]
    if not all(math.isnan(a) for a in acc):
        ax2 = ax.twinx()
        ax2.plot(epochs, acc, color="tab:green", linestyle="--", label="valid accuracy")
        ax2.set_ylabel("accuracy")
        more = ax2.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    ax.legend(lines, labels, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
    return fig


__all__ = ["plot_loss"]
