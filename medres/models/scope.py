"""The scope gate: which images a chest X-ray (``cxr``) model may score.

A classifier trained on frontal chest radiographs gives confident numbers for
anything it is shown: an axial CT slice, a knee film, a lateral view. Those
numbers mean nothing, so every place that runs the model -- ``medres score``
before decoding, the review app before showing probabilities or Grad-CAM --
asks :func:`check_chest_xray_scope` first, and the same image gets the same
answer (and reason code) everywhere.

The decision uses header facts only (:class:`ImageFacts`), built from a
pydicom header (before any pixel is decoded) or from an
:class:`~medres.io.Image`'s PHI-free metadata. PNG and JPEG carry no header,
so they are taken as given (they are how ChestX-ray14 is distributed).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from medres.errors import (
    NoPixelDataError,
    OutOfScopeBodyPartError,
    OutOfScopeDimensionalityError,
    OutOfScopeError,
    OutOfScopeModalityError,
    OutOfScopeViewError,
)
from medres.io.image import Image

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
CROSS_SECTIONAL_MODALITIES: dict[str, str] = {
    "CT": "computed tomography", "MR": "magnetic resonance", "PT": "PET", "NM": "nuclear medicine",
}
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX"})  # CHEST is the DICOM term; THORAX is common in practice
FRONTAL_VIEWS = frozenset({"PA", "AP"})
HEADERLESS_FORMATS = frozenset({"png", "jpeg"})
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
SEGMENT_HINT = "segment CT/MR volumes with `medres segment`"
CXR_INPUT = "the chest X-ray model takes single frontal (PA/AP) chest radiographs: CR/DX DICOM, PNG or JPEG"


@dataclass(frozen=True)
class ImageFacts:
    """What the scope decision needs from an image, without its pixels.

    Attributes:
        source_format: ``dicom``, ``png``, ``jpeg`` or ``nifti``.
        modality: DICOM Modality, stripped upper case ("" when absent or not DICOM).
        body_part: BodyPartExamined, stripped upper case ("" when absent).
        view_position: ViewPosition, stripped upper case ("" when absent).
        has_pixels: Whether the DICOM object holds pixel data at all.
        frames: NumberOfFrames (1 when absent).
        spatial_dimensions: 2 or 3 once the image is decoded; None when only the header was read.
    """

    source_format: str
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    has_pixels: bool = True
    frames: int = 1
    spatial_dimensions: int | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> ImageFacts:
        """The facts of a DICOM header (read with or without its pixels)."""
        return cls(
            source_format="dicom",
            modality=header_text(dataset, "Modality").upper(),
            body_part=header_text(dataset, "BodyPartExamined").upper(),
            view_position=header_text(dataset, "ViewPosition").upper(),
            has_pixels=any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS),
            frames=header_integer(dataset.get("NumberOfFrames"), 1),
        )

    @classmethod
    def from_image(cls, image: Image) -> ImageFacts:
        """The facts of a decoded image, from its PHI-free ``meta`` and its array's dimensionality."""
        meta = image.meta
        source_format = str(meta.get("source_format", "")).lower()
        is_dicom = source_format == "dicom"
        return cls(
            source_format=source_format,
            modality=str(meta.get("modality") or image.modality).strip().upper() if is_dicom else "",
            body_part=str(meta.get("body_part_examined", "")).strip().upper(),
            view_position=str(meta.get("view_position", "")).strip().upper(),
            frames=header_integer(meta.get("number_of_frames"), 1),
            spatial_dimensions=len(image.spatial_shape),
        )


def check_chest_xray_scope(facts: ImageFacts) -> None:
    """Refuse, with the reason, an image a frontal chest X-ray model must not score.

    Checked in this order, so the message names the most basic mismatch:
    pixel data, modality (CR/DX; PNG/JPEG taken as given), dimensionality
    (one 2D frame), body part (CHEST/THORAX, or absent: many archives leave it
    out) and view (PA/AP, or absent).

    Raises:
        NoPixelDataError: A DICOM object without pixels (a report, plan, DICOMDIR).
        OutOfScopeModalityError: Not a projection radiograph (CT, MR, NM, US ...).
        OutOfScopeDimensionalityError: A volume or a multi-frame object.
        OutOfScopeBodyPartError: BodyPartExamined names another part.
        OutOfScopeViewError: ViewPosition names a lateral or other non-frontal view.
    """
    if facts.source_format == "dicom" and not facts.has_pixels:
        raise NoPixelDataError("no pixel data (a report, plan, presentation state or DICOMDIR)")
    if facts.source_format == "nifti":
        raise OutOfScopeDimensionalityError(f"a NIfTI volume, not a radiograph; {CXR_INPUT}; {SEGMENT_HINT}")
    if facts.source_format not in HEADERLESS_FORMATS:
        _check_modality(facts.modality)
    if facts.frames != 1 or (facts.spatial_dimensions or 2) != 2:
        shape = f"{facts.frames} frames" if facts.frames != 1 else f"a {facts.spatial_dimensions}D volume"
        raise OutOfScopeDimensionalityError(f"{shape}, not a single 2D image; {CXR_INPUT}")
    if facts.body_part and facts.body_part not in CHEST_BODY_PARTS:
        raise OutOfScopeBodyPartError(f"BodyPartExamined is {facts.body_part}, not CHEST; {CXR_INPUT}")
    if facts.view_position and facts.view_position not in FRONTAL_VIEWS:
        raise OutOfScopeViewError(f"ViewPosition is {facts.view_position}, not a frontal view (PA or AP); "
                                  "the model was trained on frontal films only and does not read other views")


def chest_xray_scope_error(facts: ImageFacts) -> OutOfScopeError | NoPixelDataError | None:
    """The refusal :func:`check_chest_xray_scope` would raise, or None when the image is in scope."""
    try:
        check_chest_xray_scope(facts)
    except (OutOfScopeError, NoPixelDataError) as error:
        return error
    return None


def _check_modality(modality: str) -> None:
    if modality in CROSS_SECTIONAL_MODALITIES:
        raise OutOfScopeModalityError(
            f"modality {modality} ({CROSS_SECTIONAL_MODALITIES[modality]}): a cross-sectional image, not a "
            f"projection radiograph; {CXR_INPUT}; {SEGMENT_HINT}")
    if modality not in RADIOGRAPH_MODALITIES:
        raise OutOfScopeModalityError(
            f"modality {modality or '(missing)'} is not a projection radiograph (CR or DX); {CXR_INPUT}")


def header_text(dataset: Dataset, keyword: str) -> str:
    """A header value as stripped text; "" when absent or malformed (it must not decide the outcome)."""
    try:
        value = dataset.get(keyword)
    except Exception:  # a malformed element must not decide the outcome  # noqa: BLE001
        return ""
    return "" if value is None else str(value).strip()


def header_integer(value: object, default: int) -> int:
    """An integer header value, or ``default`` when absent or unreadable."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
