"""The app's logic without Streamlit: paths, uploads, pixels, worklist, header masking, config, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medres.app import files, header, state, views, volume, worklist
from medres.cli import app as app_cli
from medres.cli.main import build_parser
from medres.errors import DatasetLayoutError, NotDicomError, NotFoundError, TooLargeError, UsageError
from medres.io import read_image
from medres.models import CXR14_LABELS
from tests.app.conftest import REPO

SAMPLES = REPO / "sample_data"


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd", "C:/Windows", "..\\x"])
def test_resolve_under_root_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(files.UnsafePathError, match="absolute|'\\.\\.'"):
        files.resolve_under_root(tmp_path, relative)


def test_resolve_under_root_refuses_links_out_and_accepts_links_within(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "a.png").write_bytes(b"x")
    (root / "real.png").write_bytes(b"x")
    (root / "out.png").symlink_to(outside / "a.png")
    (root / "in.png").symlink_to(root / "real.png")
    with pytest.raises(files.UnsafePathError, match="outside the root") as caught:
        files.resolve_under_root(root, "out.png")
    assert caught.value.reason == "unsafe_path"
    assert files.resolve_under_root(root, "in.png") == (root / "real.png").resolve()
    assert files.resolve_under_root(root, "") == root.resolve()


def test_odd_paths_give_a_message_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(files.UnsafePathError, match="NUL"):
        files.resolve_case_path(tmp_path, "x\x00y")
    with pytest.raises(files.UnsafePathError, match="cannot be resolved"):
        files.resolve_case_path(tmp_path, "a")
    with pytest.raises(NotFoundError):
        files.resolve_case_path(tmp_path, "x" * 5000)


def test_list_folder_shows_viewable_files_and_folders_only(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes((SAMPLES / "chest.png").read_bytes())
    (tmp_path / "film").write_bytes((SAMPLES / "chest.png").read_bytes())  # no extension: found by content
    names = [entry.name for entry in files.list_folder(tmp_path)]
    assert names == ["series", "film"]
    assert files.parent_of("a/b") == "a" and files.parent_of("a") == ""


def test_save_upload_checks_content_size_and_name(tmp_path: Path) -> None:
    png = (SAMPLES / "chest.png").read_bytes()
    saved = files.save_upload(tmp_path, "../../evil/../film.png", png)
    assert saved.parent == tmp_path and saved.name == "film.png"
    with pytest.raises(NotDicomError, match="checked by content"):
        files.save_upload(tmp_path, "x.png", b"hello")
    with pytest.raises(TooLargeError, match="limit"):
        files.save_upload(tmp_path, "x.png", png, limit_bytes=100)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["film.png"]


def test_save_uploads_makes_a_series_folder_only_of_dicom(tmp_path: Path) -> None:
    series = [(path.name, path.read_bytes()) for path in sorted((SAMPLES / "ct_series").iterdir())]
    folder = files.save_uploads(tmp_path, series)
    assert read_image(folder).is_volume
    with pytest.raises(NotDicomError, match="one DICOM series"):
        files.save_uploads(tmp_path, [series[0], ("chest.png", (SAMPLES / "chest.png").read_bytes())])


def test_window_and_overlays() -> None:
    assert list(views.apply_window(np.array([-10.0, 0.0, 5.0, 10.0, 20.0]), 5.0, 10.0)) == [0, 0, 128, 255, 255]
    gray = np.full((4, 4), 100, np.uint8)
    heat = np.zeros((4, 4))
    assert (views.heatmap_overlay(gray, heat, 1.0)[..., 0] == 100).all(), "zero evidence leaves the image as is"
    heat[0, 0] = 1.0
    assert tuple(views.heatmap_overlay(gray, heat, 1.0)[0, 0]) != (100, 100, 100)
    assert views.to_png(views.heatmap_only(heat)).startswith(b"\x89PNG")
    assert views.fit_for_display(np.zeros((4000, 2000), np.uint8), 1000).shape == (1000, 500)


def test_volume_slices_are_shown_the_radiological_way() -> None:
    volume_array = np.zeros((5, 6, 7))  # RAS+: x to the patient's right... index 4 is most right
    volume_array[4, 5, 6] = 1.0  # right, anterior, superior corner
    axial = views.volume_slice(volume_array, "axial", 6)
    assert axial.shape == (6, 5) and axial[0, 0] == 1.0, "patient's right on the viewer's left, anterior up"
    coronal = views.volume_slice(volume_array, "coronal", 5)
    assert coronal.shape == (7, 5) and coronal[0, 0] == 1.0, "superior up"
    sagittal = views.volume_slice(volume_array, "sagittal", 4)
    assert sagittal.shape == (7, 6) and sagittal[0, 0] == 1.0
    assert views.slice_spacing((0.5, 0.7, 2.5), "axial") == (0.7, 0.5)
    assert views.physical_aspect(np.zeros((10, 10), np.uint8), 2.0, 1.0).shape == (20, 10)


def test_ct_presets_and_probability_table() -> None:
    assert views.CT_PRESETS["Lung (-600/1500)"] == (-600.0, 1500.0)
    assert views.CT_PRESETS["Brain (40/80)"] == (40.0, 80.0)
    table = views.probability_table({"A": 0.2, "B": 0.9, "C": 0.4}, {"A": 0.1, "B": 0.95, "C": 0.5})
    assert list(table["label"]) == ["B", "C", "A"]
    assert list(table["call"]) == ["negative", "negative", "positive"]
    assert views.probability_chart(table).to_dict()["layer"]


def test_label_volumes_in_millilitres_and_grid_check() -> None:
    labels = np.zeros((10, 10, 10), np.int32)
    labels[:5, :4, :2] = 1  # 40 voxels
    labels[9, 9, 9] = 3
    table = volume.label_volumes(labels, np.diag([2.0, 2.0, 2.5, 1.0]), {1: "liver"})
    assert list(table["name"]) == ["liver", "label 3"]
    assert list(table["volume_ml"]) == [0.4, 0.01]
    assert volume.label_names([0, 1, 5], ["background", "tumour"]) == {0: "background", 1: "tumour", 5: "label 5"}
    image = read_image(SAMPLES / "volume_oblique.nii.gz")
    with pytest.raises(volume.LabelGeometryError, match="shape"):
        volume.check_same_grid(image, read_image(SAMPLES / "ct_series"))


def test_worklist_reads_real_score_output_and_finds_its_files(app_root: Path) -> None:
    scored = app_root / "scored"
    scores, errors = pd.read_csv(scored / "scores.csv"), pd.read_csv(scored / "errors.csv")
    loaded = worklist.load_worklist(scored)
    assert loaded.labels == tuple(CXR14_LABELS) and len(loaded.table) == len(scores) == 2
    assert len(loaded.errors) == len(errors) > 0
    by_effusion = scores.sort_values("prob_Effusion", ascending=False, kind="stable")
    assert list(worklist.filter_worklist(loaded, "Effusion")["path"]) == list(by_effusion["path"])
    ascending = worklist.filter_worklist(loaded, "Effusion", descending=False)
    assert list(ascending["path"]) == list(by_effusion["path"])[::-1]
    highest = float(scores["prob_Effusion"].max())
    assert list(worklist.filter_worklist(loaded, "Effusion", highest, 1.0)["path"]) == [by_effusion["path"].iloc[0]]
    assert len(worklist.filter_worklist(loaded, "Effusion", positives_only=True)) == 2, "thresholds 0: all positive"
    for _, row in loaded.table.iterrows():
        assert worklist.image_path(loaded, row, app_root) == (app_root / "samples" / row["path"]).resolve()
        heatmap = worklist.heatmap_path(loaded, row, "Effusion", app_root)
        assert heatmap == (scored / "heatmaps" / row["sop_pseudonym"] / "Effusion.png").resolve()
    with pytest.raises(DatasetLayoutError, match="scores"):
        worklist.load_worklist(app_root / "samples")


@pytest.mark.parametrize("crafted", ["../../etc/passwd", "/etc/passwd", "link_out.png"])
def test_worklist_rows_cannot_point_outside_the_root(app_root: Path, tmp_path: Path, crafted: str) -> None:
    (tmp_path / "secret.png").write_bytes((SAMPLES / "chest.png").read_bytes())
    (app_root / "samples" / "link_out.png").symlink_to(tmp_path / "secret.png")
    scores = pd.read_csv(app_root / "scored" / "scores.csv", dtype=str)
    scores.loc[0, "path"] = crafted
    scores.to_csv(app_root / "scored" / "scores.csv", index=False)
    loaded = worklist.load_worklist(app_root / "scored")
    with pytest.raises(files.UnsafePathError):
        worklist.image_path(loaded, loaded.table.iloc[0], app_root)


def test_worklist_says_when_a_scored_image_is_gone(app_root: Path) -> None:
    loaded = worklist.load_worklist(app_root / "scored")
    row = loaded.table.iloc[0]
    (app_root / "samples" / row["path"]).unlink()
    with pytest.raises(NotFoundError, match="no longer in the scored folder"):
        worklist.image_path(loaded, row, app_root)


def test_worklist_refuses_a_scored_folder_or_heatmap_outside_the_root(app_root: Path) -> None:
    loaded = worklist.load_worklist(app_root / "scored")
    with pytest.raises(files.UnsafePathError, match="outside the app's root") as caught:
        worklist.image_path(loaded, loaded.table.iloc[0], app_root / "scored")
    assert caught.value.reason == "unsafe_path"
    row = loaded.table.iloc[0].copy()
    row["sop_pseudonym"] = "../../samples"
    assert worklist.heatmap_path(loaded, row, "Effusion", app_root) is None


def dataset_with_phi() -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    dataset.PatientName, dataset.PatientID, dataset.PatientBirthDate = "Doe^Jane", "MRN123", "19700101"
    dataset.AccessionNumber, dataset.InstitutionName = "ACC9", "General Hospital"
    dataset.ReferringPhysicianName, dataset.StudyDate = "House^Greg", "20240102"
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.Modality, dataset.Rows, dataset.KVP = "CR", 512, 120
    dataset.StudyDescription = "Chest for Jane Doe"
    dataset.add_new(0x00091001, "LO", "private note")
    return dataset


def test_header_masks_identifying_fields_and_shows_technical_ones(tmp_path: Path) -> None:
    path = tmp_path / "phi.dcm"
    dataset_with_phi().save_as(path, enforce_file_format=True)
    table = header.header_table(path)
    values = dict(zip(table["keyword"], table["value"]))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "StudyDate", "SOPInstanceUID", "StudyDescription", "private"):
        assert values[keyword] == header.MASK, keyword
    assert values["Modality"] == "CR" and values["Rows"] == "512" and values["KVP"] in ("120", "120.0")
    assert "Jane" not in table.to_string() and "MRN123" not in table.to_string()
    assert header.header_table(SAMPLES / "chest.png").empty


def test_config_from_command_line_or_environment(tmp_path: Path) -> None:
    argv = ["apps/review.py", "--root", str(tmp_path), "--checkpoint", "m.safetensors"]
    config = state.load_config(argv, {})
    assert config.root == tmp_path and config.checkpoint == Path("m.safetensors") and config.seg_checkpoint is None
    from_environment = state.load_config(["pytest", "--root", "ignored"], {
        state.ENV_ROOT: str(tmp_path), state.ENV_SEG_CHECKPOINT: "s.safetensors", state.ENV_UPLOAD_LIMIT: "5"})
    assert from_environment.root == tmp_path and from_environment.checkpoint is None
    assert from_environment.seg_checkpoint == Path("s.safetensors") and from_environment.upload_limit_bytes == 5 << 20


def test_cli_builds_the_streamlit_command(tmp_path: Path) -> None:
    checkpoint = tmp_path / "m.safetensors"
    args = build_parser().parse_args(["app", "--root", str(tmp_path), "--checkpoint", str(checkpoint),
                                      "--seg-checkpoint", str(checkpoint), "--port", "8600"])
    command = app_cli.streamlit_command(args)
    assert command[1:4] == ["-m", "streamlit", "run"] and Path(command[4]) == REPO / "medres" / "app" / "review.py"
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--") + 1:command.index("--") + 3] == ["--root", str(tmp_path.resolve())]
    assert "--seg-checkpoint" in command


def test_cli_refuses_a_missing_root_or_checkpoint(tmp_path: Path) -> None:
    from medres.cli.main import main

    assert main(["app", "--root", str(tmp_path / "nope"), "--checkpoint", str(tmp_path / "m.safetensors")]) == 2
    assert main(["app", "--root", str(tmp_path), "--checkpoint", str(tmp_path / "m.safetensors")]) == 2


def test_upload_folders_are_private_and_removed_with_the_session() -> None:
    import gc

    session: dict = {}
    first = state.upload_folder(session)
    assert oct(first.stat().st_mode & 0o777) == "0o700"
    second = state.replace_upload_folder(session)
    assert not first.exists() and second.is_dir()
    del session
    gc.collect()
    assert not second.exists()


def test_scores_and_map_for_a_radiograph(tiny_checkpoint: Path) -> None:
    import json

    from medres.app import analysis

    loaded = analysis.load_model(tiny_checkpoint)
    image = read_image(SAMPLES / "cr_chest_monochrome1.dcm")  # 384 x 320, not square
    scores = analysis.score_xray(loaded, image)
    heat = analysis.explain_xray(loaded, image, "Effusion", "gradcam++")
    assert heat.shape == image.spatial_shape
    assert heat.max() <= scores.probabilities["Effusion"] + 1e-5, "peak brightness is at most the probability"
    assert analysis.explain_xray(loaded, image, "Effusion", shape=(96, 80)).shape == (96, 80)
    payload = json.loads(analysis.scores_json(scores, loaded, "samples/cr.dcm"))
    assert payload["notice"] == analysis.RESEARCH_NOTICE and payload["checkpoint_sha256"] == loaded.sha256
    assert set(payload["calls"]) == set(payload["probabilities"]) == set(payload["thresholds"])
    with pytest.raises(UsageError, match="'cxr' checkpoint"):
        analysis.load_model(tiny_checkpoint, task="seg")
