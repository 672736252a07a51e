"""Every file shipped with pydicom and pydicom-data is read or refused with a reason."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medres.errors import MedresError
from medres.io import read_image
from tests.conftest import pydicom_data_dir, pydicom_test_files_dir

# Files that are images and that medres must read (not merely refuse).
MUST_READ = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "JPEG2000.dcm",
    "JPEGLSNearLossless_16.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm",
    "RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "JPEG-LL.dcm", "US1_J2KR.dcm", "OBXXXX1A_rle.dcm",
    "emri_small_jpeg_ls_lossless.dcm", "examples_ybr_color.dcm", "examples_palette.dcm", "image_dfl.dcm",
]


def corpus_files():
    folders = (pydicom_test_files_dir(), pydicom_data_dir())
    return sorted(path for folder in folders for path in folder.rglob("*") if path.is_file()
                  and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc"))


def test_every_shipped_file_is_read_or_refused_with_a_reason(capsys):
    tally: Counter[str] = Counter()
    read_names = set()
    for path in corpus_files():
        try:
            image = read_image(path)
        except MedresError as error:
            assert error.reason and str(path) in str(error)
            tally[f"refused:{error.reason}"] += 1
            continue
        assert image.array.dtype == np.float32 and image.array.shape[0] >= 1
        assert np.isfinite(image.array).all(), path
        assert image.affine.shape == (4, 4)
        tally["read"] += 1
        read_names.add(path.name)
    with capsys.disabled():
        print("\nDICOM corpus tally:", dict(sorted(tally.items())))
    assert not set(MUST_READ) - read_names
    assert tally["read"] > 100


@pytest.mark.parametrize("name", MUST_READ)
def test_must_read_files_have_image_geometry(name):
    from tests.conftest import dicom_test_file

    image = read_image(dicom_test_file(name))
    assert image.array.ndim in (3, 4)
    assert all(value > 0 for value in image.spacing)
