"""The ChestX-ray14 index on synthetic folders in NIH's layout: labels, splits, boxes, drops, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medres.data.chestxray14 import (
    LABELS,
    SPLIT_OFFICIAL,
    SPLIT_RANDOM,
    TEST_LIST,
    TRAIN_VAL_LIST,
    ChestXray14Index,
    load_chestxray14,
)
from medres.errors import DatasetLayoutError, PatientLeakageError, UnknownLabelError, UsageError
from medres.synthetic.chestxray14 import make_chestxray14

V2020 = "Data_Entry_2017_v2020.csv"


@pytest.fixture(scope="module")
def official_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chestxray14(tmp_path_factory.mktemp("official") / "cxr14", 200, seed=1, image_size=64)


@pytest.fixture(scope="module")
def official(official_root: Path) -> ChestXray14Index:
    return load_chestxray14(official_root)


@pytest.fixture()
def editable_root(official_root: Path, tmp_path: Path) -> Path:
    """A private copy of the official folder that a test may damage."""
    return Path(shutil.copytree(official_root, tmp_path / "copy"))


def patients_by_split(table: pd.DataFrame) -> dict[str, set[int]]:
    return {split: set(rows["patient_id"]) for split, rows in table.groupby("split")}


def assert_disjoint_by_patient(table: pd.DataFrame) -> None:
    groups = list(patients_by_split(table).values())
    assert all(not first & second for number, first in enumerate(groups) for second in groups[number + 1:])


def test_official_index_has_every_image_and_the_documented_columns(official: ChestXray14Index) -> None:
    table = official.table
    assert len(table) == 200 and official.n_missing == 0 and official.n_unlisted == 0
    assert (official.label_version, official.split_method) == ("v2020", SPLIT_OFFICIAL)
    expected = ["image", "path", "patient_id", "split", *LABELS, "view", "sex", "age", "age_as_recorded", "follow_up"]
    assert list(table.columns[:len(expected)]) == expected
    assert table["path"].map(lambda path: Path(path).is_absolute() and Path(path).is_file()).all()
    assert table["patient_id"].dtype == np.int64 and set(np.unique(table[list(LABELS)])) <= {0, 1}
    assert set(table["split"]) == {"train", "val", "test"} and set(table["view"]) <= {"PA", "AP"}


def test_labels_are_parsed_from_finding_labels(official_root: Path, official: ChestXray14Index) -> None:
    entries = pd.read_csv(official_root / V2020).set_index("Image Index")
    table = official.table.set_index("image")
    no_finding = entries.index[entries["Finding Labels"] == "No Finding"]
    assert len(no_finding) > 0 and (table.loc[no_finding, list(LABELS)] == 0).all().all()
    multi = entries[entries["Finding Labels"].str.contains("|", regex=False)]
    assert len(multi) > 0
    for image, text in multi["Finding Labels"].items():
        assert {label for label in LABELS if table.at[image, label] == 1} == set(text.split("|"))


def test_test_split_is_the_official_list_and_val_is_carved_by_patient(official_root: Path,
                                                                      official: ChestXray14Index) -> None:
    table = official.table
    test_list = set((official_root / TEST_LIST).read_text().split())
    assert set(table.loc[table["split"] == "test", "image"]) == test_list
    assert_disjoint_by_patient(table)
    groups = patients_by_split(table)
    train_val_patients = len(groups["train"]) + len(groups["val"])
    assert abs(len(groups["val"]) / train_val_patients - 0.1) <= 1 / train_val_patients


def test_split_follows_seed_and_val_fraction(official_root: Path, official: ChestXray14Index) -> None:
    again = load_chestxray14(official_root, seed=0)
    assert again.table["split"].equals(official.table["split"])
    reseeded = load_chestxray14(official_root, seed=5)
    assert not reseeded.table["split"].equals(official.table["split"])
    quarter = patients_by_split(load_chestxray14(official_root, val_fraction=0.25).table)
    assert abs(len(quarter["val"]) / (len(quarter["val"]) + len(quarter["train"])) - 0.25) < 0.05


def test_archive_layout_without_lists_gets_a_random_patient_split(tmp_path: Path) -> None:
    root = make_chestxray14(tmp_path / "cxr14", 160, seed=2, image_size=64, with_split_lists=False,
                            layout="archives")
    index = load_chestxray14(root)
    assert len(index.table) == 160 and index.split_method == SPLIT_RANDOM
    folders = {Path(path).parent.parent.name for path in index.table["path"]}
    assert len(folders) == 12 and all(folder.startswith("images_0") for folder in folders)
    assert_disjoint_by_patient(index.table)
    groups = patients_by_split(index.table)
    patients = sum(len(group) for group in groups.values())
    assert abs(len(groups["test"]) / patients - 0.2) < 0.02 and abs(len(groups["val"]) / patients - 0.1) < 0.02
    assert "random_patient" in index.summary()


def test_partial_download_drops_missing_images_and_keeps_splits(editable_root: Path,
                                                                official: ChestXray14Index) -> None:
    deleted = sorted((editable_root / "images").iterdir())[::29]
    for path in deleted:
        path.unlink()
    index = load_chestxray14(editable_root)
    assert index.n_missing == len(deleted) == 7 and len(index.table) == 200 - len(deleted)
    assert not set(index.table["image"]) & {path.name for path in deleted}
    assert not set(index.boxes["image"]) & {path.name for path in deleted}
    full_split = official.table.set_index("image")["split"]
    assert (index.table.set_index("image")["split"] == full_split[index.table["image"]]).all()
    assert "7 missing" in index.summary()


def test_index_never_decodes_pixels(editable_root: Path) -> None:
    victim = sorted((editable_root / "images").iterdir())[0]
    victim.write_bytes(b"not a png")
    assert victim.name in set(load_chestxray14(editable_root).table["image"])


def test_boxes_use_canonical_labels_and_match_positives(official: ChestXray14Index) -> None:
    boxes = official.boxes
    assert list(boxes.columns) == ["image", "label", "x", "y", "w", "h"]
    assert "Infiltration" in set(boxes["label"]) and "Infiltrate" not in set(boxes["label"])
    table = official.table.set_index("image")
    assert all(table.at[image, label] == 1 for image, label in zip(boxes["image"], boxes["label"]))


def test_overlapping_official_lists_are_patient_leakage(editable_root: Path, official: ChestXray14Index) -> None:
    table = official.table
    patient = table.loc[table["split"] == "train", "patient_id"].value_counts().index[0]
    moved = table.loc[table["patient_id"] == patient, "image"].iloc[0]
    train_val = [name for name in (editable_root / TRAIN_VAL_LIST).read_text().split() if name != moved]
    (editable_root / TRAIN_VAL_LIST).write_text("\n".join(train_val) + "\n")
    with (editable_root / TEST_LIST).open("a") as test_list:
        test_list.write(moved + "\n")
    with pytest.raises(PatientLeakageError, match=f"patient {patient} ") as raised:
        load_chestxray14(editable_root)
    assert raised.value.reason == "patient_leakage"


def test_image_in_both_lists_is_patient_leakage(editable_root: Path) -> None:
    shared = (editable_root / TRAIN_VAL_LIST).read_text().split()[0]
    with (editable_root / TEST_LIST).open("a") as test_list:
        test_list.write(shared + "\n")
    with pytest.raises(PatientLeakageError, match=shared):
        load_chestxray14(editable_root)


def test_unknown_label_is_an_error_naming_it(editable_root: Path) -> None:
    csv_path = editable_root / V2020
    csv_path.write_text(csv_path.read_text().replace("Effusion", "Pneumonitis", 1))
    with pytest.raises(UnknownLabelError, match="'Pneumonitis'") as raised:
        load_chestxray14(editable_root)
    assert raised.value.reason == "unknown_label"


def test_unknown_box_label_is_an_error(editable_root: Path) -> None:
    box_path = editable_root / "BBox_List_2017.csv"
    box_path.write_text(box_path.read_text().replace("Infiltrate,", "Infiltrat,", 1))
    with pytest.raises(UnknownLabelError, match="'Infiltrat'"):
        load_chestxray14(editable_root)


def test_2017_csv_with_trailing_column_and_year_suffixed_ages(editable_root: Path,
                                                             official: ChestXray14Index) -> None:
    entries = pd.read_csv(editable_root / V2020)
    entries["Patient Age"] = entries["Patient Age"].map("{:03d}Y".format)
    entries.loc[0, "Patient Age"] = "414"
    entries[""] = ""
    (editable_root / V2020).unlink()
    entries.to_csv(editable_root / "Data_Entry_2017.csv", index=False)
    index = load_chestxray14(editable_root)
    assert index.label_version == "2017"
    assert index.table.drop(columns="age").columns.tolist() == official.table.drop(columns="age").columns.tolist()
    first = index.table["image"] == entries.loc[0, "Image Index"]
    assert index.table.loc[first, "age"].isna().all() and (index.table.loc[first, "age_as_recorded"] == 414).all()
    assert index.table.loc[~first, "age"].equals(official.table.loc[~first, "age"])


def test_subset_filters_by_split_view_sex_and_age(official: ChestXray14Index) -> None:
    subgroup = official.subset(split=["val", "test"], view="PA", sex="F", age_range=(40, 60))
    table = subgroup.table
    assert 0 < len(table) < len(official.table)
    assert set(table["split"]) <= {"val", "test"} and set(table["view"]) == {"PA"} and set(table["sex"]) == {"F"}
    assert table["age"].between(40, 59).all()
    assert set(subgroup.boxes["image"]) <= set(table["image"])
    assert "view=PA" in subgroup.summary() and subgroup.n_missing == official.n_missing
    assert (official.subset(age_range=(60, None)).table["age"] >= 60).all()


@pytest.mark.parametrize("filters", [{"view": "LL"}, {"sex": "X"}, {"split": "dev"}, {"age_range": (60, 40)}])
def test_subset_rejects_unknown_values(official: ChestXray14Index, filters: dict) -> None:
    with pytest.raises(UsageError):
        official.subset(**filters)


def test_label_counts_and_summary(official: ChestXray14Index) -> None:
    counts = official.label_counts()
    assert list(counts.index) == list(LABELS) and list(counts.columns) == ["train", "val", "test", "all"]
    assert (counts["all"] == official.table[list(LABELS)].sum()).all() and (counts["all"] > 0).all()
    summary = official.summary()
    assert "v2020" in summary and SPLIT_OFFICIAL in summary and "0 missing" in summary


def test_layout_errors(editable_root: Path) -> None:
    (editable_root / TEST_LIST).unlink()
    with pytest.raises(DatasetLayoutError, match="train_val_list.txt but not test_list.txt"):
        load_chestxray14(editable_root)
    shutil.rmtree(editable_root / "images")
    (editable_root / TRAIN_VAL_LIST).unlink()
    with pytest.raises(DatasetLayoutError, match="images_001/images") as raised:
        load_chestxray14(editable_root)
    assert raised.value.reason == "dataset_layout"
    (editable_root / V2020).unlink()
    with pytest.raises(DatasetLayoutError, match="Data_Entry_2017_v2020.csv or Data_Entry_2017.csv"):
        load_chestxray14(editable_root)


def test_bad_fractions_are_usage_errors(official_root: Path) -> None:
    with pytest.raises(UsageError, match="val_fraction"):
        load_chestxray14(official_root, val_fraction=1.5)
