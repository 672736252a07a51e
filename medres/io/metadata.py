"""PHI-free metadata: an allowlist of technical DICOM fields, never a denylist.

Anything not named here (patient name, ID, birth date, accession number,
institution, physicians, free-text descriptions that often carry them) never
reaches ``Image.meta``, so it cannot leak into tables, logs or the app.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

TECHNICAL_KEYWORDS = (
    "Modality",
    "PhotometricInterpretation",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "PatientOrientation",
    "ViewPosition",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "ImageType",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesNumber",
    "InstanceNumber",
    "KVP",
)
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "OtherPatientIDs",
)
EXECUTABLE_MAGICS = (b"MZ", b"\x7fELF")


def dicom_meta(dataset: Dataset) -> dict[str, Any]:
    """The allowlisted technical fields of a dataset as plain JSON-able values."""
    meta: dict[str, Any] = {"source_format": "dicom"}
    for keyword in TECHNICAL_KEYWORDS:
        value = dataset.get(keyword)
        if value is not None and value != "":
            meta[_snake_case(keyword)] = _plain(value)
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        meta["transfer_syntax"] = str(syntax)
        meta["transfer_syntax_name"] = syntax.name
    meta["suspicious_preamble"] = has_executable_preamble(dataset.preamble)
    return meta


def has_executable_preamble(preamble: bytes | None) -> bool:
    """True when the 128-byte preamble starts a Windows PE or ELF executable."""
    return bool(preamble) and preamble.startswith(EXECUTABLE_MAGICS)


def _plain(value: Any) -> Any:
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _snake_case(keyword: str) -> str:
    out = []
    for index, char in enumerate(keyword):
        if char.isupper() and index and (not keyword[index - 1].isupper() or
                                         (index + 1 < len(keyword) and keyword[index + 1].islower())):
            out.append("_")
        out.append(char.lower())
    return "".join(out)
