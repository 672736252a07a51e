"""What can happen to one input file: its outcome, from the reason code of the error it met.

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

Outcome = Literal["scored", "skipped", "failed"]
OUTCOMES: tuple[str, ...] = ("scored", "skipped", "failed")


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
