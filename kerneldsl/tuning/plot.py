"""The convergence plot of tuning runs (matplotlib, the `plot` extra): every trial's time and the
best so far, against the trial number; failed trials marked on the axis.

    res.plot("tune.png")                                   # one run
    convergence([("random", res_r), ("evolutionary", res_e)], "gemm.png", title=...)   # compared
"""

from __future__ import annotations


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'kerneldsl[plot]'") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def convergence(runs, path, title: str | None = None) -> str:
    """Plot (label, TuneResult) pairs into `path` (PNG, SVG, PDF by its suffix); returns the path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, res in runs:
        xs = [t.index + 1 for t in res.history if t.ok]
        ys = [1e3 * t.seconds for t in res.history if t.ok]
        line = ax.plot(*_best_so_far(res.history), label=f"{label}: best so far", linewidth=2)[0]
        ax.scatter(xs, ys, s=9, alpha=0.35, color=line.get_color())
        failed = [t.index + 1 for t in res.history if not t.ok]
        if failed:
            ax.scatter(failed, [min(ys or [1.0])] * len(failed), marker="x", s=14, color=line.get_color(),
                       alpha=0.6, label=f"{label}: failed ({len(failed)})")
    ax.set_xlabel("trial")
    ax.set_ylabel("time per call (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or (runs[0][1].summary if runs else "tuning"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _best_so_far(history):
    xs, ys, best = [], [], None
    for t in sorted(history, key=lambda t: t.index):
        if t.ok and (best is None or t.seconds < best):
            best = t.seconds
        if best is not None:
            xs.append(t.index + 1)
            ys.append(1e3 * best)
    return xs, ys


__all__ = ["convergence"]
