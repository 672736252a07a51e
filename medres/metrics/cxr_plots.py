"""Figures of the chest X-ray evaluation report: ROC curves and a reliability diagram.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas
instead of ``pyplot``: no global backend or figure registry is touched, so the
report can be written from a server, a notebook or a test without a display
and without leaking open figures. Each function returns PNG bytes; the caller
decides where (and how atomically) to write them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from medres.metrics.classification import reliability_curve

PANEL_COLUMNS = 4
PNG_DPI = 100


def roc_curves_png(
    truth: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    aurocs: Mapping[str, float | None],
    title: str,
) -> bytes:
    """One small ROC panel per label, with its AUROC; labels with one class say so instead.

    Separate panels rather than 14 overlaid curves, because overlaid curves of
    rare and common findings are unreadable and the reader wants one label at a time.

    Args:
        truth: 0/1 labels, ``(n_images, n_labels)``.
        scores: Probabilities, same shape.
        labels: Label names in column order.
        aurocs: AUROC per label as reported (None when undefined), shown in each panel.
        title: Figure title (names the split, and says when the data is synthetic).
    """
    n_rows = math.ceil(len(labels) / PANEL_COLUMNS)
    figure = Figure(figsize=(3.0 * PANEL_COLUMNS, 3.0 * n_rows), dpi=PNG_DPI, layout="constrained")
    axes = figure.subplots(n_rows, PANEL_COLUMNS, squeeze=False).ravel()
    for column, (axis, label) in enumerate(zip(axes, labels)):
        _roc_panel(axis, truth[:, column], scores[:, column], label, aurocs.get(label))
    for axis in axes[len(labels):]:
        axis.set_visible(False)
    figure.suptitle(title)
    return _png_bytes(figure)


def _roc_panel(axis, truth: np.ndarray, scores: np.ndarray, label: str, auroc: float | None) -> None:
    axis.plot([0, 1], [0, 1], color="0.75", linewidth=0.8, linestyle="--")
    axis.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    axis.tick_params(labelsize=7)
    if auroc is None:
        axis.text(0.5, 0.5, "undefined\n(one class only)", ha="center", va="center", fontsize=9)
        axis.set_title(label, fontsize=9)
        return
    false_positive_rate, true_positive_rate, _ = roc_curve(truth, scores)
    axis.plot(false_positive_rate, true_positive_rate, color="tab:blue", linewidth=1.4)
    axis.set_title(f"{label}  AUROC {auroc:.3f}", fontsize=9)
    axis.set_xlabel("1 - specificity", fontsize=7)
    axis.set_ylabel("sensitivity", fontsize=7)


def reliability_png(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str], n_bins: int, title: str) -> bytes:
    """Reliability diagram: all labels pooled (bold), each label (thin), and how many predictions per bin.

    The pooled curve is what the overall ECE summarises; the thin curves show
    which findings are over- or under-confident; the histogram shows which bins
    hold enough predictions to trust.

    Args:
        truth: 0/1 labels, ``(n_images, n_labels)``.
        scores: Probabilities in [0, 1], same shape.
        labels: Label names in column order.
        n_bins: Equal-width probability bins.
        title: Figure title.
    """
    figure = Figure(figsize=(7.0, 8.0), dpi=PNG_DPI, layout="constrained")
    curve_axis, count_axis = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    palette = colormaps["tab20"]  # 14 labels need more than the default 10-colour cycle
    curve_axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for column, label in enumerate(labels):
        per_label = reliability_curve(truth[:, column], scores[:, column], n_bins)
        filled = per_label.counts > 0
        curve_axis.plot(per_label.mean_predicted[filled], per_label.observed_fraction[filled],
                        color=palette(column % 20), linewidth=0.7, alpha=0.6, marker=".", markersize=3, label=label)
    pooled = reliability_curve(truth.ravel(), scores.ravel(), n_bins)
    filled = pooled.counts > 0
    curve_axis.plot(pooled.mean_predicted[filled], pooled.observed_fraction[filled], color="black",
                    linewidth=2.2, marker="o", label="all labels pooled")
    curve_axis.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed fraction positive", title=title)
    curve_axis.legend(fontsize=6, ncol=2, loc="upper left")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count_axis.bar(edges[:-1], pooled.counts, width=1.0 / n_bins, align="edge", color="0.5", edgecolor="white")
    count_axis.set(xlabel="predicted probability", ylabel="predictions (log scale)", yscale="log")
    return _png_bytes(figure)


def _png_bytes(figure: Figure) -> bytes:
    """Render through an explicit Agg canvas (no pyplot state) and return the PNG."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
