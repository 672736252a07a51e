"""A DICOM header table for the review app, with identifying values masked.

Masking is allowlist-first, as in :mod:`medres.io.metadata`: a value is shown
only when its keyword is a known technical field, or a number in a
non-private element whose keyword does not mention the patient. Everything
else -- names (any ``PN`` element), IDs, dates and times, institutions,
physicians, instance UIDs, free text, private tags -- is shown as ``•••``, so a field no one
thought of is hidden rather than leaked.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
from pydicom.dataelem import DataElement

from medres.io.detect import looks_like_dicom
from medres.io.metadata import IDENTIFYING_KEYWORDS, TECHNICAL_KEYWORDS

MASK = "•••"
MAX_VALUE_CHARS = 80
EXTRA_TECHNICAL_KEYWORDS = frozenset({
    "TransferSyntaxUID", "MediaStorageSOPClassUID", "ImplementationVersionName", "HighBit", "PixelAspectRatio",
    "ImagePositionPatient", "SliceLocation", "ExposureTime", "XRayTubeCurrent", "Exposure", "ConvolutionKernel",
    "AcquisitionMatrix", "RepetitionTime", "EchoTime", "MagneticFieldStrength", "FlipAngle", "ScanningSequence",
    "SequenceVariant", "PatientPosition", "LossyImageCompression", "DistanceSourceToDetector",
    "DistanceSourceToPatient", "EstimatedRadiographicMagnificationFactor", "FieldOfViewShape", "Grid",
    "ContrastBolusAgent", "SpecificCharacterSet", "SOPClassUID", "ImagesInAcquisition", "Columns", "Rows",
    "LargestImagePixelValue", "SmallestImagePixelValue", "WindowCenterWidthExplanation", "ReconstructionDiameter",
})
SHOWN_KEYWORDS = frozenset(TECHNICAL_KEYWORDS) | EXTRA_TECHNICAL_KEYWORDS
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "DS", "IS", "UV", "SV"})
ALWAYS_MASKED_VRS = frozenset({"PN", "DA", "DT", "TM", "AS"})
SHOWN_UIDS = frozenset({"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ReferencedSOPClassUID"})
"""Only UIDs that name a kind of object or encoding: instance UIDs can be traced back to a patient."""


def header_table(path: Path) -> pd.DataFrame:
    """Tag, keyword, VR and (masked) value of each top-level element of a DICOM file.

    Pixel data is not read. ``path`` may be a series folder: its first DICOM file is used.
    """
    source = first_dicom_file(path)
    if source is None:
        return pd.DataFrame(columns=["tag", "keyword", "VR", "value"])
    dataset = pydicom.dcmread(source, stop_before_pixels=True, force=True)
    elements = list(getattr(dataset, "file_meta", [])) + list(dataset)
    rows = [_row(element) for element in elements]
    return pd.DataFrame(rows, columns=["tag", "keyword", "VR", "value"])


def first_dicom_file(path: Path) -> Path | None:
    """``path`` itself when it is a DICOM file, else the first DICOM file in the folder."""
    if path.is_file():
        return path if looks_like_dicom(path) else None
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_file() and not child.is_symlink() and looks_like_dicom(child):
                return child
    return None


def is_shown(element: DataElement) -> bool:
    """Whether an element's value may be displayed (see the module docstring)."""
    keyword = element.keyword or ""
    if element.tag.is_private or keyword in IDENTIFYING_KEYWORDS or element.VR in ALWAYS_MASKED_VRS:
        return False
    if element.VR == "UI":
        return keyword in SHOWN_UIDS
    if keyword in SHOWN_KEYWORDS:
        return True
    return element.VR in NUMERIC_VRS and "Patient" not in keyword and bool(keyword)


def _row(element: DataElement) -> tuple[str, str, str, str]:
    tag = f"({element.tag.group:04X},{element.tag.element:04X})"
    keyword = element.keyword or ("private" if element.tag.is_private else "unknown")
    if element.VR == "SQ":
        return tag, keyword, "SQ", f"sequence of {len(element.value or [])} item(s)"
    if element.keyword == "PixelData":
        return tag, keyword, str(element.VR), "(pixel data not shown)"
    value = _text(element.value) if is_shown(element) else MASK
    return tag, keyword, str(element.VR), value


def _text(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"
