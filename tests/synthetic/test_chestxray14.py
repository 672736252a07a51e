"""The synthetic ChestX-ray14 generator: NIH layout, deterministic bytes, boxes that frame their findings."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from medres.data import SYNTHETIC_README
from medres.data.chestxray14 import BOX_LABELS, LABELS, TEST_LIST, TRAIN_VAL_LIST
from medres.errors import UsageError
from medres.synthetic.chestxray14 import make_chestxray14, new_canvas, paint_anatomy, render_radiograph, sample_anatomy
from medres.synthetic.findings import FINDING_PAINTERS, PAINT_ORDER

V2020_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chestxray14(tmp_path_factory.mktemp("synthetic") / "cxr14", 240, seed=3, image_size=64)


@pytest.fixture(scope="module")
def entries(synthetic_root: Path) -> pd.DataFrame:
    return pd.read_csv(synthetic_root / "Data_Entry_2017_v2020.csv")


def test_same_seed_gives_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    first = folder_bytes(make_chestxray14(tmp_path / "a", 40, seed=11, image_size=64, layout="archives"))
    second = folder_bytes(make_chestxray14(tmp_path / "b", 40, seed=11, image_size=64, layout="archives"))
    other = folder_bytes(make_chestxray14(tmp_path / "c", 40, seed=12, image_size=64, layout="archives"))
    assert first == second
    assert first != other


def test_writes_nih_layout_with_readme(synthetic_root: Path, entries: pd.DataFrame) -> None:
    assert (synthetic_root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[0] == V2020_HEADER
    assert "SYNTHETIC" in (synthetic_root / SYNTHETIC_README).read_text()
    names = sorted(path.name for path in (synthetic_root / "images").iterdir())
    assert names == sorted(entries["Image Index"])
    assert all(re.fullmatch(r"\d{8}_\d{3}\.png", name) for name in names)
    with PILImage.open(synthetic_root / "images" / names[0]) as image:
        assert (image.mode, image.size, image.format) == ("L", (64, 64), "PNG")


def test_patients_have_several_consecutive_follow_ups(entries: pd.DataFrame) -> None:
    per_patient = entries.groupby("Patient ID")["Follow-up #"]
    assert per_patient.size().max() > 1
    assert 2.5 < len(entries) / entries["Patient ID"].nunique() < 4.5
    for follow_ups in per_patient:
        assert sorted(follow_ups[1]) == list(range(len(follow_ups[1])))
    names = entries["Patient ID"].map("{:08d}".format) + "_" + entries["Follow-up #"].map("{:03d}".format) + ".png"
    assert (names == entries["Image Index"]).all()
    assert set(entries["View Position"]) == {"PA", "AP"} and set(entries["Patient Gender"]) == {"M", "F"}


def test_every_label_has_positives_and_about_forty_percent_no_finding(entries: pd.DataFrame) -> None:
    labels = entries["Finding Labels"]
    assert 0.3 < (labels == "No Finding").mean() < 0.5
    tokens = labels.str.split("|").explode()
    assert set(tokens) == set(LABELS) | {"No Finding"}
    shares = tokens.value_counts() / len(entries)
    assert shares[list(LABELS)].between(0.03, 0.3).all()
    assert (labels.str.count(r"\|") > 0).any()


def test_split_lists_cover_all_images_and_are_disjoint_by_patient(synthetic_root: Path,
                                                                  entries: pd.DataFrame) -> None:
    test_names = set((synthetic_root / TEST_LIST).read_text().split())
    train_val_names = set((synthetic_root / TRAIN_VAL_LIST).read_text().split())
    assert test_names | train_val_names == set(entries["Image Index"]) and not test_names & train_val_names
    patient_of = dict(zip(entries["Image Index"], entries["Patient ID"]))
    assert not {patient_of[name] for name in test_names} & {patient_of[name] for name in train_val_names}


def test_boxes_cover_every_positive_of_the_eight_box_labels(synthetic_root: Path, entries: pd.DataFrame) -> None:
    boxes = pd.read_csv(synthetic_root / "BBox_List_2017.csv")
    assert list(boxes.columns[:3]) == ["Image Index", "Finding Label", "Bbox [x"]
    spelled = {"Infiltration": "Infiltrate"}
    assert set(boxes["Finding Label"]) == {spelled.get(label, label) for label in BOX_LABELS}
    expected = {(image, spelled.get(label, label)) for image, text in zip(entries["Image Index"],
                                                                          entries["Finding Labels"])
                for label in text.split("|") if label in BOX_LABELS}
    assert set(zip(boxes["Image Index"], boxes["Finding Label"])) == expected
    x, y, w, h = (boxes.iloc[:, column] for column in range(2, 6))
    assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x + w <= 64).all() and (y + h <= 64).all()


@pytest.mark.parametrize("label", PAINT_ORDER)
def test_each_finding_is_drawn_inside_its_box(label: str) -> None:
    rng = np.random.default_rng(PAINT_ORDER.index(label))
    canvas = new_canvas(sample_anatomy(rng), rng, 128)
    paint_anatomy(canvas)
    before = canvas.pixels.copy()
    x, y, w, h = (int(value) for value in FINDING_PAINTERS[label](canvas))
    changed = np.abs(canvas.pixels - before) > 0.03
    assert changed.sum() >= 10 and w > 0 and h > 0
    rows, columns = np.nonzero(changed)
    margin = 3
    assert rows.min() >= y - margin and rows.max() < y + h + margin
    assert columns.min() >= x - margin and columns.max() < x + w + margin


def test_findings_differ_in_size_where_the_label_depends_on_it() -> None:
    def box_area(label: str, seed: int) -> float:
        rng = np.random.default_rng(seed)
        _, boxes = render_radiograph(sample_anatomy(rng), [label], rng, 256, "PA")
        return boxes[label][2] * boxes[label][3]

    assert max(box_area("Nodule", seed) for seed in range(8)) < min(box_area("Mass", seed) for seed in range(8))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"n_images": 0}, "n_images"),
    ({"n_images": 5, "n_patients": 6}, "n_patients"),
    ({"n_images": 5, "layout": "zip"}, "layout"),
    ({"n_images": 5, "image_size": 16}, "image_size"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as raised:
        make_chestxray14(tmp_path, **arguments)
    assert raised.value.reason == "usage"
