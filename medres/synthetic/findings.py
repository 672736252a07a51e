"""Drawing the 14 ChestX-ray14 findings onto a synthetic chest radiograph.

Everything is in fractions of the image side (x to the right, y down), so a
pattern looks the same at any ``image_size``; sizes are chosen so each one
survives downsampling to 64x64 (the smallest, a nodule, is still about 3 pixels
wide there). Each finding has its own shape, scale, texture and place -- a
small bright disk for Nodule, a gas bubble behind the heart for Hernia, a dark
apical rim for Pneumothorax -- so that a small CNN can learn all 14 labels from
a few thousand images, while positions and sizes vary enough that no single
pixel gives a label away. Painters return the pixel box of what they drew,
which is what ``BBox_List_2017.csv`` records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

Box = tuple[float, float, float, float]  # x, y, w, h in pixels of the written image
AIR_LEVEL = 0.03
FLUID_LEVEL = 0.66
LUNG_TAPER = 0.15  # lungs are narrower at the apex than at the base


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest geometry and tissue brightness, in fractions of the image side."""

    midline_x: float
    lung_center_y: float
    lung_offset_x: float
    lung_radius_x: float
    lung_radius_y: float
    heart_offset_x: float
    heart_center_y: float
    heart_radius_x: float
    heart_radius_y: float
    body_radius_x: float
    lung_level: float
    tissue_level: float
    mediastinum_level: float
    rib_period: float
    rib_phase: float

    def lung_center_x(self, side: int) -> float:
        """Centre of the lung on image side ``side`` (-1 left, +1 right)."""
        return self.midline_x + side * self.lung_offset_x


@dataclass
class Canvas:
    """The image being drawn (0 = black, 1 = white) and what painters need to place patterns.

    Attributes:
        lungs: Soft mask of each lung by image side (-1 left, +1 right).
        solid: Soft mask of mediastinum and heart, which lung changes must not darken.
    """

    pixels: np.ndarray
    y: np.ndarray
    x: np.ndarray
    anatomy: Anatomy
    rng: np.random.Generator
    lungs: dict[int, np.ndarray] = field(default_factory=dict)
    solid: np.ndarray | None = None

    @property
    def pixel(self) -> float:
        """One pixel in fractions of the image side."""
        return 1.0 / self.pixels.shape[0]


def ellipse(canvas: Canvas, center_x: float, center_y: float, radius_x: float, radius_y: float,
            softness: float = 0.0) -> np.ndarray:
    """A filled ellipse in [0, 1]; ``softness`` is the edge width in fractions of the side (0: one pixel)."""
    radius = np.sqrt(((canvas.x - center_x) / radius_x) ** 2 + ((canvas.y - center_y) / radius_y) ** 2)
    edge = max(softness, canvas.pixel)
    return np.clip((1 - radius) * min(radius_x, radius_y) / edge + 0.5, 0, 1)


def box_mask(canvas: Canvas, center_x: float, center_y: float, half_width: float, half_height: float,
             softness: float = 0.0, angle: float = 0.0) -> np.ndarray:
    """A filled rectangle in [0, 1], rotated by ``angle`` radians, with a soft edge."""
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    along = (canvas.x - center_x) * cos + (canvas.y - center_y) * sin
    across = -(canvas.x - center_x) * sin + (canvas.y - center_y) * cos
    edge = max(softness, canvas.pixel)
    inside_along = np.clip((half_width - np.abs(along)) / edge + 0.5, 0, 1)
    return inside_along * np.clip((half_height - np.abs(across)) / edge + 0.5, 0, 1)


def lung_radius(canvas: Canvas, side: int, scale: float = 1.0, shift_y: float = 0.0) -> np.ndarray:
    """Normalised distance from a lung's centre: 1 on its edge, which tapers towards the apex.

    ``scale`` enlarges the outline (e.g. for an over-expanded lung) and
    ``shift_y`` moves it down; painters that follow the lung edge use this.
    """
    anatomy = canvas.anatomy
    vertical = (canvas.y - anatomy.lung_center_y - shift_y) / (anatomy.lung_radius_y * scale)
    half_width = anatomy.lung_radius_x * scale * (1 + LUNG_TAPER * np.clip(vertical, -1, 1))
    return np.sqrt(((canvas.x - anatomy.lung_center_x(side)) / half_width) ** 2 + vertical * vertical)


