"""``medres segment`` as a function: one input (NIfTI file or DICOM series folder) -> output folder.

Outputs in ``out``: ``segmentation.nii.gz`` (on the input's grid, with the
input's own affine and voxel order), ``segmentation.dcm`` with ``dicom_seg``
(DICOM series inputs only), and ``volumes.json`` (mL per label, plus the
settings, any memory fallbacks that happened, and where the time went: see
:mod:`medres.timing`).

The input is read in a background thread while the model is built and its
weights loaded; reading (gzip, DICOM decoding) and building are mostly
outside the interpreter lock, so the two overlap.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from medres.errors import EmptyInputError, NotFoundError, UsageError
from medres.inference import SlidingWindowSettings
from medres.io import Image, read_image
from medres.io.nifti import write_labels_nifti
from medres.metrics.volumes import label_volumes_ml
from medres.models import ModelCard, load_checkpoint
from medres.segment.labels import SegmentationResult, segment_image
from medres.timing import StageClock

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
    timings: dict[str, Any] = field(default_factory=dict)  # as volumes.json records them


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
    clock = StageClock.start()
    source = Path(config.input)
    check_input_exists(source)
    if config.dicom_seg and not source.is_dir():
        raise UsageError("--dicom-seg needs a DICOM series folder as input (the SEG references its slices)",
                         path=source)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medres-read") as reader:
        reading = reader.submit(_read_volume_timed, source, clock)
        if model is None:
            with clock.timing("model_load"):
                model = load_segmentation_model(config.checkpoint)
        clock.mark("model_ready")
        image = reading.result()  # a reading error is raised here, as the reader raised it
    with clock.timing("inference"), tqdm(total=100, desc="segmenting", unit="%", disable=not config.window.progress,
                                         bar_format="{l_bar}{bar}| {elapsed}") as bar:
        result = segment_image(model, image, config.window, progress=lambda done: bar.update(round(100 * done) - bar.n))
    return write_outputs(result, image, source, Path(config.out), model.card, config, clock)


def _read_volume_timed(source: Path, clock: StageClock) -> Image:
    with clock.timing("read"):
        image = read_volume(source)
    clock.mark("first_image_decoded")
    return image


def write_outputs(result: SegmentationResult, image: Image, source: Path, out: Path, card: ModelCard,
                  config: SegmentConfig, clock: StageClock | None = None) -> SegmentOutputs:
    """Write the NIfTI, the optional DICOM SEG and ``volumes.json`` for one segmented input.

    The writers take the ``image`` that was read (its affine and source headers), never the source path.
    ``volumes.json`` records ``clock``'s timings, the writing of the images included.
    """
    clock = clock if clock is not None else StageClock.start()
    with clock.timing("writing"):
        nifti, dicom_seg = _write_images(result, image, out, card, config)
    volumes = label_volumes_ml(result.labels, image.affine, result.label_names)
    clock.mark("finished")
    timings = clock.record()
    summary = {"input": source.name, "model": card.name, "label_names": list(result.label_names),
               "label_volumes_ml": volumes,
               "voxel_spacing_mm": list(image.spacing), "settings": asdict(config.window), "notes": result.notes,
               "timings": timings}
    volumes_json = out / VOLUMES_NAME
    volumes_json.write_text(json.dumps(summary, indent=2) + "\n")
    return SegmentOutputs(nifti, dicom_seg, volumes_json, volumes, tuple(result.notes), timings)


def _write_images(result: SegmentationResult, image: Image, out: Path, card: ModelCard,
                  config: SegmentConfig) -> tuple[Path, Path | None]:
    """The labels as NIfTI and, if asked for, as a DICOM SEG."""
    out.mkdir(parents=True, exist_ok=True)
    nifti = write_labels_nifti(result.labels, image, out / NIFTI_NAME)
    if not config.dicom_seg:
        return nifti, None
    from medres.io.dicom_seg import write_dicom_seg  # highdicom, only for --dicom-seg

    return nifti, write_dicom_seg(result.labels, image, out / DICOM_SEG_NAME, label_names=card.labels,
                                  algorithm_name=card.name)
