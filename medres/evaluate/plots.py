"""Figures of the chest X-ray evaluation report: ROC curves, a reliability diagram, a Grad-CAM gallery.

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
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_curve

from medres.metrics.classification import expected_calibration_error, reliability_curve

PANEL_COLUMNS = 4
FEW_PREDICTIONS = 10
PNG_DPI = 100
CAM_OPACITY = 0.6


@dataclass(frozen=True)
class GalleryPanel:
    """One boxed finding of the localisation gallery, on its radiograph's own pixel grid.

    Attributes:
        image: ``(rows, cols)`` radiograph.
        cam: ``(rows, cols)`` map in [0, 1] as displayed (peak brightness = probability).
        box: ``(x, y, w, h)`` in pixels, NIH's convention (pixel ``c`` spans ``[c, c + 1)``).
        label: The boxed (and explained) label.
        probability: The model's probability for it.
        hit: The pointing-game outcome.
        iobb: Intersection over box of the map's top region.
        peak: ``(row, col)`` of the map's maximum; None for an all-zero map (no evidence, a miss).
        tolerance: Pointing-game tolerance in pixels (drawn as a dashed outer box).
    """

    image: np.ndarray
    cam: np.ndarray
    box: tuple[float, float, float, float]
    label: str
    probability: float
    hit: bool
    iobb: float
    peak: tuple[int, int] | None
    tolerance: float


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
    """Reliability diagram: all labels pooled on top, then one small panel per label.

    Fourteen curves overlaid on one axis cross each other into an unreadable
    tangle, so the pooled curve (what the overall ECE summarises) gets its own
    panel with the number of predictions per bin beside it, and each label
    gets a small panel of its own with its ECE, laid out like the ROC curves.
    Bins holding fewer than :data:`FEW_PREDICTIONS` predictions are drawn as
    hollow markers: their observed fraction is too noisy to read.

    Args:
        truth: 0/1 labels, ``(n_images, n_labels)``.
        scores: Probabilities in [0, 1], same shape.
        labels: Label names in column order.
        n_bins: Equal-width probability bins.
        title: Figure title.
    """
    n_rows = math.ceil(len(labels) / PANEL_COLUMNS)
    figure = Figure(figsize=(3.0 * PANEL_COLUMNS, 4.2 + 3.0 * n_rows), dpi=PNG_DPI, layout="constrained")
    pooled_figure, label_figure = figure.subfigures(2, 1, height_ratios=(4.2, 3.0 * n_rows))
    _pooled_panels(pooled_figure, truth.ravel(), scores.ravel(), n_bins)
    axes = label_figure.subplots(n_rows, PANEL_COLUMNS, squeeze=False).ravel()
    for column, (axis, label) in enumerate(zip(axes, labels)):
        _reliability_panel(axis, truth[:, column], scores[:, column], n_bins, label, linewidth=1.4, fontsize=9)
    for axis in axes[len(labels):]:
        axis.set_visible(False)
    label_figure.supxlabel("predicted probability", fontsize=9)
    label_figure.supylabel("observed fraction positive", fontsize=9)
    figure.suptitle(f"{title}: reliability ({n_bins} equal-width bins)")
    return _png_bytes(figure)


def _pooled_panels(figure, truth: np.ndarray, scores: np.ndarray, n_bins: int) -> None:
    """The pooled reliability curve and, beside it, how many predictions fall in each bin."""
    curve_axis, count_axis = figure.subplots(1, 2, width_ratios=(1.1, 1.0))
    _reliability_panel(curve_axis, truth, scores, n_bins, "all labels pooled", linewidth=2.2, fontsize=11)
    curve_axis.set(xlabel="predicted probability", ylabel="observed fraction positive")
    curve_axis.legend(fontsize=8, loc="upper left")
    counts = reliability_curve(truth, scores, n_bins).counts
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count_axis.bar(edges[:-1], counts, width=1.0 / n_bins, align="edge", color="0.55", edgecolor="white")
    count_axis.set(xlim=(0, 1), xlabel="predicted probability", ylabel="predictions (log scale)", yscale="log")
    count_axis.set_title("predictions per bin, all labels", fontsize=11)


def _reliability_panel(axis, truth: np.ndarray, scores: np.ndarray, n_bins: int, name: str, linewidth: float,
                       fontsize: int) -> None:
    """One reliability curve against the diagonal; the title carries the ECE over these predictions."""
    curve = reliability_curve(truth, scores, n_bins)
    filled, well_filled = curve.counts > 0, curve.counts >= FEW_PREDICTIONS
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    axis.plot(curve.mean_predicted[filled], curve.observed_fraction[filled], color="tab:blue", linewidth=linewidth,
              label="observed")
    axis.plot(curve.mean_predicted[well_filled], curve.observed_fraction[well_filled], "o", color="tab:blue",
              markersize=4)
    sparse = filled & ~well_filled
    axis.plot(curve.mean_predicted[sparse], curve.observed_fraction[sparse], "o", markerfacecolor="white",
              markeredgecolor="tab:blue", markersize=4, label=f"bin with < {FEW_PREDICTIONS} predictions")
    axis.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    axis.tick_params(labelsize=7)
    ece = expected_calibration_error(truth, scores, n_bins)
    axis.set_title(f"{name}  ECE {ece:.3f}  ({int(truth.sum())} pos.)", fontsize=fontsize)


def localisation_gallery_png(panels: Sequence[GalleryPanel], title: str) -> bytes:
    """Each boxed finding with its Grad-CAM map over it, the box, the tolerance and the map's peak.

    Args:
        panels: The findings to show, in order.
        title: Figure title (names the split and the method).
    """
    n_columns = min(PANEL_COLUMNS, len(panels))
    n_rows = math.ceil(len(panels) / n_columns)
    figure = Figure(figsize=(3.0 * n_columns, 3.3 * n_rows + 0.4), dpi=PNG_DPI, layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    for axis, panel in zip(axes, panels):
        _gallery_panel(axis, panel)
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(f"{title}\nsolid box: NIH box; dashed: grown by the pointing tolerance; +: map peak",
                    fontsize=10)
    return _png_bytes(figure)


def _gallery_panel(axis, panel: GalleryPanel) -> None:
    low, high = np.percentile(panel.image, (1, 99))
    axis.imshow(panel.image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), interpolation="antialiased")
    overlay = colormaps["jet"](np.clip(panel.cam, 0.0, 1.0))
    overlay[..., 3] = CAM_OPACITY * np.clip(panel.cam, 0.0, 1.0)  # a weak map (low probability) stays faint
    axis.imshow(overlay, interpolation="antialiased")
    x, y, w, h = panel.box  # imshow centres pixel c on c, NIH's boxes on c + 0.5
    axis.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime", linewidth=1.5))
    grown = panel.tolerance
    axis.add_patch(Rectangle((x - 0.5 - grown, y - 0.5 - grown), w + 2 * grown, h + 2 * grown, fill=False,
                             edgecolor="lime", linewidth=0.8, linestyle="--"))
    if panel.peak is not None:
        axis.plot(panel.peak[1], panel.peak[0], marker="+", color="white", markersize=12, markeredgewidth=2)
    axis.set_xlim(-0.5, panel.image.shape[1] - 0.5)
    axis.set_ylim(panel.image.shape[0] - 0.5, -0.5)
    axis.set_axis_off()
    outcome = "hit" if panel.hit else "miss" if panel.peak is not None else "miss (map all zero)"
    axis.set_title(f"{panel.label}\np {panel.probability:.2f}, {outcome}, IoBB {panel.iobb:.2f}", fontsize=9)


def _png_bytes(figure: Figure) -> bytes:
    """Render through an explicit Agg canvas (no pyplot state) and return the PNG."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