def inside(radius: np.ndarray, canvas: Canvas, size: float, softness: float = 0.0) -> np.ndarray:
    """Soft mask of ``radius < 1`` for a shape about ``size`` (fraction of the side) across."""
    return np.clip((1 - radius) * size / max(softness, canvas.pixel) + 0.5, 0, 1)


def box_of(mask: np.ndarray, threshold: float = 0.3) -> Box:
    """Pixel box ``(x, y, w, h)`` around where ``mask`` exceeds ``threshold``."""
    above = mask > threshold
    rows, columns = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(columns[0]), float(rows[0]), float(columns[-1] - columns[0] + 1), float(rows[-1] - rows[0] + 1))


def point_in_lung(canvas: Canvas, side: int, zone: tuple[float, float],
                  lateral: tuple[float, float] = (-0.5, 0.5)) -> tuple[float, float]:
    """A random point in one lung.

    Args:
        zone: Vertical range in lung radii (-1 apex, +1 base).
        lateral: Horizontal range in lung half-widths at that height (+1 towards the chest wall).
    """
    anatomy, rng = canvas.anatomy, canvas.rng
    vertical = rng.uniform(*zone)
    horizontal = rng.uniform(*lateral) * math.sqrt(max(0.0, 1 - vertical ** 2)) * side
    return (anatomy.lung_center_x(side) + horizontal * anatomy.lung_radius_x,
            anatomy.lung_center_y + vertical * anatomy.lung_radius_y)


def eighth_power(values: np.ndarray) -> np.ndarray:
    """``values ** 8`` by squaring, much cheaper than NumPy's float32 ``power``."""
    squared = values * values
    squared *= squared
    return squared * squared


def _side(canvas: Canvas) -> int:
    return int(canvas.rng.choice((-1, 1)))


def _brighten_to(canvas: Canvas, mask: np.ndarray, level: float | np.ndarray) -> None:
    """Blend towards ``level`` where ``mask`` is set, never darkening (an opacity hides what is behind)."""
    canvas.pixels[:] = canvas.pixels * (1 - mask) + np.maximum(canvas.pixels, level) * mask


def paint_emphysema(canvas: Canvas) -> Box:
    """Hyperlucent, over-expanded lungs with thinned markings (and flattened diaphragm)."""
    anatomy, rng = canvas.anatomy, canvas.rng
    darkening = rng.uniform(0.09, 0.12)
    expanded = np.maximum(*(inside(lung_radius(canvas, side, 1.08, 0.025), canvas, anatomy.lung_radius_x,
                                   2 * canvas.pixel) for side in (-1, 1)))
    expanded = expanded * (1 - canvas.solid)
    dark = np.minimum(canvas.pixels - darkening, anatomy.lung_level - darkening + 0.03)
    canvas.pixels[:] = canvas.pixels * (1 - expanded) + dark * expanded
    return box_of(expanded)


def paint_cardiomegaly(canvas: Canvas) -> Box:
    """A heart silhouette 1.45-1.65x wider than this patient's normal one (cardiothoracic ratio > 0.5)."""
    anatomy, rng = canvas.anatomy, canvas.rng
    radius_x = anatomy.heart_radius_x * rng.uniform(1.45, 1.65)
    radius_y = anatomy.heart_radius_y * rng.uniform(1.2, 1.35)
    center_x = anatomy.midline_x + anatomy.heart_offset_x + rng.uniform(0.01, 0.03)
    center_y = anatomy.heart_center_y + 0.4 * (radius_y - anatomy.heart_radius_y)
    heart = ellipse(canvas, center_x, center_y, radius_x, radius_y, 2 * canvas.pixel)
    canvas.pixels[:] = canvas.pixels * (1 - heart) + anatomy.mediastinum_level * heart
    return box_of(heart)


