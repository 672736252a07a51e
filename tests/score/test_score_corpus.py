"""`medres score` on a folder mixing every real DICOM test file, synthetic X-rays, PNGs and junk."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from medres.cli.main import main
from medres.score.discover import walk_folder
from tests.conftest import dicom_test_file, pydicom_data_dir, pydicom_test_files_dir
from tests.score.conftest import table_rows, write_junk, write_synthetic_dicoms


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, synthetic_pngs):
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(pydicom_test_files_dir(), root / "pydicom", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(pydicom_data_dir(), root / "pydicom-data", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    synthetic = write_synthetic_dicoms(root / "synthetic", synthetic_pngs, 10)
    (root / "png").mkdir()
    for png in synthetic_pngs[:3]:
        shutil.copy(png, root / "png" / png.name)
    write_junk(root / "junk", synthetic[2])
    outside = tmp_path_factory.mktemp("outside") / "secret.dcm"
    shutil.copy(dicom_test_file("CT_small.dcm"), outside)
    os.symlink(outside, root / "junk" / "link_out.dcm")
    os.mkfifo(root / "junk" / "a_pipe")
    return root


def test_every_file_is_accounted_for_without_traceback(mixed_folder, tiny_checkpoint, tmp_path, capfd):
    out = tmp_path / "out"
    code = main(["score", str(mixed_folder), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                 "--workers", "2", "--no-progress"])
    captured = capfd.readouterr()
    assert code == 3, captured.err
    assert "Traceback" not in captured.out + captured.err
    found = [entry.relative for entry in walk_folder(mixed_folder)]
    scores, errors = table_rows(out, "scores"), table_rows(out, "errors")
    assert sorted(row["path"] for row in scores + errors) == sorted(found)
    assert len(scores) + len(errors) == len(found) > 250
    reasons = {row["path"]: row["reason"] for row in errors}
    expected = {
        "junk/empty.dcm": "not_dicom", "junk/notes.txt": "not_dicom", "junk/archive.zip": "not_dicom",
        "junk/truncated.dcm": "truncated", "junk/link_out.dcm": "outside_root", "junk/a_pipe": "not_a_file",
        "synthetic/series0/image000.dcm": "out_of_scope_view",
        "synthetic/series1/image001.dcm": "out_of_scope_body_part",
        "pydicom/CT_small.dcm": "out_of_scope_modality", "pydicom/MR_small.dcm": "out_of_scope_modality",
        "pydicom/JPEG-lossy.dcm": "out_of_scope_modality",  # NM: not a segmentation case either
        "pydicom-data/RG3_UNCR.dcm": "out_of_scope_body_part",
    }
    assert {path: reasons.get(path) for path in expected} == expected
    scored_paths = {row["path"] for row in scores}
    assert {"pydicom-data/RG1_UNCR.dcm", "pydicom-data/RG1_J2KR.dcm", "png/" + "00000001_000.png"} <= scored_paths
    assert sum(path.startswith("synthetic/") for path in scored_paths) == 8
    assert all(row["outcome"] in ("skipped", "failed") and row["reason"] and row["message"] for row in errors)
    assert all(row["outcome"] == "skipped" for row in errors if row["reason"].startswith("out_of_scope"))
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["files_found"] == len(found) and run["exit_code"] == 3
    assert run["counts"]["failed"] == sum(row["outcome"] == "failed" for row in errors) > 0
