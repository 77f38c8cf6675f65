"""The reliability diagram of training/calibrate.py (docs/calibration.png): before and after calibration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from spine_core import calibration as cal


def write_figure(p_raw: np.ndarray, damaged: np.ndarray, result: dict, path: Path) -> Path:
    """Reliability diagrams (p_damaged and the returned label's score), before and after calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(damaged, dtype=bool)
    p_after = np.array([f["p_damaged_calibrated"] for f in result["films"]])
    n_bins = result["ece_bins"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    panels: list[tuple[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]] = [
        ("p_damaged vs share Damaged", lambda p: (p, y)),
        ("score of the returned label vs share right", lambda p: cal.top_label(p, y)),
    ]
    for ax, (title, prepare) in zip(axes, panels, strict=True):
        for label, p, colour, marker in (
            ("raw softmax", p_raw, "tab:red", "s"),
            ("calibrated", p_after, "tab:blue", "o"),
        ):
            predicted, outcome = prepare(p)
            bins = cal.reliability_bins(predicted, outcome, n_bins)
            filled = bins.count > 0
            ax.plot(
                bins.mean_predicted[filled],
                bins.observed[filled],
                marker=marker,
                color=colour,
                label=f"{label} (ECE {bins.ece:.3f})",
            )
            for xp, yp, c in zip(bins.mean_predicted[filled], bins.observed[filled], bins.count[filled], strict=True):
                ax.annotate(str(c), (xp, yp), textcoords="offset points", xytext=(4, -10), fontsize=7, color=colour)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        ax.set_xlim(0.5 if ax is axes[1] else 0.0, 1)  # the returned label's score is never below 0.5
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("mean predicted probability in bin")
        ax.set_ylabel("observed frequency in bin")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    mapping = result["calibration"]
    how = (
        f"T = {mapping['temperature']:.2f}"
        if mapping["method"] == "temperature"
        else f"slope {mapping['slope']:.3f}, intercept {mapping['intercept']:.3f}"
    )
    fig.suptitle(
        f"Mask_Classifier on {len(y)} validation films: {mapping['method']} scaling ({how}), "
        f"{n_bins} equal-width bins, numbers = films per bin",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
