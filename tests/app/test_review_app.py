"""The review app through streamlit's AppTest: every view, widget changes, refusals."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medres.app import views
from medres.models import create_model, save_checkpoint
from tests.app.conftest import messages, open_by_browsing, open_worklist
from tests.conftest import dicom_test_file

NOTICE = "Research use only, not for diagnosis."


def test_notice_model_card_and_browse_list(make_app) -> None:
    app = make_app().run()
    assert not app.exception
    assert sum(NOTICE in text for text in messages(app)) == 1, "the research notice is shown once"
    assert app.json, "the model card is shown"
    assert app.selectbox(key="browse_choice").options == ["samples/", "scored/"]


def test_xray_view_scores_explains_and_reacts_to_widgets(make_app) -> None:
    app = open_by_browsing(make_app(), "samples/chest.png")
    assert not app.exception and not app.error
    classes = app.selectbox(key="cam_class")
    assert len(classes.options) == 14
    assert len(app.image) == 1
    classes.set_value("Nodule").run()
    assert "Nodule" in app.image[0].proto.imgs[0].caption
    app.slider(key="cam_opacity").set_value(0.9)
    app.selectbox(key="cam_colormap").set_value("inferno")
    app.radio(key="cam_method").set_value("gradcam++")
    app.checkbox(key="cam_side_by_side").check().run()
    assert not app.exception
    assert len(app.image) == 2, "side-by-side shows the image and the overlay"
    app.selectbox(key="xray_preset").set_value("Manual").run()
    app.slider(key="xray_width").set_value(50.0).run()
    assert not app.exception
    downloads = {button.proto.label for button in app.get("download_button")}
    assert downloads == {"Download scores (JSON)", "Download overlay (PNG)"}


def test_probabilities_are_shown_as_numbers_with_the_threshold_explained(make_app) -> None:
    app = open_by_browsing(make_app(), "samples/chest.png")
    scores = app.session_state["computed"][("scores",)]
    spec = json.loads(app.get("vega_lite_chart")[0].proto.spec)
    marks = {layer["mark"]["type"]: layer["encoding"] for layer in spec["layer"]}
    assert marks["text"]["text"] == {"field": "probability", "format": ".2f", "type": "quantitative"}
    assert marks["tick"]["x"]["field"] == "threshold"
    caption = next(caption.value for caption in app.caption if "black tick" in caption.value)
    assert "decision threshold" in caption and "default 0.5" in caption, "untrained card: default thresholds"
    positives = [label for label, value in scores.probabilities.items() if value >= scores.thresholds[label]]
    calls = next(markdown.value for markdown in app.markdown if markdown.value.startswith("Positive calls"))
    for label in positives:
        assert f"{views.finding_name(label)} {scores.probabilities[label]:.2f}" in calls
    options = app.selectbox(key="cam_class").options
    assert "Pleural Thickening" in options and "Pneumothorax" in options, "full names, as a reader writes them"


@pytest.mark.parametrize(("make_file", "reason"), [
    (lambda folder: shutil.copy(dicom_test_file("CT_small.dcm"), folder / "ct_slice.dcm"), "out_of_scope_modality"),
    (lambda folder: shutil.copy(dicom_test_file("JPEG2000.dcm"), folder / "nm.dcm"), "out_of_scope_modality"),
    (lambda folder: lateral_copy(folder / "lateral.dcm"), "out_of_scope_view"),
])
def test_an_out_of_scope_image_shows_its_reason_and_no_scores(make_app, app_root: Path, make_file,
                                                              reason: str) -> None:
    target = Path(make_file(app_root / "samples"))
    app = open_by_browsing(make_app(), f"samples/{target.name}")
    assert not app.exception
    errors = [element.value for element in app.error]
    assert len(errors) == 1 and f"{reason}:" in errors[0]
    if target.name == "ct_slice.dcm":
        assert "segment CT/MR volumes with `medres segment`" in errors[0]
    assert "needs_segmentation_model" not in errors[0]
    assert not app.get("vega_lite_chart"), "no probabilities"
    assert not [box for box in app.selectbox if box.key == "cam_class"], "no Grad-CAM controls"
    assert len(app.image) == 1 and "Grad-CAM" not in app.image[0].proto.imgs[0].caption
    assert ("scores",) not in app.session_state["computed"]
    assert not app.get("download_button")


def lateral_copy(target: Path) -> Path:
    """The committed CR sample with ViewPosition LL: a real film whose header says lateral."""
    dataset = pydicom.dcmread(Path(__file__).resolve().parents[2] / "sample_data" / "cr_chest_monochrome1.dcm")
    dataset.ViewPosition = "LL"
    dataset.save_as(target)
    return target


def test_scores_are_cached_per_session_and_reset_per_case(make_app) -> None:
    app = open_by_browsing(make_app(), "samples/chest.png")
    scores = app.session_state["computed"][("scores",)]
    assert {views.finding_name(label) for label in scores.probabilities} == set(app.selectbox(key="cam_class").options)
    app.selectbox(key="browse_choice").set_value("samples/cr_chest_monochrome1.dcm")
    app.button(key="browse_open").click().run()
    assert app.session_state["case"].name == "samples/cr_chest_monochrome1.dcm"
    assert app.session_state["computed"][("scores",)] is not scores


def test_dicom_header_is_shown_with_identifying_fields_masked(make_app) -> None:
    app = open_by_browsing(make_app(), "samples/cr_chest_monochrome1.dcm")
    assert not app.exception
    header = app.dataframe[-1].value
    values = dict(zip(header["keyword"], header["value"]))
    assert values["PatientName"] == "•••" and values["PatientID"] == "•••"
    assert values["SOPInstanceUID"] == "•••"
    assert values["Rows"] == "384" and values["PhotometricInterpretation"] == "MONOCHROME1"


def test_upload_of_a_png_opens_it_in_the_xray_view(make_app, app_root: Path) -> None:
    app = make_app().run()
    data = (app_root / "samples" / "chest.png").read_bytes()
    app.file_uploader(key="upload").set_value(("film.png", data, "image/png")).run()
    assert not app.exception and not app.error
    case = app.session_state["case"]
    assert case.source == "upload" and case.name == "film.png"
    assert oct(os.stat(case.path.parent).st_mode & 0o777) == "0o700", "uploads go to a private folder"
    assert len(app.image) == 1


def test_upload_of_a_dicom_series_as_several_files(make_app, app_root: Path) -> None:
    app = make_app().run()
    files = [(path.name, path.read_bytes(), "application/dicom")
             for path in sorted((app_root / "samples" / "ct_series").iterdir())]
    app.file_uploader(key="upload").set_value(files).run()
    assert not app.exception and not app.error
    assert app.session_state["case"].image.is_volume


@pytest.mark.parametrize(("name", "content", "variables", "reason"), [
    ("notes.png", b"this is plain text, whatever the name says", {}, "not_dicom"),
    ("script.dcm", b"#!/bin/sh\necho hello\n" * 20, {}, "not_dicom"),
    ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024), {"MEDRES_APP_UPLOAD_LIMIT_MB": "1"}, "too_large"),
])
def test_bad_uploads_are_refused_with_a_message(make_app, name: str, content: bytes, variables: dict,
                                                reason: str) -> None:
    app = make_app(**variables).run()
    app.file_uploader(key="upload").set_value((name, content, "application/octet-stream")).run()
    assert not app.exception
    assert any(text.startswith(reason) for text in (element.value for element in app.error))
    assert "case" not in app.session_state


def test_after_a_refused_upload_the_next_valid_file_goes_through(make_app, app_root: Path) -> None:
    app = make_app().run()
    app.file_uploader(key="upload").set_value(("notes.png", b"plain text", "image/png")).run()
    assert any(element.value.startswith("not_dicom") for element in app.error)
    assert [uploader.key for uploader in app.file_uploader] == ["upload_1"], "the refused file left the uploader"
    assert app.file_uploader(key="upload_1").value in (None, [])
    data = (app_root / "samples" / "chest.png").read_bytes()
    app.file_uploader(key="upload_1").set_value(("film.png", data, "image/png")).run()
    assert not app.exception and not app.error, "the refusal is gone once a file is accepted"
    assert app.session_state["case"].name == "film.png"


@pytest.mark.parametrize("typed", ["../outside.png", "samples/../../outside.png", "/etc/passwd", "link_out.png",
                                   "linked_folder/secret.png"])
def test_paths_leaving_the_root_are_refused(make_app, app_root: Path, typed: str) -> None:
    outside = app_root.parent / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((app_root / "samples" / "chest.png").read_bytes())
    (app_root.parent / "outside.png").write_bytes(b"x")
    (app_root / "link_out.png").symlink_to(outside / "secret.png")
    (app_root / "linked_folder").symlink_to(outside, target_is_directory=True)
    app = make_app().run()
    assert "link_out.png" not in app.selectbox(key="browse_choice").options
    app.text_input(key="browse_path").set_value(typed)
    app.button(key="browse_open_path").click().run()
    assert not app.exception
    assert any(element.value.startswith("unsafe_path") for element in app.error)
    assert "case" not in app.session_state


def test_series_folder_with_a_link_out_of_the_root_is_refused(make_app, app_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes((app_root / "samples" / "cr_chest_monochrome1.dcm").read_bytes())
    (app_root / "samples" / "ct_series" / "zz_link.dcm").symlink_to(outside)
    app = make_app().run()
    app.text_input(key="browse_path").set_value("samples/ct_series")
    app.button(key="browse_open_path").click().run()
    assert any("links outside the root" in element.value for element in app.error)


def write_label_like(image_path: Path, target: Path, shift_affine: bool = False) -> Path:
    """A label NIfTI on the same voxel grid as ``image_path`` (two labels), or a shifted grid."""
    source = nib.load(str(image_path))
    labels = np.zeros(source.shape[:3], np.uint8)
    labels[4:12, 5:15, 3:9] = 1
    labels[15:20, 20:30, 10:14] = 2
    affine = source.affine.copy()
    if shift_affine:
        affine[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(labels, affine), str(target))
    return target


def test_volume_view_with_slices_presets_and_a_label_file(make_app, app_root: Path) -> None:
    write_label_like(app_root / "samples" / "volume_oblique.nii.gz", app_root / "samples" / "labels.nii.gz")
    app = open_by_browsing(make_app(), "samples/volume_oblique.nii.gz")
    assert not app.exception and not app.error
    assert {slider.key for slider in app.slider} >= {"slice_axial", "slice_coronal", "slice_sagittal"}
    assert len(app.image) == 3
    axial = app.slider(key="slice_axial")
    assert (axial.min, axial.max) == (1, 24) and axial.value == 13, "slices numbered from 1, as in the caption"
    assert app.image[0].proto.imgs[0].caption == "axial 13/24"
    axial.set_value(3).run()
    assert app.image[0].proto.imgs[0].caption == "axial 3/24", "the slider and the caption agree"
    app.radio(key="seg_source").set_value("Label file under the root").run()
    app.text_input(key="seg_path").set_value("samples/labels.nii.gz").run()
    assert not app.exception and not app.error
    volumes = app.dataframe[0].value
    assert list(volumes["label"]) == [1, 2] and (volumes["volume_ml"] > 0).all()
    assert any("label 2" in markdown.value for markdown in app.markdown)
    assert any(caption.value.startswith("Label names from: none found") for caption in app.caption)
    app.slider(key="seg_opacity").set_value(0.8).run()
    assert not app.exception


def test_label_names_come_from_the_data_sets_dataset_json(make_app, app_root: Path) -> None:
    dataset = app_root / "Task09_Phantom"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    shutil.copy(app_root / "samples" / "volume_oblique.nii.gz", dataset / "imagesTr" / "case_000.nii.gz")
    write_label_like(dataset / "imagesTr" / "case_000.nii.gz", dataset / "labelsTr" / "case_000.nii.gz")
    description = {"name": "phantom", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver",
                                                                         "2": "spleen"}}
    (dataset / "dataset.json").write_text(json.dumps(description))
    app = make_app().run()
    app.text_input(key="browse_path").set_value("Task09_Phantom/imagesTr/case_000.nii.gz")
    app.button(key="browse_open_path").click().run()
    app.radio(key="seg_source").set_value("Label file under the root").run()
    app.text_input(key="seg_path").set_value("Task09_Phantom/labelsTr/case_000.nii.gz").run()
    assert not app.exception and not app.error
    assert list(app.dataframe[0].value["name"]) == ["liver", "spleen"]
    legend = next(markdown.value for markdown in app.markdown if "liver" in markdown.value)
    assert "spleen" in legend and "label 1" not in legend
    assert any(caption.value == "Label names from: Task09_Phantom/dataset.json" for caption in app.caption)


def test_label_file_on_another_grid_is_refused(make_app, app_root: Path) -> None:
    write_label_like(app_root / "samples" / "volume_oblique.nii.gz", app_root / "samples" / "shifted.nii.gz",
                     shift_affine=True)
    app = open_by_browsing(make_app(), "samples/volume_oblique.nii.gz")
    app.radio(key="seg_source").set_value("Label file under the root").run()
    app.text_input(key="seg_path").set_value("samples/shifted.nii.gz").run()
    assert any(element.value.startswith("geometry_mismatch") for element in app.error)


def test_ct_series_offers_the_ct_window_presets(make_app) -> None:
    app = open_by_browsing(make_app(), "samples/ct_series")
    assert not app.exception and not app.error
    presets = app.selectbox(key="volume_preset").options
    assert {"Lung (-600/1500)", "Soft tissue (40/400)", "Bone (480/2500)", "Brain (40/80)"} <= set(presets)
    app.selectbox(key="volume_preset").set_value("Bone (480/2500)").run()
    assert not app.exception


@pytest.fixture()
def seg_checkpoint(tmp_path: Path) -> Path:
    from medres.models import list_models

    seg_models = list_models(task="seg")
    if not seg_models:
        pytest.skip("no segmentation model is registered yet")
    path = tmp_path / "seg.safetensors"
    save_checkpoint(create_model(max(seg_models)), path)
    return path


def test_seg_model_on_demand_without_segmentation_support(make_app, seg_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "medres.segment", None)  # import fails as if not installed
    app = open_by_browsing(make_app(MEDRES_APP_SEG_CHECKPOINT=str(seg_checkpoint)), "samples/volume_oblique.nii.gz")
    app.radio(key="seg_source").set_value("Run the segmentation model").run()
    app.button(key="seg_run").click().run()
    assert not app.exception
    assert any("segmentation support is not installed" in element.value for element in app.error)


def test_seg_model_on_demand_shows_labels_legend_and_volumes(make_app, seg_checkpoint: Path, monkeypatch) -> None:
    fake = types.ModuleType("medres.segment")

    def segment_image(model, image, progress=None):
        labels = np.zeros(image.spatial_shape, np.int16)
        labels[2:10, 2:10, 2:10] = 1
        if progress is not None:
            progress(0.5)
        return labels

    fake.segment_image = segment_image
    monkeypatch.setitem(sys.modules, "medres.segment", fake)
    app = open_by_browsing(make_app(MEDRES_APP_SEG_CHECKPOINT=str(seg_checkpoint)), "samples/volume_oblique.nii.gz")
    app.radio(key="seg_source").set_value("Run the segmentation model").run()
    app.button(key="seg_run").click().run()
    assert not app.exception and not app.error
    volumes = app.dataframe[0].value
    assert list(volumes["label"]) == [1] and volumes["voxels"].iloc[0] == 512


def test_worklist_filters_sorts_and_opens_a_row_with_its_heatmap(make_app) -> None:
    app = make_app().run()
    open_worklist(app)
    assert not app.exception and not app.error
    app.selectbox(key="worklist_label").set_value("Effusion").run()
    table = app.dataframe[0].value
    assert len(table) == 2 and table["prob_Effusion"].is_monotonic_decreasing, "highest probability first"
    top, bottom = table["prob_Effusion"].iloc[0], table["prob_Effusion"].iloc[1]
    app.slider(key="worklist_range").set_value((round((top + bottom) / 2, 6), 1.0)).run()
    assert list(app.dataframe[0].value["path"]) == [table["path"].iloc[0]], "the range filter keeps the top row"
    app.button(key="worklist_open").click().run()
    assert not app.exception and not app.error
    assert app.radio(key="mode").value == "Case"
    assert app.selectbox(key="cam_class").value == "Effusion"
    assert any("medres score" in image.proto.imgs[0].caption for image in app.image)


def test_worklist_refuses_a_folder_outside_the_root(make_app) -> None:
    app = make_app().run()
    app.radio(key="mode").set_value("Worklist").run()
    app.text_input(key="worklist_folder").set_value("../..").run()
    assert any(element.value.startswith("unsafe_path") for element in app.error)


def test_without_a_checkpoint_the_image_is_still_shown(make_app) -> None:
    app = open_by_browsing(make_app(checkpoint=None), "samples/chest.png")
    assert not app.exception
    assert len(app.image) == 1
    assert any("No classifier loaded" in text for text in messages(app))


def test_seg_model_on_demand_with_the_installed_segmentation_module(make_app, seg_checkpoint: Path) -> None:
    pytest.importorskip("medres.segment")
    app = open_by_browsing(make_app(MEDRES_APP_SEG_CHECKPOINT=str(seg_checkpoint)), "samples/volume_oblique.nii.gz")
    app.radio(key="seg_source").set_value("Run the segmentation model").run()
    app.button(key="seg_run").click().run()
    assert not app.exception and not app.error
    labels, names = app.session_state["computed"][("segmentation",)]
    assert labels.shape == app.session_state["case"].image.spatial_shape and names.names[0] == "background"
    assert names.source == "the segmentation model's card"
    app.slider(key="slice_coronal").set_value(2).run()
    assert not app.exception


def test_label_file_can_be_uploaded_for_the_open_volume(make_app, app_root: Path, tmp_path: Path) -> None:
    label = write_label_like(app_root / "samples" / "volume_oblique.nii.gz", tmp_path / "mine.nii.gz")
    app = open_by_browsing(make_app(), "samples/volume_oblique.nii.gz")
    app.radio(key="seg_source").set_value("Upload a label file").run()
    app.file_uploader(key="seg_upload").set_value(("mine.nii.gz", label.read_bytes(), "application/gzip")).run()
    assert not app.exception and not app.error
    assert list(app.dataframe[0].value["label"]) == [1, 2]


def test_case_settings_reset_when_another_case_opens(make_app) -> None:
    app = open_by_browsing(make_app(), "samples/volume_oblique.nii.gz")
    app.slider(key="slice_axial").set_value(app.slider(key="slice_axial").max).run()
    app.selectbox(key="browse_choice").set_value("samples/ct_series")
    app.button(key="browse_open").click().run()
    assert not app.exception and not app.error
    assert app.slider(key="slice_axial").value == 4, "the middle slice (4 of 6) of the newly opened series"
    app.selectbox(key="browse_choice").set_value("samples/chest.png")
    app.button(key="browse_open").click().run()
    app.selectbox(key="cam_class").set_value("Hernia").run()
    open_worklist(app)
    app.selectbox(key="worklist_label").set_value("Effusion").run()
    app.button(key="worklist_open").click().run()
    assert app.selectbox(key="cam_class").value == "Effusion", "the worklist's class, not the previous choice"


def test_the_documented_entry_apps_review_runs_the_packaged_page(make_app) -> None:
    """`streamlit run apps/review.py` draws the packaged page and reads its configuration on every run."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import APP_TIMEOUT_S, REPO

    def entry_app():
        return AppTest.from_file(str(REPO / "apps" / "review.py"), default_timeout=APP_TIMEOUT_S)

    make_app()  # configures the MEDRES_APP_* variables: a root and a classifier
    app = open_by_browsing(entry_app(), "samples/chest.png")
    assert not app.exception and not app.error
    assert sum(NOTICE in text for text in messages(app)) == 1
    assert len(app.selectbox(key="cam_class").options) == 14, "the classifier's scores and Grad-CAM"
    make_app(checkpoint=None)  # the same process, another configuration: no classifier now
    app = open_by_browsing(entry_app(), "samples/chest.png")
    assert not app.exception and len(app.image) == 1
    assert any("No classifier loaded" in text for text in messages(app))
