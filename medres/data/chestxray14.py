"""Index of NIH ChestX-ray14 as NIH distributes it: labels, splits, boxes, paths.

The index reads only the CSV and list files plus one directory listing per
image folder; it never opens an image, so indexing all 112,120 images takes
about a second. Splits are always by patient, because the same patient's
follow-up films look alike and would inflate AUROC if they crossed splits:
the official ``test_list.txt`` is the test set, validation patients are carved
from ``train_val_list.txt`` with a seeded draw, and without the lists a seeded
patient-level 70/10/20 split is used (``split_method`` says which).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from medres.errors import DatasetLayoutError, PatientLeakageError, UnknownLabelError, UsageError

LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
BOX_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
)
NO_FINDING = "No Finding"
LABEL_ALIASES = {"Infiltrate": "Infiltration"}  # BBox_List_2017.csv's spelling
SPLITS: tuple[str, ...] = ("train", "val", "test")
VIEWS: tuple[str, ...] = ("PA", "AP")
SEXES: tuple[str, ...] = ("M", "F")
LABEL_FILES: tuple[tuple[str, str], ...] = (("Data_Entry_2017_v2020.csv", "v2020"), ("Data_Entry_2017.csv", "2017"))
BOX_FILE = "BBox_List_2017.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
ARCHIVE_FOLDERS: tuple[str, ...] = tuple(f"images_{number:03d}" for number in range(1, 13))
SPLIT_OFFICIAL = "official_lists"
SPLIT_RANDOM = "random_patient"
MAX_PLAUSIBLE_AGE = 120
BOX_COLUMNS: tuple[str, ...] = ("image", "label", "x", "y", "w", "h")
_ENTRY_COLUMNS = {
    "Image Index": "image", "Finding Labels": "finding_labels", "Follow-up #": "follow_up",
    "Patient ID": "patient_id", "Patient Age": "age", "Patient Gender": "sex", "View Position": "view",
}
_OPTIONAL_COLUMNS = {
    "OriginalImage[Width": "original_width", "Height]": "original_height",
    "OriginalImagePixelSpacing[x": "pixel_spacing_x", "y]": "pixel_spacing_y",
}
_LABEL_COLUMN = {label: column for column, label in enumerate(LABELS)}
_AGE_UNITS_PER_YEAR = {"": 1.0, "Y": 1.0, "M": 12.0, "W": 52.0, "D": 365.0}


@dataclass(frozen=True, eq=False)
class ChestXray14Index:
    """One row per image present on disk, with its split, labels and subgroup columns.

    Attributes:
        root: The data set folder (absolute).
        table: Columns ``image, path, patient_id, split, <14 LABELS>, view, sex,
            age, age_as_recorded, follow_up`` and, when the CSV has them,
            ``original_width, original_height, pixel_spacing_x, pixel_spacing_y``.
            ``age`` is a nullable integer in years: ages over
            ``MAX_PLAUSIBLE_AGE`` (the real CSV has a few, e.g. 412) are set to
            missing so they cannot land in an "over 60" subgroup, while
            ``age_as_recorded`` keeps the parsed value for auditing.
        boxes: ``image, label, x, y, w, h`` for the table's images, labels in
            canonical spelling, coordinates as in the file (1024-pixel grid for NIH).
        label_version: ``"v2020"`` or ``"2017"``: which Data_Entry CSV was read.
        split_method: ``"official_lists"`` or ``"random_patient"``.
        split_detail: How the split was drawn (fractions and seed), for reports.
        n_missing: Images listed in the CSV (and assigned a split) but absent on
            disk, dropped; a partial download shows up here.
        n_unlisted: Images in neither official list, dropped (0 for NIH's files).
        filters: The ``subset`` filters applied, empty for the full index.
    """

    root: Path
    table: pd.DataFrame
    boxes: pd.DataFrame
    label_version: str
    split_method: str
    split_detail: str
    n_missing: int
    n_unlisted: int = 0
    filters: str = ""

    def label_counts(self) -> pd.DataFrame:
        """Positives per label (rows, canonical order) per split (columns), plus ``all``."""
        counts = self.table.groupby("split")[list(LABELS)].sum().T
        counts = counts.reindex(index=list(LABELS), columns=list(SPLITS), fill_value=0).astype("int64")
        counts["all"] = counts.sum(axis=1)
        return counts

    def subset(
        self,
        split: str | Iterable[str] | None = None,
        view: str | Iterable[str] | None = None,
        sex: str | Iterable[str] | None = None,
        age_range: tuple[float | None, float | None] | None = None,
    ) -> ChestXray14Index:
        """A new index restricted to a subgroup, e.g. for per-sex or per-view AUROC.

        Args:
            split: One split name or several; None keeps all.
            view: ``"PA"``/``"AP"`` or both; None keeps all.
            sex: ``"M"``/``"F"`` or both; None keeps all.
            age_range: ``(low, high)`` keeping ``low <= age < high`` (half-open so
                adjacent age bins never share a patient-year); either end may be
                None. Rows with a missing or implausible age are excluded.
        """
        table = self.table
        keep = np.ones(len(table), dtype=bool)
        applied = []
        for column, wanted, allowed in (("split", split, SPLITS), ("view", view, VIEWS), ("sex", sex, SEXES)):
            if wanted is not None:
                values = _look_up_options(column, wanted, allowed)
                keep &= table[column].isin(values).to_numpy()
                applied.append(f"{column}={'|'.join(values)}")
        if age_range is not None:
            keep &= _age_mask(table["age"], age_range)
            applied.append(f"age in [{age_range[0]}, {age_range[1]})")
        kept = table[keep].reset_index(drop=True)
        boxes = self.boxes[self.boxes["image"].isin(kept["image"])].reset_index(drop=True)
        filters = ", ".join(filter(None, [self.filters, *applied]))
        return replace(self, table=kept, boxes=boxes, filters=filters)

    def summary(self) -> str:
        """A short human-readable report: sizes per split, label version, split method, drops."""
        table = self.table
        lines = [
            f"ChestX-ray14 index of {self.root}",
            f"labels: {self.label_version}; split: {self.split_method} ({self.split_detail})",
            f"images: {len(table):,} from {table['patient_id'].nunique():,} patients; "
            f"{self.n_missing:,} missing on disk (dropped)"
            + (f"; {self.n_unlisted:,} in neither list (dropped)" if self.n_unlisted else ""),
        ]
        for split in SPLITS:
            rows = table[table["split"] == split]
            lines.append(f"  {split:<5} {len(rows):>8,} images {rows['patient_id'].nunique():>7,} patients")
        lines.append(f"boxes: {len(self.boxes):,} on {self.boxes['image'].nunique():,} images")
        if self.filters:
            lines.append(f"filters: {self.filters}")
        return "\n".join(lines)


def load_chestxray14(
    root: str | os.PathLike[str], val_fraction: float = 0.1, seed: int = 0, *, test_fraction: float = 0.2
) -> ChestXray14Index:
    """Index a ChestX-ray14 folder without reading any pixels.

    Args:
        root: Folder holding ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``)
            and ``images/`` or ``images_001/images/`` ... ``images_012/images/``.
        val_fraction: With the official lists, the share of ``train_val_list.txt``
            patients drawn for validation. Without them, the share of all patients
            (so the defaults give CheXNet's 70/10/20).
        seed: Seed of the patient draw; the same seed gives the same split.
        test_fraction: Share of all patients held out for test, used only when
            the official lists are absent.

    Raises:
        DatasetLayoutError: No label CSV, no image folder, missing columns,
            malformed values, or only one of the two list files.
        UnknownLabelError: A finding label outside ``LABELS`` (the message names it).
        PatientLeakageError: The official lists share a patient.
    """
    _check_fractions(val_fraction, test_fraction)
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetLayoutError("not a folder; point at the ChestX-ray14 folder", path=root)
    entries, label_version = read_data_entries(root)
    split, split_method, split_detail = assign_splits(entries, root, val_fraction, test_fraction, seed)
    entries.insert(1, "split", split)
    table, n_missing = _keep_images_on_disk(entries[split.notna()], root)
    check_no_patient_leakage(table)
    boxes = read_boxes(root)
    boxes = boxes[boxes["image"].isin(table["image"])].reset_index(drop=True)
    return ChestXray14Index(root, table, boxes, label_version, split_method, split_detail,
                            n_missing=n_missing, n_unlisted=int(split.isna().sum()))


def _keep_images_on_disk(listed: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, int]:
    """The rows whose file exists, with its absolute ``path``; and how many were missing."""
    paths = listed["image"].map(list_image_files(root))
    present = paths.notna()
    if not present.any():
        raise DatasetLayoutError(f"none of the {len(listed):,} listed images was found under images/ "
                                 "or images_0NN/images/; extract the archives there", path=root)
    table = listed[present].copy()
    table.insert(1, "path", paths[present].astype(str))
    table.insert(3, "split", table.pop("split").astype(str))
    return table.reset_index(drop=True), int((~present).sum())


def read_data_entries(root: Path) -> tuple[pd.DataFrame, str]:
    """Read the Data_Entry CSV (v2020 preferred) into typed columns plus the 14 label columns."""
    for file_name, version in LABEL_FILES:  # noqa: B007 (the pair the loop stops at is returned below)
        csv_path = root / file_name
        if csv_path.is_file():
            break
    else:
        names = " or ".join(name for name, _ in LABEL_FILES)
        raise DatasetLayoutError(f"no {names} here; download it from the NIH box folder", path=root)
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    raw.columns = [str(column).strip() for column in raw.columns]
    missing = [column for column in _ENTRY_COLUMNS if column not in raw.columns]
    if missing:
        raise DatasetLayoutError(f"missing columns {missing}; is this a ChestX-ray14 Data_Entry file?",
                                 path=csv_path)
    raw = raw.rename(columns={**_ENTRY_COLUMNS, **_OPTIONAL_COLUMNS})
    images = raw["image"].str.strip()
    if images.duplicated().any():
        raise DatasetLayoutError(f"image {images[images.duplicated()].iloc[0]} is listed twice", path=csv_path)
    entries = pd.DataFrame({"image": images})
    entries["patient_id"] = _to_integer(raw["patient_id"], images, "Patient ID", csv_path)
    entries = pd.concat([entries, encode_finding_labels(raw["finding_labels"], images, csv_path)], axis=1)
    entries["view"] = raw["view"].str.strip().str.upper()
    entries["sex"] = raw["sex"].str.strip().str.upper()
    recorded_ages = parse_ages(raw["age"])
    entries["age"] = recorded_ages.where(recorded_ages.le(MAX_PLAUSIBLE_AGE).fillna(False))
    entries["age_as_recorded"] = recorded_ages
    entries["follow_up"] = _to_integer(raw["follow_up"], images, "Follow-up #", csv_path)
    for column in _OPTIONAL_COLUMNS.values():
        if column in raw.columns:
            entries[column] = pd.to_numeric(raw[column].str.strip(), errors="coerce")
    return entries, version


def encode_finding_labels(findings: pd.Series, images: pd.Series, csv_path: Path) -> pd.DataFrame:
    """Turn ``"Effusion|Mass"`` strings into 14 0/1 columns; ``No Finding`` is all zeros.

    Raises:
        UnknownLabelError: Naming the first unknown label and an image that has it.
    """
    tokens = findings.reset_index(drop=True).str.split("|").explode().str.strip()
    codes = tokens.map(_LABEL_COLUMN).fillna(-1).to_numpy(dtype=np.int64)
    unknown = (codes < 0) & (tokens != NO_FINDING).to_numpy()
    if unknown.any():
        label, row = tokens[unknown].iloc[0], int(tokens.index[unknown][0])
        raise UnknownLabelError(
            f"unknown finding label {label!r} (image {images.iloc[row]}); valid labels: "
            f"{', '.join(LABELS)} and {NO_FINDING!r}", path=csv_path)
    matrix = np.zeros((len(findings), len(LABELS)), dtype=np.int64)
    known = codes >= 0
    matrix[tokens.index.to_numpy()[known], codes[known]] = 1
    return pd.DataFrame(matrix, columns=list(LABELS), index=findings.index)


def parse_ages(ages: pd.Series) -> pd.Series:
    """Ages in whole years from ``"58"`` or DICOM-style ``"058Y"``/``"006M"``; unparseable -> missing."""
    parts = ages.str.strip().str.upper().str.extract(r"^(\d+)\s*([YMWD]?)$")
    per_year = parts[1].map(_AGE_UNITS_PER_YEAR)
    years = np.floor(pd.to_numeric(parts[0], errors="coerce") / per_year)
    return years.astype("Int64")


def assign_splits(
    entries: pd.DataFrame, root: Path, val_fraction: float, test_fraction: float, seed: int
) -> tuple[pd.Series, str, str]:
    """The split of every CSV row (missing when in neither official list), the method and its detail.

    Splits are drawn over all CSV rows, before missing files are dropped, so a
    patient's split does not change as a partial download completes.
    """
    lists = read_split_lists(root)
    rng = np.random.default_rng(seed)
    patients = entries["patient_id"]
    if lists is None:
        shuffled = rng.permutation(np.unique(patients))
        n_test = _share(test_fraction, len(shuffled))
        n_val = min(_share(val_fraction, len(shuffled)), len(shuffled) - n_test)
        split = pd.Series("train", index=entries.index, dtype=object)
        split[patients.isin(shuffled[:n_test])] = "test"
        split[patients.isin(shuffled[n_test:n_test + n_val])] = "val"
        detail = f"test {test_fraction:.0%} and val {val_fraction:.0%} of patients, seed {seed}"
        return split, SPLIT_RANDOM, detail
    train_val_names, test_names = lists
    in_test, in_train_val = entries["image"].isin(test_names), entries["image"].isin(train_val_names)
    memberships = pd.concat([entries.loc[in_test, ["image", "patient_id"]].assign(split=TEST_LIST),
                             entries.loc[in_train_val, ["image", "patient_id"]].assign(split=TRAIN_VAL_LIST)])
    check_no_patient_leakage(memberships, path=root)  # also catches an image listed in both
    train_val_patients = rng.permutation(np.unique(patients[in_train_val]))
    val_patients = train_val_patients[:_share(val_fraction, len(train_val_patients))]
    split = pd.Series(None, index=entries.index, dtype=object)
    split[in_train_val] = "train"
    split[in_train_val & patients.isin(val_patients)] = "val"
    split[in_test] = "test"
    return split, SPLIT_OFFICIAL, f"val {val_fraction:.0%} of train_val patients, seed {seed}"


def read_split_lists(root: Path) -> tuple[set[str], set[str]] | None:
    """Image names of ``train_val_list.txt`` and ``test_list.txt``; None when both are absent."""
    train_val_path, test_path = root / TRAIN_VAL_LIST, root / TEST_LIST
    present = [path.is_file() for path in (train_val_path, test_path)]
    if not any(present):
        return None
    if not all(present):
        found, absent = (TRAIN_VAL_LIST, TEST_LIST) if present[0] else (TEST_LIST, TRAIN_VAL_LIST)
        raise DatasetLayoutError(f"found {found} but not {absent}; provide both official lists or neither",
                                 path=root)
    return _read_names(train_val_path), _read_names(test_path)


def check_no_patient_leakage(table: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> None:
    """Raise if any patient has images in two splits (columns ``image, patient_id, split``).

    Raises:
        PatientLeakageError: Naming one such patient and an image in each split.
    """
    splits_per_patient = table.groupby("patient_id")["split"].nunique()
    leaking = splits_per_patient.index[splits_per_patient > 1]
    if len(leaking) == 0:
        return
    patient = leaking[0]
    rows = table[table["patient_id"] == patient].drop_duplicates("split")
    examples = ", ".join(f"{image} in {split}" for image, split in zip(rows["image"], rows["split"]))
    raise PatientLeakageError(
        f"patient {patient} appears in more than one split ({examples}); {len(leaking)} patient(s) "
        "affected. Splits must be by patient: fix the lists or delete them to use a random patient split",
        path=path)


def list_image_files(root: Path) -> dict[str, str]:
    """Map image file name -> absolute path with one directory listing per image folder.

    ``os.scandir`` reports file types from the listing itself, so 112k files
    cost 13 listings rather than 112k ``stat`` calls.
    """
    folders = [root / "images", *(root / archive / "images" for archive in ARCHIVE_FOLDERS)]
    if not any(folder.is_dir() for folder in folders):
        raise DatasetLayoutError("no images/ or images_001/images/ ... images_012/images/ folder; "
                                 "extract the image archives here", path=root)
    found: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name not in found and entry.is_file():
                    found[entry.name] = entry.path
    return found


def read_boxes(root: Path) -> pd.DataFrame:
    """``BBox_List_2017.csv`` as ``image, label, x, y, w, h`` (``Infiltrate`` -> ``Infiltration``).

    The file's header splits ``Bbox [x,y,w,h]`` over four columns and ends with
    empty unnamed ones, so columns are taken by position. Absent file -> empty table.
    """
    box_path = root / BOX_FILE
    if not box_path.is_file():
        return pd.DataFrame({"image": pd.Series(dtype=object), "label": pd.Series(dtype=object),
                             **{column: pd.Series(dtype=float) for column in BOX_COLUMNS[2:]}})
    raw = pd.read_csv(box_path, dtype=str, keep_default_na=False)
    if raw.shape[1] < len(BOX_COLUMNS):
        raise DatasetLayoutError("expected columns Image Index, Finding Label, Bbox [x, y, w, h]", path=box_path)
    boxes = raw.iloc[:, :len(BOX_COLUMNS)].copy()
    boxes.columns = list(BOX_COLUMNS)
    boxes["image"] = boxes["image"].str.strip()
    boxes["label"] = boxes["label"].str.strip().replace(LABEL_ALIASES)
    unknown = ~boxes["label"].isin(LABELS)
    if unknown.any():
        raise UnknownLabelError(f"unknown box label {boxes['label'][unknown].iloc[0]!r} (image "
                                f"{boxes['image'][unknown].iloc[0]}); valid labels: {', '.join(LABELS)}",
                                path=box_path)
    for column in BOX_COLUMNS[2:]:
        values = pd.to_numeric(boxes[column].str.strip(), errors="coerce")
        if values.isna().any():
            raise DatasetLayoutError(f"non-numeric box coordinate for {boxes['image'][values.isna()].iloc[0]}",
                                     path=box_path)
        boxes[column] = values.astype(float)
    return boxes.reset_index(drop=True)


def _read_names(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _to_integer(values: pd.Series, images: pd.Series, column: str, csv_path: Path) -> pd.Series:
    numbers = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        raise DatasetLayoutError(f"{column} {values[bad].iloc[0]!r} of image {images[bad].iloc[0]} "
                                 "is not an integer", path=csv_path)
    return numbers.astype("int64")


def _share(fraction: float, count: int) -> int:
    """Patients for a split: rounded, but at least one when the fraction is positive and >1 remain."""
    if fraction <= 0 or count == 0:
        return 0
    return min(count, max(1, round(fraction * count))) if count > 1 else 0


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UsageError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise UsageError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")


def _look_up_options(name: str, wanted: str | Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    values = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise UsageError(f"unknown {name} {unknown[0]!r}; valid: {', '.join(allowed)}")
    return values


def _age_mask(ages: pd.Series, age_range: tuple[float | None, float | None]) -> np.ndarray:
    low, high = age_range
    if low is not None and high is not None and low >= high:
        raise UsageError(f"age_range low must be below high, got {age_range}")
    mask = ages.notna()
    if low is not None:
        mask &= ages >= low
    if high is not None:
        mask &= ages < high
    return mask.fillna(False).to_numpy(dtype=bool)
