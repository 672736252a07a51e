"""What can happen to one input file, as typed errors with stable reason codes.

Every file found under the input folder ends as exactly one of three outcomes:

- ``scored``: a row in the scores table;
- ``skipped``: the file is fine but the model does not apply to it (a lateral
  view, a CT slice: the scope gate's ``out_of_scope_*`` reasons; a report, a
  text file ...), or it was deliberately not read (a link leaving the input folder);
- ``failed``: the file should have been scored but could not be (truncated,
  corrupt, an unsupported encoding, a decoder that crashed its process).

Skips and failures are both rows of the errors table (with their outcome), so
the two tables together account for every file. Only failures make the run's
exit code non-zero, because a folder full of lateral views and reports is
normal, while a truncated radiograph needs a person to look at it.
"""

from __future__ import annotations

from typing import Literal

from medres.errors import MedresError

Outcome = Literal["scored", "skipped", "failed"]
OUTCOMES: tuple[str, ...] = ("scored", "skipped", "failed")


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


# Reasons that mean "the file is fine, the model just does not apply" (the scope gate's
# out_of_scope_* reasons, see medres.models.scope), plus files that are not images at all:
# a folder of DICOMs routinely holds README files, DICOMDIRs and reports.
SKIPPED_REASONS = frozenset({
    "not_applicable", "outside_root", "linked_folder", "not_a_file", "no_pixel_data", "not_dicom",
    "out_of_scope", "out_of_scope_modality", "out_of_scope_body_part", "out_of_scope_view",
    "out_of_scope_dimensionality",
})


def outcome_of(reason: str) -> Outcome:
    """``skipped`` for reasons in :data:`SKIPPED_REASONS`, ``failed`` for the rest."""
    return "skipped" if reason in SKIPPED_REASONS else "failed"
