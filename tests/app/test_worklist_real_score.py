"""The worklist on what `medres score --heatmaps` really writes: a run from another folder, moved inputs, the page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from medres.app import files, worklist
from medres.errors import InputMovedError
from medres.io import read_image
from medres.models import CXR14_LABELS, read_card
from medres.synthetic.dicom import projection_dataset, write_dicom
from tests.app.conftest import REPO, messages, open_worklist, run_score

SAMPLES = REPO / "sample_data"


def make_inputs(folder: Path) -> dict[str, Path]:
    """Chest radiographs to score, nested: the two committed samples and two synthetic CR DICOMs.

    Returns:
        Each file's path relative to ``folder`` (as `score` writes it) -> the file.
    """
    inputs = {"films/chest.png": SAMPLES / "chest.png", "films/cr_chest.dcm": SAMPLES / "cr_chest_monochrome1.dcm"}
    for relative, source in inputs.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / relative)
    rows, columns = np.mgrid[0:96, 0:80]
    for number in range(2):
        pixels = ((rows * (7 + number) + columns * 3) % 4096).astype(np.uint16)
        dataset = projection_dataset(pixels, uid_seed=f"worklist-{number}", photometric="MONOCHROME2")
        write_dicom(dataset, folder / "ward" / f"patient{number}" / "image.dcm")
    return {relative: folder / relative for relative in
            [*inputs, "ward/patient0/image.dcm", "ward/patient1/image.dcm"]}


@pytest.fixture()
def scored_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, all_positive_checkpoint: Path) -> Path:
    """A root with `study/input` scored into `study/scored` by a run started in another folder, with relative paths.

    Returns:
        The root; the test's working directory is then yet another folder, as the app's would be.
    """
    root = tmp_path / "root"
    make_inputs(root / "study" / "input")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_score("../root/study/input", "../root/study/scored", all_positive_checkpoint) == 0
    (tmp_path / "app_cwd").mkdir()
    monkeypatch.chdir(tmp_path / "app_cwd")
    return root


def test_score_records_the_absolute_input_root(scored_elsewhere: Path) -> None:
    run = json.loads((scored_elsewhere / "study" / "scored" / "run.json").read_text())
    assert run["arguments"]["input_dir"] == "../root/study/input", "as typed, relative to where score ran"
    assert run["input_root"] == str((scored_elsewhere / "study" / "input").resolve())


def test_every_row_opens_its_own_image_and_heatmap(scored_elsewhere: Path, all_positive_checkpoint: Path) -> None:
    root = scored_elsewhere
    sources = make_inputs(root.parent / "originals")
    loaded = worklist.load_worklist(files.resolve_under_root(root, "study/scored"))
    assert sorted(loaded.table["path"]) == sorted(sources)
    worklist.input_folder(loaded, root)
    input_size = read_card(all_positive_checkpoint).input_size
    for _, row in loaded.table.iterrows():
        image_file = worklist.image_path(loaded, row, root)
        assert image_file == (root / "study" / "input" / row["path"]).resolve()
        assert image_file.read_bytes() == sources[row["path"]].read_bytes(), "the row's own file"
        image = read_image(image_file)
        np.testing.assert_array_equal(image.array, read_image(sources[row["path"]]).array)
        for label in CXR14_LABELS:
            heatmap_file = worklist.heatmap_path(loaded, row, label, root)
            assert heatmap_file == (root / "study" / "scored" / "heatmaps" / row["sop_pseudonym"] /
                                    f"{label}.png").resolve()
            with PILImage.open(heatmap_file) as picture:
                picture.load()
                assert picture.format == "PNG" and picture.mode == "L"
                assert picture.size[::-1] == tuple(input_size)


def test_a_moved_input_folder_is_named_and_its_new_place_accepted(scored_elsewhere: Path) -> None:
    root = scored_elsewhere
    recorded = (root / "study" / "input").resolve()
    (root / "archive").mkdir()
    shutil.move(root / "study" / "input", root / "archive" / "input")
    loaded = worklist.load_worklist(files.resolve_under_root(root, "study/scored"))
    row = loaded.table.iloc[0]
    with pytest.raises(InputMovedError) as caught:
        worklist.image_path(loaded, row, root)
    message = str(caught.value)
    assert caught.value.reason == "input_moved"
    assert str(recorded) in message and "move it back" in message and worklist.MOVED_PROMPT in message
    with pytest.raises(InputMovedError, match="no longer exists"):
        worklist.input_folder(loaded, root)
    relocated = worklist.load_worklist(loaded.folder, files.resolve_case_path(root, "archive/input"))
    assert relocated.recorded_input_root == recorded
    assert worklist.image_path(relocated, row, root) == (root / "archive" / "input" / row["path"]).resolve()
    assert worklist.heatmap_path(relocated, row, "Effusion", root).is_file()


def test_a_run_json_without_input_root_asks_for_the_folder(scored_elsewhere: Path) -> None:
    run_file = scored_elsewhere / "study" / "scored" / "run.json"
    run = json.loads(run_file.read_text())
    del run["input_root"]  # as written by a medres from before the folder's place was recorded
    run_file.write_text(json.dumps(run))
    loaded = worklist.load_worklist(scored_elsewhere / "study" / "scored")
    with pytest.raises(InputMovedError, match="'../root/study/input', relative to where `medres score` ran"):
        worklist.image_path(loaded, loaded.table.iloc[0], scored_elsewhere)


def test_page_opens_a_real_row_with_the_heatmap_score_wrote(make_app, app_root: Path) -> None:
    scores = pd.read_csv(app_root / "scored" / "scores.csv")
    app = make_app().run()
    open_worklist(app)
    assert not app.exception and not app.error
    app.selectbox(key="worklist_label").set_value("Effusion").run()
    table = app.dataframe[0].value
    expected = scores.sort_values("prob_Effusion", ascending=False, kind="stable")
    assert list(table["path"]) == list(expected["path"]), "sorted by the class's probability, highest first"
    assert list(table["prob_Effusion"]) == list(expected["prob_Effusion"])
    top = float(expected["prob_Effusion"].iloc[0])
    app.slider(key="worklist_range").set_value((top, 1.0)).run()
    assert list(app.dataframe[0].value["path"]) == [expected["path"].iloc[0]]
    app.button(key="worklist_open").click().run()
    assert not app.exception and not app.error
    assert app.radio(key="mode").value == "Case"
    case = app.session_state["case"]
    assert case.path == (app_root / "samples" / expected["path"].iloc[0]).resolve()
    pseudonym = expected["sop_pseudonym"].iloc[0]
    assert case.heatmap_path == (app_root / "scored" / "heatmaps" / pseudonym / "Effusion.png").resolve()
    assert app.selectbox(key="cam_class").value == "Effusion"
    assert any("medres score" in image.proto.imgs[0].caption for image in app.image)


def test_page_explains_a_moved_input_folder_and_takes_its_new_place(make_app, app_root: Path) -> None:
    shutil.move(app_root / "samples", app_root / "moved_samples")
    app = make_app().run()
    open_worklist(app)
    assert not app.exception
    assert any(element.value.startswith("input_moved") and "move it back" in element.value for element in app.error)
    assert len(app.dataframe) == 1, "the scores are still shown"
    app.text_input(key="worklist_input_root").set_value("moved_samples").run()
    assert not app.exception and not app.error
    assert any("moved_samples" in caption.value for caption in app.caption)
    app.button(key="worklist_open").click().run()
    assert not app.exception and not app.error
    assert app.session_state["case"].path.parent == (app_root / "moved_samples").resolve()
    assert not any("input_moved" in text for text in messages(app))