def paint_pneumothorax(canvas: Canvas) -> Box:
    """A black rim without lung markings at one apex, edged by the thin visceral pleural line."""
    anatomy, rng, side = canvas.anatomy, canvas.rng, _side(canvas)
    center_x, center_y = anatomy.lung_center_x(side), anatomy.lung_center_y
    collapse = rng.uniform(0.78, 0.85)
    collapsed_x = center_x - side * (1 - collapse) * anatomy.lung_radius_x * 0.6
    collapsed_y = center_y + (1 - collapse) * anatomy.lung_radius_y
    radii = (anatomy.lung_radius_x * collapse, anatomy.lung_radius_y * collapse)
    collapsed = ellipse(canvas, collapsed_x, collapsed_y, *radii)
    upper = np.clip((center_y + 0.2 * anatomy.lung_radius_y - canvas.y) / (4 * canvas.pixel), 0, 1)
    rim = np.clip(canvas.lungs[side] - collapsed, 0, 1) * upper
    canvas.pixels[:] = canvas.pixels * (1 - rim) + AIR_LEVEL * rim
    line_width = 1.5 * canvas.pixel + 0.004
    outline = ellipse(canvas, collapsed_x, collapsed_y, radii[0] + line_width, radii[1] + line_width) - collapsed
    canvas.pixels += 0.2 * np.clip(outline, 0, 1) * upper * canvas.lungs[side]
    return box_of(rim)


def paint_effusion(canvas: Canvas) -> Box:
    """Fluid filling one lung base up to a meniscus that climbs the chest wall."""
    anatomy, rng, side = canvas.anatomy, canvas.rng, _side(canvas)
    center_x = anatomy.lung_center_x(side)
    level_y = anatomy.lung_center_y + anatomy.lung_radius_y * (1 - rng.uniform(0.38, 0.6))
    towards_wall = np.clip((canvas.x - center_x) * side / anatomy.lung_radius_x, 0, None)
    meniscus_y = level_y - 0.05 * towards_wall ** 2
    below = np.clip((canvas.y - meniscus_y) / (1.5 * canvas.pixel) + 0.5, 0, 1)
    space = inside(lung_radius(canvas, side, 1.05), canvas, anatomy.lung_radius_x, 2 * canvas.pixel)
    fluid = space * below
    _brighten_to(canvas, fluid, FLUID_LEVEL)
    return box_of(fluid)


def paint_edema(canvas: Canvas) -> Box:
    """Bilateral, symmetric perihilar haze ("bat wings") fading towards the periphery."""
    anatomy, rng = canvas.anatomy, canvas.rng
    amplitude, height_offset = rng.uniform(0.17, 0.22), rng.uniform(-0.02, 0.04)
    spread_x, spread_y = rng.uniform(0.07, 0.09), rng.uniform(0.12, 0.15)
    haze = np.zeros_like(canvas.pixels)
    for side in (-1, 1):
        hilum_x = anatomy.lung_center_x(side) - side * 0.4 * anatomy.lung_radius_x
        distance = ((canvas.x - hilum_x) / spread_x) ** 2 + ((canvas.y - anatomy.lung_center_y - height_offset)
                                                             / spread_y) ** 2
        haze = np.maximum(haze, np.exp(-distance) * canvas.lungs[side])
    canvas.pixels += amplitude * haze
    return box_of(haze, threshold=0.15)


def paint_consolidation(canvas: Canvas) -> Box:
    """A dense, homogeneous lobar opacity spanning one lung, bounded by tilted fissures."""
    anatomy, rng, side = canvas.anatomy, canvas.rng, _side(canvas)
    top = anatomy.lung_center_y + anatomy.lung_radius_y * rng.uniform(-0.75, -0.45)
    height = anatomy.lung_radius_y * rng.uniform(0.45, 0.65)
    tilt = rng.uniform(-0.35, 0.35)
    fissure_y = canvas.y - tilt * (canvas.x - anatomy.lung_center_x(side))
    band = np.clip((fissure_y - top) / canvas.pixel + 0.5, 0, 1) * np.clip((top + height - fissure_y)
                                                                          / canvas.pixel + 0.5, 0, 1)
    lobe = band * canvas.lungs[side]
    _brighten_to(canvas, lobe, anatomy.lung_level + rng.uniform(0.3, 0.36))
    return box_of(lobe)


