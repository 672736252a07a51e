"""Reading NIfTI-1/2 (.nii, .nii.gz) as RAS+ volumes, as ``nibabel.as_closest_canonical``."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medres.errors import CorruptError, MedresError, TruncatedError, library_message
from medres.io.budget import check_size_budget
from medres.io.detect import GZIP_MAGIC
from medres.io.geometry import to_closest_canonical, voxel_spacing
from medres.io.image import Image

NIFTI2_HEADER_BYTES = 540


def read_nifti(path: str | Path, *, size_budget: int) -> Image:
    """Read a NIfTI file into ``(C, X, Y, Z)`` float32 in RAS+ voxel order.

    A 3D image has one channel; a 4D image's fourth axis (time, echoes,
    modalities) becomes the channel axis. Scaling (scl_slope/scl_inter) is applied.
    """
    try:
        image = _load_by_content(Path(path), size_budget)
        data = np.asarray(image.dataobj, dtype=np.float32)
        affine = image.affine
    except MedresError:
        raise
    except (EOFError, zlib.error) as error:
        raise TruncatedError("the file ends early", path=path, quoted=library_message(error)) from error
    except Exception as error:  # nibabel raises HeaderDataError, ValueError, OSError...
        message = library_message(error)
        if any(word in message.lower() for word in ("truncat", "end of", "too small", "buffer size")):
            raise TruncatedError("the file ends early", path=path, quoted=message) from error
        raise CorruptError("cannot read as NIfTI", path=path, quoted=f"{type(error).__name__}: {message}") from error
    channels = _channel_first(data, path)
    array, canonical_affine = to_closest_canonical(channels, affine)
    meta = {
        "source_format": "nifti",
        "geometry": "volume",
        "original_axis_codes": "".join(nib.aff2axcodes(affine)),
        "header_intent": str(image.header.get_intent()[0]),
    }
    return Image(array, voxel_spacing(canonical_affine), canonical_affine, meta, "OT")


def _load_by_content(path: Path, size_budget: int) -> nib.Nifti1Image:
    """Parse the header, check the budget, then load; gzip and NIfTI-2 recognised by content.

    nibabel picks a reader from the file extension; medres recognises formats by
    content, so the single-file image is built from its bytes instead.
    """
    with open(path, "rb") as stream:
        opener = gzip.open if stream.read(2) == GZIP_MAGIC else open
    with opener(path, "rb") as stream:
        head = stream.read(NIFTI2_HEADER_BYTES)
        image_class = nib.Nifti2Image if head[4:7] in (b"n+2", b"ni2") else nib.Nifti1Image
        header = image_class.header_class.from_fileobj(io.BytesIO(head))
        itemsize = np.dtype(header.get_data_dtype()).itemsize
        check_size_budget(header.get_data_shape(), max(itemsize, 4), size_budget, path)
        content = head + stream.read()
    return image_class.from_bytes(content)


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
