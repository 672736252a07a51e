"""Writing a DICOM Segmentation (highdicom) for a volume read from a DICOM series folder.

The writer takes the ``Image`` that :func:`medres.io.read_image` returned and
works from the slice headers the series reader kept on it (``Image.sources``,
pixel data dropped), as nnU-Net pairs a reader and a writer through one
properties dict: the source is never opened again, so the SEG references
exactly the slices the labels were computed from. One binary frame per source
slice, looked up by patient position, so the SEG overlays the series whatever
order the volume was stored in.

A Segmentation belongs to the same patient and study as its source, so the
standard makes it carry their patient and study modules; callers write it only
when asked for (``medres segment --dicom-seg``). This module imports highdicom,
which is why :mod:`medres.io` does not import it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from medres import __version__ as MEDRES_VERSION
from medres.errors import GeometryMismatchError, UsageError
from medres.io.geometry import LPS_TO_RAS
from medres.io.image import Image

INDEX_TOLERANCE = 0.05  # voxels: how far a source pixel may sit from a volume voxel centre
TYPE2_PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                                "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
KNOWN_STRUCTURES = {"liver": codes.SCT.Liver, "spleen": codes.SCT.Spleen, "kidney": codes.SCT.Kidney,
                    "kidneys": codes.SCT.Kidney, "pancreas": codes.SCT.Pancreas, "lung": codes.SCT.Lung,
                    "heart": codes.SCT.Heart, "bone": codes.SCT.Bone}
SEG_SERIES_NUMBER = 9001


def write_dicom_seg(labels: np.ndarray, image: Image, out_path: str | Path, *, label_names: Sequence[str],
                    algorithm_name: str) -> Path:
    """A binary DICOM Segmentation of every non-background label, referencing the image's source series.

    Args:
        labels: ``(X, Y, Z)`` labels on the image's RAS+ grid (value ``i`` is ``label_names[i]``, 0 background).
        image: The volume the labels were computed for, read from a DICOM series folder.
        out_path: The ``.dcm`` to write (its folder is created).
        label_names: The name of each label value, background first.
        algorithm_name: The model that produced the labels (algorithm identification, series description).

    Raises:
        UsageError: The image was not read from a DICOM series folder.
        GeometryMismatchError: A source slice does not lie on the labels' grid.
    """
    datasets = source_datasets(image)
    frames = labels_on_source_frames(np.asarray(labels), image.affine, datasets)
    descriptions = [segment_description(value, name, algorithm_name)
                    for value, name in enumerate(label_names) if value > 0]
    with _quiet_logger("highdicom"):  # it logs every copied module at INFO
        segmentation = _segmentation_from(datasets, frames, descriptions, algorithm_name)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    segmentation.save_as(out_path)
    return out_path


def source_datasets(image: Image) -> list[Dataset]:
    """Copies of the image's source slice headers, ready for highdicom.

    Type 2 patient/study attributes that a file omits altogether (allowed in
    practice, not by the standard) are added empty to the copies, because
    highdicom copies them into the SEG and requires them to exist; the
    image's own headers stay as they were read.

    Raises:
        UsageError: The image carries no DICOM slice headers (it was not read from a series folder).
    """
    if not image.sources or not all(isinstance(source, Dataset) for source in image.sources):
        raise UsageError("a DICOM SEG needs a volume read from a DICOM series folder (it references the "
                         "series' slices)")
    datasets = [copy.deepcopy(source) for source in image.sources]
    for dataset in datasets:
        for keyword in TYPE2_PATIENT_STUDY_KEYWORDS:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
    return datasets


def labels_on_source_frames(labels_ras: np.ndarray, affine_ras: np.ndarray,
                            datasets: Sequence[Dataset]) -> np.ndarray:
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


def segment_description(number: int, name: str, algorithm_name: str) -> hd.seg.SegmentDescription:
    """A segment's description: SNOMED CT codes for known organs, a private code otherwise."""
    structure = KNOWN_STRUCTURES.get(name.lower())
    if structure is not None:
        category, property_type = codes.SCT.AnatomicalStructure, structure
    else:
        category = codes.SCT.Tissue
        property_type = hd.sr.CodedConcept(value=name[:16], scheme_designator="99MEDRES", meaning=name)
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, family=codes.cid7162.ArtificialIntelligence,
                                                   version=MEDRES_VERSION)
    return hd.seg.SegmentDescription(segment_number=number, segment_label=name,
                                     segmented_property_category=category,
                                     segmented_property_type=property_type,
                                     algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                     algorithm_identification=algorithm)


def _segmentation_from(datasets: Sequence[Dataset], frames: np.ndarray,
                       descriptions: list[hd.seg.SegmentDescription], algorithm_name: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medres",
        manufacturer_model_name=algorithm_name, software_versions=MEDRES_VERSION, device_serial_number="none",
        series_description=f"medres {algorithm_name} segmentation (research use only)")


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