def paint_pneumonia(canvas: Canvas) -> Box:
    """A soft-edged, mottled (finely blotchy) opacity in one lower lung zone."""
    rng, side = canvas.rng, _side(canvas)
    center = point_in_lung(canvas, side, (0.1, 0.5), (-0.3, 0.3))
    region = ellipse(canvas, *center, rng.uniform(0.065, 0.085), rng.uniform(0.075, 0.1), softness=0.02)
    region = region * canvas.lungs[side]
    grain = ndimage.gaussian_filter(rng.standard_normal(canvas.pixels.shape, dtype=np.float32),
                                    sigma=0.01 / canvas.pixel)
    mottled = np.clip(0.5 + grain / (grain.std() + 1e-6) * 0.35, 0, 1)
    canvas.pixels += region * (0.1 + 0.2 * mottled)
    return box_of(region)


def paint_infiltration(canvas: Canvas) -> Box:
    """A cluster of 5-8 ill-defined, medium-sized puffs in one mid lung zone."""
    rng, side = canvas.rng, _side(canvas)
    center_x, center_y = point_in_lung(canvas, side, (-0.35, 0.35), (-0.4, 0.4))
    puffs = np.zeros_like(canvas.pixels)
    for _ in range(int(rng.integers(5, 9))):
        puff_x, puff_y = center_x + rng.uniform(-0.06, 0.06), center_y + rng.uniform(-0.07, 0.07)
        sigma = rng.uniform(0.014, 0.022)
        puffs += rng.uniform(0.6, 1.0) * np.exp(-(((canvas.x - puff_x) ** 2 + (canvas.y - puff_y) ** 2)
                                                  / (2 * sigma ** 2)))
    puffs = np.clip(puffs, 0, 1.4) * canvas.lungs[side]
    canvas.pixels += 0.16 * puffs
    return box_of(puffs)


def paint_fibrosis(canvas: Canvas) -> Box:
    """A net of thin reticular lines in one upper, peripheral lung zone."""
    rng, side = canvas.rng, _side(canvas)
    center = point_in_lung(canvas, side, (-0.7, -0.25), (0.2, 0.6))
    region = ellipse(canvas, *center, rng.uniform(0.07, 0.09), rng.uniform(0.09, 0.12), softness=0.015)
    region = region * canvas.lungs[side]
    period, angle = rng.uniform(0.05, 0.06), rng.uniform(0, np.pi)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    along, across = canvas.x * cos + canvas.y * sin, canvas.y * cos - canvas.x * sin
    lines = np.maximum(eighth_power(np.cos(np.pi / period * along)),
                       eighth_power(np.cos(np.pi / period * across)))
    canvas.pixels += region * (0.06 + 0.3 * lines)
    return box_of(region)


def paint_atelectasis(canvas: Canvas) -> Box:
    """A plate-like band of opacity, tilted, in one lower lung zone."""
    rng, side = canvas.rng, _side(canvas)
    center = point_in_lung(canvas, side, (0.15, 0.6), (-0.35, 0.35))
    band = box_mask(canvas, *center, rng.uniform(0.065, 0.09), rng.uniform(0.014, 0.019),
                    softness=0.004, angle=rng.uniform(-0.45, 0.45))
    band = band * canvas.lungs[side]
    canvas.pixels += rng.uniform(0.28, 0.34) * band
    return box_of(band)


