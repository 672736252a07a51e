"""Writing segmentations where the input came from: NIfTI on the input's grid, DICOM SEG, volumes in mL.

NIfTI: for a NIfTI input the labels are put back into the file's own voxel
order (undoing the RAS+ reorientation the reader applied, with nibabel's
orientation functions) and written with a copy of its header, so the qform,
sform and their codes - hence the affine any tool reads - are exactly the
input's. For a DICOM series the labels are written with the series' RAS+
affine.

DICOM SEG: written with highdicom, one frame per source slice, referencing
the source series. A Segmentation belongs to the same patient and study as
its source, so the standard makes it carry their patient and study modules;
it is written only when asked for (``--dicom-seg``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.sr.codedict import codes

from medres import __version__ as MEDRES_VERSION
from medres.errors import GeometryMismatchError
from medres.io.geometry import LPS_TO_RAS
from medres.io.series import list_dicom_files
from medres.models.card import ModelCard

RAS_ORIENTATION = np.array([[0, 1], [1, 1], [2, 1]])
INDEX_TOLERANCE = 0.05  # voxels: how far a source pixel may sit from a volume voxel centre
TYPE2_PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                                "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
KNOWN_STRUCTURES = {"liver": codes.SCT.Liver, "spleen": codes.SCT.Spleen, "kidney": codes.SCT.Kidney,
                    "kidneys": codes.SCT.Kidney, "pancreas": codes.SCT.Pancreas, "lung": codes.SCT.Lung,
                    "heart": codes.SCT.Heart, "bone": codes.SCT.Bone}


def labels_in_source_order(labels_ras: np.ndarray, affine_ras: np.ndarray, source_path: Path) -> np.ndarray:
    """Labels put back into the source NIfTI's voxel order (the inverse of the reader's reorientation).

    Raises:
        GeometryMismatchError: The labels' grid is not the file's grid reoriented to RAS+.
    """
    source = nib.load(source_path)
    back = ornt_transform(RAS_ORIENTATION, io_orientation(source.affine))
    stored = apply_orientation(labels_ras, back)
    implied_affine = np.asarray(affine_ras) @ inv_ornt_aff(back, labels_ras.shape)
    if stored.shape != tuple(source.shape[:3]) or not np.allclose(implied_affine, source.affine, atol=1e-4):
        raise GeometryMismatchError(f"labels of shape {labels_ras.shape} do not lie on the input's grid "
                                    f"{tuple(source.shape[:3])}", path=source_path)
    return np.ascontiguousarray(stored)


def write_labels_nifti(labels_ras: np.ndarray, affine_ras: np.ndarray, out_path: Path,
                       source_nifti: Path | None = None) -> Path:
    """Write uint8 labels; with ``source_nifti``, in its voxel order under a copy of its header.

    Args:
        labels_ras: ``(X, Y, Z)`` labels on the input's RAS+ grid.
        affine_ras: Their affine (used when there is no source NIfTI).
        out_path: The ``.nii.gz`` to write.
        source_nifti: The NIfTI the labels were computed from, if any.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if source_nifti is None:
        image = nib.Nifti1Image(labels_ras.astype(np.uint8), affine_ras)
        image.header.set_xyzt_units("mm")
    else:
        stored = labels_in_source_order(labels_ras, affine_ras, source_nifti)
        header = nib.load(source_nifti).header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        header.set_intent("label")
        image = type(nib.load(source_nifti))(stored.astype(np.uint8), None, header)
    nib.save(image, out_path)
    return out_path


def label_volumes_ml(labels: np.ndarray, affine: np.ndarray, label_names: Sequence[str]) -> dict[str, float]:
    """Volume of each non-background label in millilitres (voxel count x voxel volume from the affine)."""
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(label_names))
    return {name: round(float(counts[value]) * voxel_ml, 3) for value, name in enumerate(label_names) if value > 0}


def read_source_series(folder: Path) -> list[pydicom.Dataset]:
    """The series' datasets (headers only: a SEG needs their geometry and UIDs, not their pixels).

    Type 2 patient/study attributes that a file omits altogether (allowed in
    practice, not by the standard) are added empty in memory, because
    highdicom copies them into the SEG and requires them to exist.
    """
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in list_dicom_files(folder)]
    for dataset in datasets:
        for keyword in TYPE2_PATIENT_STUDY_KEYWORDS:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
    return datasets


