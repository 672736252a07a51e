"""One entry point for every image medres reads, :func:`read_image`, and the writers paired with it.

A writer takes the ``Image`` that ``read_image`` returned (its affine and the
source headers it kept), never the source path: :func:`write_labels_nifti`
here, and the DICOM SEG writer in :mod:`medres.io.dicom_seg` (not imported
here, so reading never loads highdicom).

The readers are imported when first used, not with the package: a submodule
such as :mod:`medres.io.safetensors_header` or :mod:`medres.io.budget` is then
imported without pydicom or nibabel, which keeps a command's start (and its
refusal of a wrong argument) quick.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from medres.errors import NotDicomError, NotFoundError, TruncatedError
from medres.io.budget import DEFAULT_SIZE_BUDGET
from medres.io.detect import detect_format
from medres.io.image import Image
from medres.lazy import lazy_attributes

if TYPE_CHECKING:
    from medres.io.nifti import write_labels_nifti

__all__ = ["Image", "read_image", "write_labels_nifti", "DEFAULT_SIZE_BUDGET"]

_READER_MODULES = {"dicom": ("medres.io.dicom", "read_dicom_file"), "nifti": ("medres.io.nifti", "read_nifti"),
                   "png": ("medres.io.raster", "read_raster"), "jpeg": ("medres.io.raster", "read_raster")}


def read_image(path: str | os.PathLike[str], *, size_budget: int = DEFAULT_SIZE_BUDGET) -> Image:
    """Read a DICOM file, a DICOM series folder, a NIfTI file or a PNG/JPEG into an ``Image``.

    The format is recognised by content, not by extension. Pixel data is never
    decoded before its size is checked against ``size_budget`` (bytes).

    Raises:
        MedresError: A subclass with a stable ``reason`` code for every bad input
            (``not_dicom``, ``truncated``, ``too_large``, ``mixed_series``, ...).
    """
    path = Path(path)
    if path.is_dir():
        from medres.io.series import read_dicom_series

        return read_dicom_series(path, size_budget=size_budget)
    try:
        if not path.exists():
            raise NotFoundError(path=path)
        if not path.is_file():
            raise NotDicomError("not a regular file", path=path)
        if path.stat().st_size == 0:
            raise TruncatedError("the file is empty", path=path)
        file_format = detect_format(path)
    except OSError as error:
        raise NotFoundError(f"cannot open ({error.strerror or error})", path=path) from error
    if file_format == "unknown":
        raise NotDicomError(path=path)
    module_name, function_name = _READER_MODULES[file_format]
    return getattr(importlib.import_module(module_name), function_name)(path, size_budget=size_budget)


__getattr__ = lazy_attributes(__name__, {"write_labels_nifti": "medres.io.nifti"})  # nibabel when first asked for
