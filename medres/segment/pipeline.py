"""``medres segment`` as a function: one input (NIfTI file or DICOM series folder) -> output folder.

Outputs in ``out``: ``segmentation.nii.gz`` (on the input's grid, with the
input's own affine and voxel order), ``segmentation.dcm`` with ``dicom_seg``
(DICOM series inputs only), and ``volumes.json`` (mL per label, plus the
settings and any memory fallbacks that happened).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn
from tqdm import tqdm

from medres.errors import EmptyInputError, NotFoundError, UsageError
from medres.inference import SlidingWindowSettings
from medres.io import Image, read_image
from medres.io.dicom_seg import write_dicom_seg
from medres.io.nifti import write_labels_nifti
from medres.metrics.volumes import label_volumes_ml
from medres.models import ModelCard, load_checkpoint
from medres.segment.labels import SegmentationResult, segment_image

NIFTI_NAME, DICOM_SEG_NAME, VOLUMES_NAME = "segmentation.nii.gz", "segmentation.dcm", "volumes.json"


@dataclass(frozen=True)
class SegmentConfig:
    """Everything ``medres segment`` needs."""

    input: str
    checkpoint: str
    out: str
    dicom_seg: bool = False
    window: SlidingWindowSettings = SlidingWindowSettings()


@dataclass(frozen=True)
class SegmentOutputs:
    """What was written, the label volumes and the notes (memory fallbacks) to show the user."""

    nifti: Path
    dicom_seg: Path | None
    volumes_json: Path
    volumes_ml: dict[str, float]
    notes: tuple[str, ...]


def load_segmentation_model(checkpoint: str | Path) -> nn.Module:
    """A checkpoint's model, refusing classifiers (the card says which task it was trained for)."""
    model = load_checkpoint(checkpoint)
    if model.card.task != "seg":
        raise UsageError(f"the checkpoint holds a {model.card.task!r} model ({model.card.name}); "
                         "`medres segment` needs a segmentation checkpoint", path=checkpoint)
    return model


def check_input_exists(path: Path) -> None:
    """Refuse a missing input or an empty folder before the model is loaded.

    Raises:
        NotFoundError: Nothing at ``path``.
        EmptyInputError: ``path`` is a folder with no file in it.
    """
    if not path.exists():
        raise NotFoundError("no such file or folder; give a NIfTI volume or a DICOM series folder", path=path)
    if path.is_dir() and not any(entry.is_file() for entry in path.iterdir()):
        raise EmptyInputError("no files directly in this folder; give the folder of one DICOM series", path=path)


def read_volume(path: Path) -> Image:
    """The input volume; a 2D image is refused with the reason."""
    image = read_image(path)
    if not image.is_volume or len(image.spatial_shape) != 3 or min(image.spatial_shape) < 2:
        raise UsageError(f"not a 3D volume (shape {image.array.shape}); give a NIfTI volume or a DICOM series "
                         "folder", path=path)
    return image


def segment_to_folder(config: SegmentConfig, model: nn.Module | None = None) -> SegmentOutputs:
    """Segment ``config.input`` and write the outputs into ``config.out``.

    Args:
        config: Input, checkpoint, output folder and sliding-window settings.
        model: An already loaded model (saves reloading it when segmenting many inputs).
    """
    source = Path(config.input)
    check_input_exists(source)
    if config.dicom_seg and not source.is_dir():
        raise UsageError("--dicom-seg needs a DICOM series folder as input (the SEG references its slices)",
                         path=source)
    model = model if model is not None else load_segmentation_model(config.checkpoint)
    image = read_volume(source)
    with tqdm(total=100, desc="segmenting", unit="%", disable=not config.window.progress,
              bar_format="{l_bar}{bar}| {elapsed}") as bar:
        result = segment_image(model, image, config.window, progress=lambda done: bar.update(round(100 * done) - bar.n))
    return write_outputs(result, image, source, Path(config.out), model.card, config)


def write_outputs(result: SegmentationResult, image: Image, source: Path, out: Path, card: ModelCard,
                  config: SegmentConfig) -> SegmentOutputs:
    """Write the NIfTI, the optional DICOM SEG and ``volumes.json`` for one segmented input.

    The writers take the ``image`` that was read (its affine and source headers), never the source path.
    """
    out.mkdir(parents=True, exist_ok=True)
    nifti = write_labels_nifti(result.labels, image, out / NIFTI_NAME)
    dicom_seg = write_dicom_seg(result.labels, image, out / DICOM_SEG_NAME, label_names=card.labels,
                                algorithm_name=card.name) if config.dicom_seg else None
    volumes = label_volumes_ml(result.labels, image.affine, result.label_names)
    summary = {"input": source.name, "model": card.name, "label_names": list(result.label_names),
               "label_volumes_ml": volumes,
               "voxel_spacing_mm": list(image.spacing), "settings": asdict(config.window), "notes": result.notes}
    volumes_json = out / VOLUMES_NAME
    volumes_json.write_text(json.dumps(summary, indent=2) + "\n")
    return SegmentOutputs(nifti, dicom_seg, volumes_json, volumes, tuple(result.notes))