def labels_on_source_frames(labels_ras: np.ndarray, affine_ras: np.ndarray,
                            datasets: Sequence[pydicom.Dataset]) -> np.ndarray:
    """``(n_slices, rows, cols)`` labels, frame k on source slice k, looked up by patient position.

    Each source pixel's centre (from ImagePositionPatient, ImageOrientationPatient
    and PixelSpacing, in LPS) is mapped through the volume's inverse affine to a
    voxel index, so the mapping holds whatever order the reader stored the volume in.

    Raises:
        GeometryMismatchError: A source pixel does not fall on a voxel centre of the labels' grid.
    """
    to_index = np.linalg.inv(np.asarray(affine_ras, np.float64))
    frames = []
    for dataset in datasets:
        orientation = np.asarray(dataset.ImageOrientationPatient, np.float64)
        row_spacing, column_spacing = (float(value) for value in dataset.PixelSpacing)
        origin = to_index @ np.append(LPS_TO_RAS[:3, :3] @ np.asarray(dataset.ImagePositionPatient, float), 1.0)
        column_step = to_index[:3, :3] @ (LPS_TO_RAS[:3, :3] @ orientation[:3]) * column_spacing
        row_step = to_index[:3, :3] @ (LPS_TO_RAS[:3, :3] @ orientation[3:]) * row_spacing
        rows, columns = np.arange(int(dataset.Rows)), np.arange(int(dataset.Columns))
        positions = origin[:3] + rows[:, None, None] * row_step + columns[None, :, None] * column_step
        indices = np.rint(positions).astype(np.int64)
        if np.abs(positions - indices).max() > INDEX_TOLERANCE or indices.min() < 0 or \
                (indices >= labels_ras.shape).any():
            raise GeometryMismatchError("the DICOM slices do not lie on the segmented volume's grid",
                                        path=getattr(dataset, "filename", None))
        frames.append(labels_ras[indices[..., 0], indices[..., 1], indices[..., 2]])
    return np.stack(frames).astype(np.uint8)


def segment_description(number: int, name: str, card: ModelCard) -> hd.seg.SegmentDescription:
    """A segment's description: SNOMED CT codes for known organs, a private code otherwise."""
    structure = KNOWN_STRUCTURES.get(name.lower())
    if structure is not None:
        category, property_type = codes.SCT.AnatomicalStructure, structure
    else:
        category = codes.SCT.Tissue
        property_type = hd.sr.CodedConcept(value=name[:16], scheme_designator="99MEDRES", meaning=name)
    algorithm = hd.AlgorithmIdentificationSequence(name=card.name, family=codes.cid7162.ArtificialIntelligence,
                                                   version=MEDRES_VERSION)
    return hd.seg.SegmentDescription(segment_number=number, segment_label=name,
                                     segmented_property_category=category,
                                     segmented_property_type=property_type,
                                     algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                     algorithm_identification=algorithm)


def write_dicom_seg(labels_ras: np.ndarray, affine_ras: np.ndarray, series_folder: Path, out_path: Path,
                    card: ModelCard) -> Path:
    """A binary DICOM Segmentation of every non-background label, referencing the source series."""
    datasets = read_source_series(series_folder)
    frames = labels_on_source_frames(labels_ras, affine_ras, datasets)
    descriptions = [segment_description(value, name, card) for value, name in enumerate(card.labels) if value > 0]
    with _quiet_logger("highdicom"):  # it logs every copied module at INFO
        segmentation = _segmentation_from(datasets, frames, descriptions, card)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    segmentation.save_as(out_path)
    return out_path


def _segmentation_from(datasets: Sequence[pydicom.Dataset], frames: np.ndarray,
                       descriptions: list[hd.seg.SegmentDescription], card: ModelCard) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medres", manufacturer_model_name=card.name,
        software_versions=MEDRES_VERSION, device_serial_number="none",
        series_description=f"medres {card.name} segmentation (research use only)")


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
