"""Loss-curve plots for the examples (matplotlib, the ``examples`` extra)."""

from __future__ import annotations


def save_loss_plot(curves, path, title, xlabel="step"):
    """Write a semilog PNG of ``curves`` ({label: [loss, ...]}) to ``path``; returns ``path``."""
    import logging

    import matplotlib

    # Paddle gives the root logger an INFO handler when imported: matplotlib's first-run
    # "generated new fontManager" would print through it.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    styles = ["-", "--", ":", "-."]  # identical curves (ours and the built-in) stay visible
    for index, (label, losses) in enumerate(curves.items()):
        axes.semilogy(range(len(losses)), losses, styles[index % len(styles)], label=label,
                      linewidth=1.6)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss (log scale)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
