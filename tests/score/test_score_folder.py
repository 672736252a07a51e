"""medres.score.folder: the output folder `medres score` writes, read back by its one reader."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from medres.cli.main import main
from medres.errors import DatasetLayoutError, InputMovedError
from medres.models import CXR14_LABELS, create_model, save_checkpoint
from medres.score.folder import (
    HEATMAP_FOLDER,
    RUN_FILE,
    heatmap_path,
    image_path,
    read_score_folder,
    require_input_root,
)
from tests.score.conftest import KEY, write_junk, write_synthetic_dicoms

POSITIVE_LABELS = CXR14_LABELS[::2]  # threshold 0: always called; the others 1.0: never


@pytest.fixture(scope="module")
def half_positive_checkpoint(tmp_path_factory) -> Path:
    """An untrained chexnet_tiny whose calls are fixed by its thresholds: every other label positive."""
    torch.manual_seed(0)
    thresholds = {label: 0.0 if label in POSITIVE_LABELS else 1.0 for label in CXR14_LABELS}
    model = create_model("chexnet_tiny", input_size=(64, 64), thresholds=thresholds)
    return save_checkpoint(model, tmp_path_factory.mktemp("checkpoint") / "half_positive.safetensors")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, half_positive_checkpoint: Path, synthetic_pngs: list[Path]) -> Path:
    """``input/`` (chest DICOMs, a PNG, junk) scored as CSV into ``out_csv/`` and as Parquet into ``out_parquet/``.

    Both runs start in ``elsewhere/`` and name the input through a relative path
    to a symbolic link (``link_to_input``), so the recorded root must be absolute
    and resolved.
    """
    base = tmp_path_factory.mktemp("scored")
    write_synthetic_dicoms(base / "input", synthetic_pngs, 5)
    shutil.copyfile(synthetic_pngs[0], base / "input" / "film.png")
    write_junk(base / "input" / "junk", next((base / "input").rglob("*.dcm")))
    (base / "link_to_input").symlink_to(base / "input", target_is_directory=True)
    (base / "elsewhere").mkdir()
    with contextlib.chdir(base / "elsewhere"):
        for table_format in ("csv", "parquet"):
            code = main(["score", "../link_to_input", "--checkpoint", str(half_positive_checkpoint),
                         "--out", f"../out_{table_format}", "--format", table_format, "--heatmaps",
                         "--pseudonym-key", KEY, "--no-progress"])
            assert code == 3, "the truncated DICOM fails, the rest is scored or skipped"
    return base


def test_run_json_records_the_resolved_input_root(scored: Path) -> None:
    run = json.loads((scored / "out_csv" / RUN_FILE).read_text())
    assert run["arguments"]["input_dir"] == "../link_to_input"
    assert run["input_root"] == str((scored / "input").resolve())
    assert read_score_folder(scored / "out_csv").input_root == (scored / "input").resolve()


def test_csv_and_parquet_read_back_identically(scored: Path) -> None:
    from_csv, from_parquet = read_score_folder(scored / "out_csv"), read_score_folder(scored / "out_parquet")
    pd.testing.assert_frame_equal(from_csv.table, from_parquet.table)
    pd.testing.assert_frame_equal(from_csv.errors, from_parquet.errors)
    assert from_csv.labels == from_parquet.labels == tuple(CXR14_LABELS)
    assert len(from_csv.table) == 4 and len(from_csv.errors) == 6 and "truncated" in set(from_csv.errors["reason"])
    assert from_csv.table["prob_Effusion"].dtype == "float64" and from_csv.table["call_Effusion"].dtype == "int64"
    reference = pd.read_parquet(scored / "out_parquet" / "scores.parquet")
    assert list(from_parquet.table["path"]) == list(reference["path"])


def test_every_row_leads_to_its_image_and_the_heatmaps_written(scored: Path) -> None:
    folder = read_score_folder(scored / "out_csv")
    expected = set()
    for _, row in folder.table.iterrows():
        assert image_path(folder, row) == scored / "input" / row["path"]
        assert image_path(folder, row).is_file()
        for label in CXR14_LABELS:
            found = heatmap_path(folder, row, label)
            assert (found is not None) == bool(row[f"call_{label}"]) == (label in POSITIVE_LABELS), label
            if found is not None:
                expected.add(found)
    written = set((scored / "out_csv" / HEATMAP_FOLDER).rglob("*.png"))
    assert expected and written == expected, "the reader finds exactly the heatmaps the writer wrote"


def test_a_moved_input_folder_is_reported_with_where_it_was(scored: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored / "out_csv", out)
    run = json.loads((out / RUN_FILE).read_text())
    run["input_root"] = str(tmp_path / "gone")
    (out / RUN_FILE).write_text(json.dumps(run))
    folder = read_score_folder(out)
    with pytest.raises(InputMovedError, match=f"recorded at {tmp_path / 'gone'}, which no longer exists: move it "
                                              "back there, or give its new place") as caught:
        image_path(folder, folder.table.iloc[0])
    assert caught.value.reason == "input_moved" and str(out / RUN_FILE) in str(caught.value)
    moved = read_score_folder(out, input_root=scored / "input")
    assert moved.recorded_input_root == tmp_path / "gone"
    assert require_input_root(moved) == (scored / "input").resolve()
    assert image_path(moved, moved.table.iloc[0]).is_file()
    with pytest.raises(InputMovedError, match="the new place given for the scored folder"):
        image_path(read_score_folder(out, input_root=tmp_path / "nowhere"), folder.table.iloc[0])
    del run["input_root"]
    (out / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(InputMovedError, match=r"only as '\.\./link_to_input', relative to where `medres score` ran"):
        require_input_root(read_score_folder(out), fix="tell me")


def test_folders_that_are_not_score_output_are_refused(scored: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="not an output folder of `medres score`"):
        read_score_folder(scored / "input")
    (tmp_path / "scores.csv").write_text("path,model\na.png,x\n")
    with pytest.raises(DatasetLayoutError, match="lacks columns sop_pseudonym"):
        read_score_folder(tmp_path)
    (tmp_path / "scores.csv").write_text("sop_pseudonym,path,prob_A,call_A\nab,a.png,not-a-number,1\n")
    with pytest.raises(DatasetLayoutError, match="cannot be read"):
        read_score_folder(tmp_path)
