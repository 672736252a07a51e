"""Typed errors with stable reason codes: every one medres raises, in one place.

Every failure a user can cause (a bad file, a wrong option, an unsafe
checkpoint) raises a subclass of :class:`MedresError`. The ``reason`` is a
short, stable code that batch jobs write to their error tables and tests match
on; the message names the file and says what to do about it. Each code is
declared once, here (``tests/test_errors.py`` holds the codes unique and every
raised error declared in this module), as pydicom keeps its errors in one
``errors.py``.
"""

from __future__ import annotations

from os import PathLike


class MedresError(Exception):
    """Base class of every error medres raises for bad input or usage.

    Args:
        message: What went wrong and how to fix it: medres's own words.
        path: The file or folder concerned, if any; prefixed to the message.
        quoted: Text from elsewhere that the message quotes (a decoder's or library's own error
            message), appended in parentheses. It is kept apart from medres's words because it may
            echo a file's header values: privacy redaction applies to it and never to ``detail``.
    """

    reason: str = "error"
    default_message: str = "medres could not complete the request"

    def __init__(self, message: str | None = None, *, path: str | PathLike[str] | None = None,
                 quoted: str | None = None):
        self.path = None if path is None else str(path)
        self.detail = message or self.default_message
        self.quoted = quoted or None
        text = self.detail if self.quoted is None else f"{self.detail} ({self.quoted})"
        super().__init__(text if self.path is None else f"{self.path}: {text}")

    def one_line(self) -> str:
        """The error as ``reason: message`` on one line, for tables and the CLI."""
        return f"{self.reason}: {' '.join(str(self).split())}"


def library_message(error: BaseException, limit: int = 300) -> str:
    """A library exception's message on one line, at most ``limit`` characters (its type if empty)."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


# --- Inputs and usage: what the command line or the API was given -------------------------------


class NotFoundError(MedresError):
    reason = "not_found"
    default_message = "no such file or folder"


class UsageError(MedresError):
    reason = "usage"
    default_message = "invalid arguments"


class EmptyInputError(MedresError):
    reason = "empty_input"
    default_message = "the input holds no file to work on"


class InputMovedError(MedresError):
    reason = "input_moved"
    default_message = (
        "the folder that was scored is no longer where the run recorded it; "
        "move it back or pass its new place"
    )


class UnsafePathError(MedresError):
    reason = "unsafe_path"
    default_message = "the path leaves the configured root folder; only files under the root are opened"


# --- Reading images (medres.io) -----------------------------------------------------------------


class NotDicomError(MedresError):
    reason = "not_dicom"
    default_message = (
        "not a DICOM file (no 'DICM' marker, no DICOM header), nor a NIfTI, PNG or JPEG image"
    )


class NoPixelDataError(MedresError):
    reason = "no_pixel_data"
    default_message = "the DICOM file holds no pixel data (e.g. a report, plan or DICOMDIR)"


class TruncatedError(MedresError):
    reason = "truncated"
    default_message = "the file ends before its declared content; re-copy or re-export it"


class CorruptError(MedresError):
    reason = "corrupt"
    default_message = "the file's content cannot be decoded"


class UnsupportedTransferSyntaxError(MedresError):
    reason = "unsupported_transfer_syntax"
    default_message = "no installed decoder handles this transfer syntax"


class UnsupportedPhotometricError(MedresError):
    reason = "unsupported_photometric"
    default_message = "this Photometric Interpretation is not supported"


class TooLargeError(MedresError):
    reason = "too_large"
    default_message = "the image is larger than the size budget; raise size_budget if intended"


class MixedSeriesError(MedresError):
    reason = "mixed_series"
    default_message = "the folder holds more than one series; point at a folder with one"


class NonUniformSpacingError(MedresError):
    reason = "non_uniform_spacing"
    default_message = "slice spacing is not uniform (a missing or duplicated slice?)"


class InconsistentGeometryError(MedresError):
    reason = "inconsistent_geometry"
    default_message = "slice geometry is inconsistent (orientation, size or a sheared stack)"


class GeometryMismatchError(MedresError):
    reason = "geometry_mismatch"
    default_message = "an image and its label (or prediction) do not share one voxel grid; resample one onto the other"


class LabelGeometryError(GeometryMismatchError):
    """A label volume opened in the review app that is not on the open image's grid (``geometry_mismatch``)."""

    default_message = "the label volume is not on the image's voxel grid; resample it onto the image first"