def paint_pleural_thickening(canvas: Canvas) -> Box:
    """A bright band along the lateral chest wall, inside one lung's edge."""
    anatomy, rng, side = canvas.anatomy, canvas.rng, _side(canvas)
    center_x = anatomy.lung_center_x(side)
    radius = lung_radius(canvas, side)
    thickness = rng.uniform(0.026, 0.034) / anatomy.lung_radius_x
    inner = np.clip((radius - 1 + thickness) * anatomy.lung_radius_x / canvas.pixel + 0.5, 0, 1)
    towards_wall = np.clip(((canvas.x - center_x) * side / anatomy.lung_radius_x - 0.35) / 0.05, 0, 1)
    start = anatomy.lung_center_y + anatomy.lung_radius_y * rng.uniform(-0.55, -0.15)
    length = anatomy.lung_radius_y * rng.uniform(0.5, 0.75)
    vertical = box_mask(canvas, 0.5, start + length / 2, 1.0, length / 2, softness=0.01)
    band = canvas.lungs[side] * inner * towards_wall * vertical
    _brighten_to(canvas, band, anatomy.tissue_level + 0.12)
    return box_of(band)


def paint_mass(canvas: Canvas) -> Box:
    """A large (3-4 cm-like), soft-edged, lobulated bright blob in one lung."""
    rng, side = canvas.rng, _side(canvas)
    center_x, center_y = point_in_lung(canvas, side, (-0.6, 0.4), (-0.45, 0.45))
    radius = rng.uniform(0.055, 0.075)
    blob = ellipse(canvas, center_x, center_y, radius, radius * rng.uniform(0.85, 1.15), softness=0.012)
    angle = rng.uniform(0, 2 * np.pi)
    lobule = ellipse(canvas, center_x + 0.6 * radius * np.cos(angle), center_y + 0.6 * radius * np.sin(angle),
                     0.55 * radius, 0.55 * radius, softness=0.01)
    mass = np.maximum(blob, lobule)
    canvas.pixels += rng.uniform(0.3, 0.36) * mass
    return box_of(mass)


def paint_nodule(canvas: Canvas) -> Box:
    """A small, sharply marginated, very bright disk anywhere in the lungs."""
    rng, side = canvas.rng, _side(canvas)
    center = point_in_lung(canvas, side, (-0.7, 0.6), (-0.6, 0.6))
    radius = rng.uniform(0.02, 0.027)
    nodule = ellipse(canvas, *center, radius, radius)
    canvas.pixels += rng.uniform(0.42, 0.5) * nodule
    return box_of(nodule)


def paint_hernia(canvas: Canvas) -> Box:
    """A round sac behind the lower heart holding a dark gas bubble (hiatal hernia)."""
    anatomy, rng = canvas.anatomy, canvas.rng
    center_x = anatomy.midline_x + rng.uniform(-0.02, 0.03)
    center_y = anatomy.heart_center_y + anatomy.heart_radius_y * rng.uniform(0.3, 0.6)
    radius = rng.uniform(0.05, 0.065)
    sac = ellipse(canvas, center_x, center_y, radius, radius * 0.9)
    gas = ellipse(canvas, center_x, center_y - 0.35 * radius, 0.75 * radius, 0.4 * radius)
    canvas.pixels += 0.12 * sac
    canvas.pixels[:] = canvas.pixels * (1 - gas) + 0.12 * gas
    return box_of(sac)


Painter = Callable[[Canvas], Box]
FINDING_PAINTERS: dict[str, Painter] = {
    "Emphysema": paint_emphysema, "Cardiomegaly": paint_cardiomegaly, "Pneumothorax": paint_pneumothorax,
    "Effusion": paint_effusion, "Edema": paint_edema, "Consolidation": paint_consolidation,
    "Pneumonia": paint_pneumonia, "Infiltration": paint_infiltration, "Fibrosis": paint_fibrosis,
    "Atelectasis": paint_atelectasis, "Pleural_Thickening": paint_pleural_thickening, "Mass": paint_mass,
    "Nodule": paint_nodule, "Hernia": paint_hernia,
}
# Lung-wide changes first, small opacities last, so no pattern erases another.
PAINT_ORDER: tuple[str, ...] = tuple(FINDING_PAINTERS)
