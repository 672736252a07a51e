"""What a checkpoint's task needs from the scorer: which files apply, and their model input.

The pipeline (walk, workers, batching, journal, tables) is task-agnostic; a
task supplies three things:

- ``check_applies(facts)``: from header facts alone (no pixels decoded), raise
  an :class:`~medres.errors.OutOfScopeError` for files the model does not
  apply to (the scope gate of :mod:`medres.models.scope`, shared with the
  review app), so a folder of CT slices costs header reads, not decodes;
- ``prepare(image, card)``: the decoded image -> the model's input array,
  with exactly the preprocessing the model was trained with;
- ``predict(model, inputs, precision)``: a batch of inputs -> per-image outputs.

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

from medres.errors import OutOfScopeDimensionalityError, UsageError
from medres.io.image import Image
from medres.models.card import ModelCard
from medres.models.scope import ImageFacts, check_chest_xray_scope, header_text
from medres.transforms.cxr import preprocess_for_model


@dataclass(frozen=True)
class HeaderFacts(ImageFacts):
    """The scope gate's facts plus the UIDs the output row needs, all without pixels."""

    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> HeaderFacts:
        """The facts of a DICOM header (values normalised to stripped upper case, UIDs as written)."""
        scope = ImageFacts.from_dataset(dataset)
        return cls(
            source_format=scope.source_format, modality=scope.modality, body_part=scope.body_part,
            view_position=scope.view_position, has_pixels=scope.has_pixels, frames=scope.frames,
            sop_instance_uid=header_text(dataset, "SOPInstanceUID"),
            series_instance_uid=header_text(dataset, "SeriesInstanceUID"),
            study_instance_uid=header_text(dataset, "StudyInstanceUID"),
        )


class CxrTask:
    """Frontal chest radiographs for a 2D multi-label classifier (``task == "cxr"``)."""

    name = "cxr"

    def check_applies(self, facts: HeaderFacts) -> None:
        """Refuse, with a skip reason, files a frontal chest X-ray model must not score.

        The decision is :func:`medres.models.scope.check_chest_xray_scope`, the
        same gate the review app applies, so an image is refused for the same
        reason (``out_of_scope_modality``, ``out_of_scope_view`` ...) everywhere.
        """
        check_chest_xray_scope(facts)

    def prepare(self, image: Image, card: ModelCard) -> np.ndarray:
        """The model input ``(1, H, W)`` float32, through the training preprocessing."""
        if image.array.ndim != 3:
            raise OutOfScopeDimensionalityError(f"decoded to a {image.array.ndim - 1}D image, not a 2D radiograph")
        return preprocess_for_model(image.array, card).numpy()

    def predict(self, model: nn.Module, inputs: torch.Tensor, precision: str = "fp32") -> np.ndarray:
        """Per-label probabilities ``(B, n_labels)``: :func:`medres.inference.predict_batch`, as everywhere."""
        from medres.inference import predict_batch  # imported with the model, not by the decoder workers

        return predict_batch(model, inputs, precision)


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

