"""What a checkpoint's task needs from the scorer: which files apply, and their model input.

The pipeline (walk, workers, batching, journal, tables) is task-agnostic; a
task supplies three things:

- ``check_applies(facts)``: from header facts alone (no pixels decoded), raise
  a :class:`~medres.score.outcomes.NotApplicableError` for files the model
  does not apply to, so a folder of CT slices costs header reads, not decodes;
- ``prepare(image, card)``: the decoded image -> the model's input array,
  with exactly the preprocessing the model was trained with;
- ``predict(model, inputs)``: a batch of inputs -> per-image outputs.

Only the chest X-ray task (``"cxr"`` cards) is implemented. A segmentation
task plugs in here: its ``check_applies`` accepts CT/MR, and the walk's
per-file items are grouped into one case per SeriesInstanceUID (the header
facts already carry study/series UIDs) before being handed to the workers;
``medres segment`` owns that model's pre- and post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydicom.dataset import Dataset
from torch import nn

from medres.errors import NoPixelDataError, UsageError
from medres.io.image import Image
from medres.models.card import ModelCard
from medres.score.outcomes import (
    NeedsSegmentationModelError,
    NotChestError,
    NotFrontalError,
    NotRadiographError,
)
from medres.transforms.cxr import preprocess_for_model

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
CROSS_SECTIONAL_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX"})  # CHEST is the DICOM term; THORAX is common in practice
FRONTAL_VIEWS = frozenset({"PA", "AP"})
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class HeaderFacts:
    """What the applicability decision and the output row need from a file, without its pixels."""

    source_format: str  # dicom | png | jpeg | nifti
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    has_pixels: bool = True
    frames: int = 1
    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> HeaderFacts:
        """The facts of a DICOM header (values normalised to stripped upper case)."""
        return cls(
            source_format="dicom",
            modality=_text(dataset, "Modality").upper(),
            body_part=_text(dataset, "BodyPartExamined").upper(),
            view_position=_text(dataset, "ViewPosition").upper(),
            has_pixels=any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS),
            frames=_integer(dataset.get("NumberOfFrames"), 1),
            sop_instance_uid=_text(dataset, "SOPInstanceUID"),
            series_instance_uid=_text(dataset, "SeriesInstanceUID"),
            study_instance_uid=_text(dataset, "StudyInstanceUID"),
        )


class CxrTask:
    """Frontal chest radiographs for a 2D multi-label classifier (``task == "cxr"``)."""

    name = "cxr"

    def check_applies(self, facts: HeaderFacts) -> None:
        """Refuse, with a skip reason, files a frontal chest X-ray model must not score.

        PNG/JPEG carry no header, so they are taken as given. DICOM must be CR
        or DX, chest (or BodyPartExamined absent: many archives leave it out),
        one frame, and frontal where ViewPosition is given.
        """
        if facts.source_format == "nifti":
            raise NeedsSegmentationModelError("a NIfTI volume")
        if facts.source_format != "dicom":
            return
        if not facts.has_pixels:
            raise NoPixelDataError("no pixel data (a report, plan, presentation state or DICOMDIR)")
        if facts.modality in CROSS_SECTIONAL_MODALITIES:
            raise NeedsSegmentationModelError(f"modality {facts.modality}")
        if facts.modality not in RADIOGRAPH_MODALITIES:
            raise NotRadiographError(f"modality {facts.modality or '(missing)'} is not CR or DX")
        if facts.frames != 1:
            raise NotRadiographError(f"{facts.frames} frames; a radiograph has one")
        if facts.body_part and facts.body_part not in CHEST_BODY_PARTS:
            raise NotChestError(f"BodyPartExamined is {facts.body_part}, not CHEST")
        if facts.view_position and facts.view_position not in FRONTAL_VIEWS:
            raise NotFrontalError(f"ViewPosition is {facts.view_position}, not PA or AP")

    def prepare(self, image: Image, card: ModelCard) -> np.ndarray:
        """The model input ``(1, H, W)`` float32, through the training preprocessing."""
        if image.array.ndim != 3:
            raise NotRadiographError(f"decoded to a {image.array.ndim - 1}D image, not a 2D radiograph")
        return preprocess_for_model(image.array, card).numpy()

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
        """Per-label probabilities ``(B, n_labels)`` (sigmoid of the logits, in float32)."""
        return torch.sigmoid(model(inputs).float()).cpu().numpy()


TASKS = {"cxr": CxrTask}


def task_for_card(card: ModelCard) -> CxrTask:
    """The scoring task for a checkpoint's card.

    Raises:
        UsageError: The card's task has no scorer yet (segmentation checkpoints
            are run by ``medres segment``).
    """
    if card.task not in TASKS:
        raise UsageError(
            f"checkpoint {card.name!r} is a {card.task!r} model; `medres score` scores chest X-ray "
            f"classifiers ({', '.join(TASKS)}) - run segmentation checkpoints with `medres segment`"
        )
    return TASKS[card.task]()


def _text(dataset: Dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception:  # a malformed element must not decide the outcome  # noqa: BLE001
        return ""
    return "" if value is None else str(value).strip()


def _integer(value: object, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
