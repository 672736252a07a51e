"""Pixels for the review app: windowing, overlays, slices, legends and charts.

Everything here is plain NumPy/PIL/Altair so it can be tested without a
browser; ``medres/app/review.py`` only places the results on the page.

Display conventions: volumes are RAS+ ``(X, Y, Z)`` and are shown the
radiological way (patient's right on the viewer's left, anterior or superior
at the top), each slice stretched to its physical aspect ratio so that
anisotropic voxels do not distort anatomy, and labelled at its edges with
the patient directions (R/L, A/P, S/I) so no reader has to know the convention.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

CT_PRESETS: dict[str, tuple[float, float]] = {
    "Lung (-600/1500)": (-600.0, 1500.0),
    "Soft tissue (40/400)": (40.0, 400.0),
    "Bone (480/2500)": (480.0, 2500.0),
    "Brain (40/80)": (40.0, 80.0),
}
"""CT window presets as (level, width) in Hounsfield units."""
DEFAULT_CT_PRESET = "Soft tissue (40/400)"
XRAY_PRESET_PERCENTILES: dict[str, tuple[float, float]] = {
    "Full range": (0.0, 100.0),
    "Standard (1-99 %)": (1.0, 99.0),
    "High contrast (5-95 %)": (5.0, 95.0),
    "Dense structures (40-100 %)": (40.0, 100.0),
}
"""X-ray presets as percentile ranges: radiographs carry no absolute unit like HU."""
COLORMAPS: tuple[str, ...] = ("jet", "inferno", "viridis", "turbo", "hot")
AXES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
ORIENTATION_LETTERS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}
"""Patient direction at the (top, bottom, left, right) edge of each plane as :func:`volume_slice` orients it."""
LETTER_COLOUR, LETTER_OUTLINE = (255, 220, 0), (0, 0, 0)
MAX_DISPLAY_SIDE = 1024
MIN_SLICE_SIDE = 384
"""Slices are enlarged to at least this many pixels on their longer side, so letters stay legible."""
POSITIVE_COLOUR, NEGATIVE_COLOUR = "#d62728", "#9ecae1"
NUMBER_COLUMN_X = 1.04
"""Where (in probability units) the column of numbers starts, right of the axis's end."""
ROW_HEIGHT_PX = 26
DEFAULT_THRESHOLD = 0.5


