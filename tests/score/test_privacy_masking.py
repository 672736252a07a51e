"""PHI masking on values, never inside medres's own words: short patient names and IDs (``a``, ``pre``, ``CT``)."""

from __future__ import annotations

import re

import numpy as np

from medres.cli.main import main
from medres.errors import CorruptError, TruncatedError
from medres.score.privacy import identifying_values, redact, redacted_message
from medres.synthetic.dicom import projection_dataset, write_dicom
from tests.score.conftest import KEY, table_rows, write_synthetic_dicoms

SHORT_IDENTIFIERS = {"PatientName": "pre", "PatientID": "a", "AccessionNumber": "CT"}
MASK_INSIDE_A_WORD = re.compile(r"[^\W_]\[redacted\]|\[redacted\][^\W_]")


def short_identifier_dataset(uid_seed: str):
    return projection_dataset(np.zeros((8, 8), np.uint16), uid_seed=uid_seed, identifiers=SHORT_IDENTIFIERS)


def test_quoted_library_text_is_masked_as_whole_values_only():
    values = identifying_values(short_identifier_dataset("mask"))
    error = CorruptError("cannot decode a presentation state", quoted="bad value 'pre' for a PN element; CT-pre")
    message = redacted_message(error, values)
    assert message.startswith("cannot decode a presentation state (")
    assert message == "cannot decode a presentation state (bad value '[redacted]' for [redacted] PN element; " \
                      "[redacted]-[redacted])"
    assert redact("preprocessing a CTA of PRE", values) == "preprocessing [redacted] CTA of [redacted]"


def test_medres_own_words_are_never_searched():
    values = identifying_values(short_identifier_dataset("own"))
    assert redacted_message(TruncatedError("a CT presentation ends early"), values) == "a CT presentation ends early"


def test_score_tables_keep_fixed_text_intact_with_short_identifiers(tmp_path, tiny_checkpoint, synthetic_pngs):
    inputs = tmp_path / "in"
    write_synthetic_dicoms(inputs, synthetic_pngs, 3, identifiers=SHORT_IDENTIFIERS, special=True)
    no_pixels = short_identifier_dataset("no-pixels")
    del no_pixels.PixelData
    write_dicom(no_pixels, inputs / "report.dcm")
    whole = write_dicom(short_identifier_dataset("truncated"), tmp_path / "whole.dcm").read_bytes()
    (inputs / "truncated.dcm").write_bytes(whole[: len(whole) - 40])

    code = main(["score", str(inputs), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                 "--pseudonym-key", KEY, "--no-progress"])

    assert code in (0, 3)
    errors = {row["path"]: row for row in table_rows(tmp_path / "out", "errors")}
    assert {"report.dcm", "truncated.dcm"} <= set(errors)
    assert "presentation state" in errors["report.dcm"]["message"]
    for row in errors.values():
        assert not MASK_INSIDE_A_WORD.search(row["message"]), row
    for row in table_rows(tmp_path / "out", "scores"):
        assert "pre" not in row.values() and "CT" not in {row.get("patient_id"), row.get("accession_number")}
