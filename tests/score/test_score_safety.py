"""Safety of `medres score`: no identifiers in outputs, pickles refused, usage errors, exit codes."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataelem import DataElement

from medres.cli.main import main
from medres.synthetic.dicom import projection_dataset, write_dicom
from tests.score.conftest import (
    IDENTIFIERS,
    KEY,
    all_output_bytes,
    table_rows,
    write_junk,
    write_synthetic_dicoms,
)


@pytest.fixture(scope="module")
def identified_folder(tmp_path_factory, synthetic_pngs) -> Path:
    """Radiographs carrying planted identifiers, one with a birth date pydicom warns about, plus junk."""
    root = tmp_path_factory.mktemp("identified")
    paths = write_synthetic_dicoms(root / "patient", synthetic_pngs, 6, identifiers=IDENTIFIERS)
    odd = projection_dataset(np.full((64, 64), 1000, np.uint16), uid_seed="odd", identifiers=IDENTIFIERS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (quoting it) about the invalid date we plant
        odd.add(DataElement(0x00100030, "DA", f"1945/03/17-{IDENTIFIERS['PatientName'].split('^')[0]}"))
        write_dicom(odd, root / "patient" / "odd_birth_date.dcm")
    write_junk(root / "junk", paths[3])
    return root


def planted_values() -> list[str]:
    values = list(IDENTIFIERS.values())
    return values + [part for value in values for part in value.split("^") if len(part) > 3] + ["1945/03/17"]


def test_identifiers_appear_nowhere(identified_folder, tiny_checkpoint, tmp_path, capfd):
    out = tmp_path / "out"
    code = main(["score", str(identified_folder), "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    captured = capfd.readouterr()
    assert code == 3  # the truncated radiograph failed
    assert {row["path"] for row in table_rows(out, "scores")} >= {"patient/odd_birth_date.dcm"}
    haystack = all_output_bytes(out) + captured.out.encode() + captured.err.encode()
    for value in planted_values():
        assert value.encode() not in haystack, value
    assert (out / ".pseudonym_key").stat().st_mode & 0o777 == 0o600


def test_keep_identifiers_adds_them(identified_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    main(["score", str(identified_folder), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
          "--keep-identifiers", "--no-progress"])
    rows = table_rows(out, "scores")
    assert rows and all(row["patient_id"] == IDENTIFIERS["PatientID"] for row in rows)
    assert all(row["accession_number"] == IDENTIFIERS["AccessionNumber"] for row in rows)


class _WritesMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
def test_pickle_checkpoint_is_refused_before_it_runs(tmp_path, capfd, name):
    import torch

    marker = tmp_path / "unpickled_marker"
    checkpoint = tmp_path / name
    if name.endswith(".pt"):
        torch.save({"payload": _WritesMarker(marker)}, checkpoint)  # torch's zip around a pickle
    else:
        checkpoint.write_bytes(pickle.dumps(_WritesMarker(marker), protocol=2))
    (tmp_path / "in").mkdir()
    code = main(["score", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")])
    error = capfd.readouterr().err
    assert code == 2 and "unsafe_checkpoint" in error and "Traceback" not in error
    assert not marker.exists()


@pytest.mark.parametrize(("problem", "reason"), [("missing_input", "not_found"), ("bad_batch", "usage"),
                                                   ("input_is_file", "usage")])
def test_usage_errors_exit_2_with_one_line(tmp_path, tiny_checkpoint, capfd, problem, reason):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "image.png").write_bytes(b"not scored: the options are refused first")
    (tmp_path / "file").write_text("x")
    arguments = {"missing_input": [str(tmp_path / "nope")], "bad_batch": [str(tmp_path / "in"), "--batch-size", "0"],
                 "input_is_file": [str(tmp_path / "file")]}[problem]
    code = main(["score", *arguments, "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out")])
    error = capfd.readouterr().err
    assert code == 2 and error.startswith(f"medres: error: {reason}:") and error.count("\n") == 1


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["score", "--help"])
    text = capsys.readouterr().out
    assert caught.value.code == 0
    assert "exit codes" in text and "3  the run completed but some files failed" in text


def test_parquet_tables_and_clean_exit(tmp_path, tiny_checkpoint, synthetic_pngs):
    import pandas

    write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 5)
    code = main(["score", str(tmp_path / "in"), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                 "--format", "parquet", "--pseudonym-key", KEY, "--no-progress"])
    scores = pandas.read_parquet(tmp_path / "out" / "scores.parquet")
    errors = pandas.read_parquet(tmp_path / "out" / "errors.parquet")
    assert code == 0  # only skips (a lateral, a hand): nothing failed
    assert len(scores) == 3 and sorted(errors["reason"]) == ["out_of_scope_body_part", "out_of_scope_view"]
    assert scores["prob_Effusion"].between(0, 1).all() and set(scores["call_Effusion"]) <= {0, 1}
    assert list(scores["path"]) == sorted(scores["path"])


def test_heatmaps_for_positive_calls(tmp_path, tiny_checkpoint, synthetic_pngs):
    pytest.importorskip("medres.explain")
    write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 3, special=False)
    main(["score", str(tmp_path / "in"), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
          "--heatmaps", "--no-progress"])
    rows = table_rows(tmp_path / "out", "scores")
    expected = {f"{row['sop_pseudonym']}/{column[5:]}.png" for row in rows for column in row
                if column.startswith("call_") and row[column] == "1"}
    written = {str(path.relative_to(tmp_path / "out" / "heatmaps")) for path in
               (tmp_path / "out" / "heatmaps").rglob("*.png")}
    assert expected and written == expected


def test_messages_are_redacted_with_the_files_own_identifiers():
    from medres.score.privacy import identifying_values, pseudonym, redact

    dataset = projection_dataset(np.zeros((4, 4), np.uint16), uid_seed="r", identifiers=IDENTIFIERS)
    message = f"cannot decode value {IDENTIFIERS['PatientID']} near Zyxwvut for Quentinius"
    cleaned = redact(message, identifying_values(dataset))
    assert cleaned == "cannot decode value [redacted] near [redacted] for [redacted]"
    assert pseudonym(b"k", "1.2.3") == pseudonym(b"k", "1.2.3") != pseudonym(b"other", "1.2.3")
    assert len(pseudonym(b"k", "1.2.3")) == 16 and pseudonym(b"k", "") == ""
