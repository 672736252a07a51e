"""Reading NIfTI-1/2 (.nii, .nii.gz) as RAS+ volumes, as ``nibabel.as_closest_canonical``."""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medres.errors import CorruptError, MedresError, TruncatedError
from medres.io.budget import check_size_budget
from medres.io.geometry import to_closest_canonical, voxel_spacing
from medres.io.image import Image


def read_nifti(path: str | Path, *, size_budget: int) -> Image:
    """Read a NIfTI file into ``(C, X, Y, Z)`` float32 in RAS+ voxel order.

    A 3D image has one channel; a 4D image's fourth axis (time, echoes,
    modalities) becomes the channel axis. Scaling (scl_slope/scl_inter) is applied.
    """
    try:
        image = nib.load(str(path))
        shape = tuple(int(n) for n in image.shape)
        check_size_budget(shape, 4, size_budget, path)
        data = np.asarray(image.dataobj, dtype=np.float32)
        affine = image.affine
    except MedresError:
        raise
    except (EOFError, zlib.error) as error:
        raise TruncatedError(f"the file ends early ({error})", path=path) from error
    except Exception as error:  # nibabel raises ImageFileError, ValueError, OSError...
        message = " ".join(str(error).split())[:300]
        if "truncat" in message.lower() or "end of" in message.lower() or "buffer is too small" in message:
            raise TruncatedError(f"the file ends early ({message})", path=path) from error
        raise CorruptError(f"cannot read as NIfTI ({type(error).__name__}: {message})", path=path) from error
    channels = _channel_first(data, path)
    array, canonical_affine = to_closest_canonical(channels, affine)
    meta = {
        "source_format": "nifti",
        "geometry": "volume",
        "original_axis_codes": "".join(nib.aff2axcodes(affine)),
        "header_intent": str(image.header.get_intent()[0]),
    }
    return Image(array, voxel_spacing(canonical_affine), canonical_affine, meta, "OT")


def _channel_first(data: np.ndarray, path) -> np.ndarray:
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0)
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C) as used for vector images
        return np.moveaxis(data[:, :, :, 0], -1, 0)
    raise CorruptError(f"{data.ndim}-dimensional NIfTI images are not supported", path=path)