def window_from_percentiles(array: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """(level, width) spanning the given percentiles of the image's values."""
    lower, upper = np.percentile(array, [low, high])
    return float((lower + upper) / 2), float(max(upper - lower, 1e-6))


def xray_presets(array: np.ndarray) -> dict[str, tuple[float, float]]:
    """Window presets for one radiograph, from its own value distribution."""
    return {name: window_from_percentiles(array, *span) for name, span in XRAY_PRESET_PERCENTILES.items()}


def apply_window(array: np.ndarray, level: float, width: float) -> np.ndarray:
    """uint8 grey levels: ``level +- width/2`` spread over 0..255, clipped outside."""
    width = max(float(width), 1e-6)
    scaled = (np.asarray(array, dtype=np.float32) - (level - width / 2)) / width
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def heatmap_overlay(gray: np.ndarray, heat: np.ndarray, opacity: float, colormap: str = "jet") -> np.ndarray:
    """RGB uint8 image with ``heat`` (in [0, 1]) blended over ``gray``.

    Each pixel's blend weight is ``opacity * heat``, so a weak map stays faint
    instead of tinting the whole image: with probability-scaled maps, a class the
    model does not find shows almost nothing.
    """
    colours = colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3]
    weight = (float(opacity) * np.clip(heat, 0.0, 1.0))[..., None]
    base = np.repeat((gray.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    return (np.clip(base * (1 - weight) + colours * weight, 0, 1) * 255).round().astype(np.uint8)


def heatmap_only(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """The map alone as RGB uint8, for side-by-side display."""
    return (colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


def to_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a grey (H, W) or RGB (H, W, 3) uint8 array."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def fit_for_display(pixels: np.ndarray, max_side: int = MAX_DISPLAY_SIDE) -> np.ndarray:
    """Downscale very large images before sending them to the browser (aspect kept)."""
    rows, cols = pixels.shape[:2]
    factor = max_side / max(rows, cols)
    if factor >= 1:
        return pixels
    size = (max(1, round(cols * factor)), max(1, round(rows * factor)))
    return np.asarray(PILImage.fromarray(pixels).resize(size, PILImage.Resampling.LANCZOS))


def volume_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One plane of a RAS+ ``(X, Y, Z)`` array, oriented for radiological display.

    Rows run from anterior (axial) or superior (coronal, sagittal) downwards;
    columns from the patient's right (axial, coronal) or anterior (sagittal).
    """
    axis = AXES[plane]
    plane_values = np.take(volume, int(index), axis=axis)
    return plane_values.T[::-1, ::-1]


def slice_spacing(spacing: Sequence[float], plane: str) -> tuple[float, float]:
    """(row, column) spacing in mm of :func:`volume_slice`'s output."""
    in_plane = [float(step) for axis, step in enumerate(spacing[:3]) if axis != AXES[plane]]
    return in_plane[1], in_plane[0]


def physical_aspect(pixels: np.ndarray, row_spacing: float, column_spacing: float) -> np.ndarray:
    """Resample a slice so one displayed pixel is square in millimetres (nearest for labels, RGB ok)."""
    rows, cols = pixels.shape[:2]
    finest = min(row_spacing, column_spacing)
    size = (max(1, round(cols * column_spacing / finest)), max(1, round(rows * row_spacing / finest)))
    if size == (cols, rows):
        return pixels
    return np.asarray(PILImage.fromarray(pixels).resize(size, PILImage.Resampling.NEAREST))


def enlarge_to(pixels: np.ndarray, min_side: int = MIN_SLICE_SIDE) -> np.ndarray:
    """Enlarge (nearest neighbour, aspect kept) so the longer side has at least ``min_side`` pixels."""
    rows, cols = pixels.shape[:2]
    factor = min_side / max(rows, cols)
    if factor <= 1:
        return pixels
    size = (max(1, round(cols * factor)), max(1, round(rows * factor)))
    return np.asarray(PILImage.fromarray(pixels).resize(size, PILImage.Resampling.NEAREST))


def draw_orientation_letters(pixels: np.ndarray, plane: str) -> np.ndarray:
    """RGB copy of a displayed slice with the patient direction written at the middle of each edge."""
    picture = PILImage.fromarray(pixels).convert("RGB")
    width, height = picture.size
    size = max(14, max(width, height) // 20)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(picture)
    margin = max(2, size // 4)
    top, bottom, left, right = ORIENTATION_LETTERS[plane]
    anchors = ((top, (width / 2, margin), "mt"), (bottom, (width / 2, height - margin), "mb"),
               (left, (margin, height / 2), "lm"), (right, (width - margin, height / 2), "rm"))
    for letter, position, anchor in anchors:
        draw.text(position, letter, fill=LETTER_COLOUR, font=font, anchor=anchor,
                  stroke_width=max(1, size // 10), stroke_fill=LETTER_OUTLINE)
    return np.asarray(picture)


def display_slice(pixels: np.ndarray, spacing: Sequence[float], plane: str) -> np.ndarray:
    """A slice from :func:`volume_slice` ready to show: square millimetres, legible size, direction letters.

    Args:
        pixels: Grey (H, W) or RGB (H, W, 3) uint8, oriented by :func:`volume_slice`.
        spacing: The volume's voxel spacing in mm, RAS+ axis order.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    """
    shown = physical_aspect(pixels, *slice_spacing(spacing, plane))
    return draw_orientation_letters(enlarge_to(shown), plane)


def label_colours(label_values: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """A distinct RGB colour per label value (tab10, then tab20), stable for a given value."""
    palette = [tuple(int(255 * c) for c in colormaps["tab10"](i)[:3]) for i in range(10)]
    palette += [tuple(int(255 * c) for c in colormaps["tab20"](i)[:3]) for i in range(1, 20, 2)]
    return {int(value): palette[(int(value) - 1) % len(palette)] for value in label_values if int(value) > 0}


def label_overlay(gray: np.ndarray, labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]],
                  opacity: float) -> np.ndarray:
    """RGB uint8 image with each labelled pixel tinted by its label's colour."""
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    for value, colour in colours.items():
        mask = labels == value
        if mask.any():
            rgb[mask] = rgb[mask] * (1 - opacity) + np.asarray(colour, dtype=np.float32) * opacity
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


def legend_html(names: Mapping[int, str], colours: Mapping[int, tuple[int, int, int]]) -> str:
    """A small HTML legend: one coloured square and name per label."""
    items = [f'<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb{colours[value]};'
             f'margin:0 0.3em 0 0.8em;vertical-align:middle"></span>{_escape(names.get(value, str(value)))}'
             for value in sorted(colours)]
    return "<div>" + "".join(items) + "</div>"


def probability_table(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> pd.DataFrame:
    """One row per label, sorted by probability (highest first), with threshold, call and display name."""
    table = pd.DataFrame({"label": list(probabilities), "probability": [float(v) for v in probabilities.values()]})
    table["threshold"] = [float(thresholds.get(label, DEFAULT_THRESHOLD)) for label in table["label"]]
    table["call"] = np.where(table["probability"] >= table["threshold"], "positive", "negative")
    table["finding"] = [finding_name(label) for label in table["label"]]
    return table.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


def finding_name(label: str) -> str:
    """A label as a reader writes it: ChestX-ray14's ``Pleural_Thickening`` -> ``Pleural Thickening``."""
    return label.replace("_", " ")


def probability_chart(table: pd.DataFrame) -> alt.LayerChart:
    """Horizontal bars of probability, each label's threshold as a black tick, the numbers in a column beside.

    The numbers stand right of the axis's end (x = 1), aligned, so a tick or
    a long bar never covers them.
    """
    order = list(table["finding"])
    axis = alt.Axis(labelOverlap=False, labelLimit=260, labelFontSize=13)
    base = alt.Chart(table).encode(y=alt.Y("finding:N", sort=order, title=None, axis=axis))
    x_scale = alt.Scale(domain=[0, round(NUMBER_COLUMN_X + 0.14, 2)], nice=False)
    x_axis = alt.Axis(values=[0, 0.25, 0.5, 0.75, 1.0], format=".2f", title="probability (black tick: threshold)")
    tooltip = ["finding", alt.Tooltip("probability:Q", format=".3f"), alt.Tooltip("threshold:Q", format=".2f"),
               "call"]
    bars = base.mark_bar().encode(
        x=alt.X("probability:Q", scale=x_scale, axis=x_axis),
        color=alt.Color("call:N", scale=alt.Scale(domain=["positive", "negative"],
                                                  range=[POSITIVE_COLOUR, NEGATIVE_COLOUR]),
                        legend=alt.Legend(title="call", orient="bottom")),
        tooltip=tooltip,
    )
    numbers = base.mark_text(align="left", fontSize=13).encode(
        x=alt.datum(NUMBER_COLUMN_X, scale=x_scale), text=alt.Text("probability:Q", format=".2f"),
        color=alt.condition(alt.datum.call == "positive", alt.value(POSITIVE_COLOUR), alt.value("#333333")),
        tooltip=tooltip,
    )
    ticks = base.mark_tick(color="black", thickness=2).encode(x=alt.X("threshold:Q", scale=x_scale),
                                                             tooltip=tooltip)
    return (bars + ticks + numbers).properties(height=alt.Step(ROW_HEIGHT_PX))


def threshold_caption(thresholds: Mapping[str, float]) -> str:
    """What the chart's numbers and black ticks mean, and where the thresholds came from."""
    values = {round(float(value), 4) for value in thresholds.values()}
    if values == {DEFAULT_THRESHOLD}:
        origin = ("every threshold is the default 0.5: this checkpoint's card holds no calibrated thresholds "
                  "(`medres eval cxr` writes a checkpoint with thresholds chosen on validation data)")
    else:
        origin = "the thresholds come from the checkpoint's model card (chosen on validation data)"
    return ("The number beside each bar is the model's probability for that finding. The black tick marks the "
            "finding's decision threshold: a probability at or above it is a positive call (red bar), below it "
            f"a negative call (blue). Here {origin}.")


def positive_calls_text(table: pd.DataFrame) -> str:
    """One line naming the positive calls with their probabilities, highest first."""
    positives = table[table["call"] == "positive"]
    if positives.empty:
        return "Positive calls: none (no probability reaches its threshold)."
    items = [f"{row.finding} {row.probability:.2f} (threshold {row.threshold:.2f})" for row in positives.itertuples()]
    return "Positive calls: " + ", ".join(items) + "."


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