# --- Models and checkpoints (medres.models) -----------------------------------------------------


class UnsafeCheckpointError(MedresError):
    reason = "unsafe_checkpoint"
    default_message = "only .safetensors checkpoints are loaded; pickles are never unpickled"


class NotSafetensorsError(MedresError):
    reason = "not_safetensors"
    default_message = "not a .safetensors checkpoint (no safetensors header); give the file `medres train` wrote"


class UnknownModelError(MedresError):
    reason = "unknown_model"
    default_message = "no model is registered under this name; see medres.models.list_models()"


class CheckpointMismatchError(MedresError):
    reason = "checkpoint_mismatch"
    default_message = "the checkpoint's tensors do not match the model's parameters"


class InvalidModelCardError(MedresError):
    reason = "invalid_model_card"
    default_message = "the model card is missing or malformed"


class PretrainedWeightsMissingError(MedresError):
    reason = "pretrained_weights_missing"
    default_message = (
        "the published weights file is not in the torch hub cache and could not be downloaded; "
        "download it on a machine that is online and put it in the cache"
    )


# --- The scope gate (medres.models.scope): images a model was not trained on --------------------


class OutOfScopeError(MedresError):
    """Base of the reasons an image is outside what a model was trained on (the scope gate)."""

    reason = "out_of_scope"
    default_message = "the model does not apply to this image"


class OutOfScopeModalityError(OutOfScopeError):
    reason = "out_of_scope_modality"
    default_message = "not a projection radiograph (CR/DX, PNG or JPEG); the chest X-ray model does not apply"


class OutOfScopeBodyPartError(OutOfScopeError):
    reason = "out_of_scope_body_part"
    default_message = "BodyPartExamined is not CHEST; the chest X-ray model does not apply"


class OutOfScopeViewError(OutOfScopeError):
    reason = "out_of_scope_view"
    default_message = "ViewPosition is not a frontal view (PA/AP); the model was trained on frontal films"


class OutOfScopeDimensionalityError(OutOfScopeError):
    reason = "out_of_scope_dimensionality"
    default_message = "not a single 2D image (a volume or a multi-frame object); the chest X-ray model does not apply"


# --- Data sets (medres.data) ----------------------------------------------------------------------


class DatasetLayoutError(MedresError):
    reason = "dataset_layout"
    default_message = "the folder is not laid out as the data set's publisher distributes it"


class UnknownLabelError(MedresError):
    reason = "unknown_label"
    default_message = "a finding label is not one of the data set's labels"


class PatientLeakageError(MedresError):
    reason = "patient_leakage"
    default_message = "a patient appears in more than one split, so evaluation would be optimistic"


# --- Training (medres.train) ----------------------------------------------------------------------


class NonFiniteLossError(MedresError):
    reason = "non_finite_loss"
    default_message = "the training loss became NaN or infinite; lower the learning rate or check the data"


# --- Batch scoring (medres.score): what can happen to one file of the input folder ----------------


class NotApplicableError(MedresError):
    """Base of the reasons a readable file is not given to the model (outcome ``skipped``)."""

    reason = "not_applicable"
    default_message = "the model does not apply to this file"


class OutsideRootError(NotApplicableError):
    reason = "outside_root"
    default_message = "a symbolic link that leads outside the input folder; it is not followed"


class LinkedFolderError(NotApplicableError):
    reason = "linked_folder"
    default_message = "a symbolic link to a folder inside the input folder; its files are scored under their own path"


class NotRegularFileError(NotApplicableError):
    reason = "not_a_file"
    default_message = "not a regular file (a device, pipe or socket); it is not opened"


class WorkerCrashedError(MedresError):
    reason = "worker_crashed"
    default_message = (
        "decoding this file crashed its worker process (a decoder bug or a malicious file); "
        "the other files were not affected"
    )


class ChangedDuringRunError(MedresError):
    reason = "changed_during_run"
    default_message = "the file changed (size or modification time) while the run was in progress; run again"


class UnreadableFolderError(MedresError):
    reason = "unreadable"
    default_message = "the folder cannot be listed (permissions?); its files were not seen"


class InternalError(MedresError):
    reason = "internal_error"
    default_message = "an unexpected error while processing this file; please report it"


# --- The review app (medres.app) ------------------------------------------------------------------


class SegmentationUnavailableError(MedresError):
    reason = "segmentation_unavailable"
    default_message = (
        "segmentation support is not installed yet (no medres.segment); "
        "open a label NIfTI in the image's geometry instead"
    )
