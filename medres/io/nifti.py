"""NIfTI-1/2 (.nii, .nii.gz): reading as RAS+ volumes (as ``nibabel.as_closest_canonical``), and writing labels back.

The reader and the label writer are a pair, as nnU-Net's ``NibabelIOWithReorient``:
the reader keeps the file's header on the ``Image`` (``sources``), and the
writer uses it to put labels computed on the RAS+ volume back into the file's
own voxel order under a copy of that header, so the qform, sform and their
codes - hence the affine any tool reads - are exactly the input's. Labels for
an image read from elsewhere (a DICOM series) are written in RAS+ order with
the image's affine.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from medres.errors import CorruptError, GeometryMismatchError, MedresError, TruncatedError, library_message
from medres.io.budget import check_size_budget
from medres.io.detect import GZIP_MAGIC
from medres.io.geometry import to_closest_canonical, voxel_spacing
from medres.io.image import Image

NIFTI2_HEADER_BYTES = 540
RAS_ORIENTATION = np.array([[0, 1], [1, 1], [2, 1]])
GRID_TOLERANCE_MM = 1e-4  # float32 headers: how far the implied affine may differ from the file's


def read_nifti(path: str | Path, *, size_budget: int) -> Image:
    """Read a NIfTI file into ``(C, X, Y, Z)`` float32 in RAS+ voxel order.

    A 3D image has one channel; a 4D image's fourth axis (time, echoes,
    modalities) becomes the channel axis. Scaling (scl_slope/scl_inter) is applied.
    The file's header stays on the image (``sources``) for :func:`write_labels_nifti`.
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
    return Image(array, voxel_spacing(canonical_affine), canonical_affine, meta, "OT", sources=(image.header,))


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


def write_labels_nifti(labels: np.ndarray, image: Image, out_path: str | Path) -> Path:
    """Write uint8 labels that lie on ``image``'s grid, so they overlay the image in any viewer.

    For an image read from NIfTI, in the file's voxel order under a copy of its
    header (intent "label", no scaling); otherwise in RAS+ order with
    ``image.affine`` and millimetre units.

    Args:
        labels: ``(X, Y, Z)`` labels on the image's RAS+ grid (its spatial shape and affine).
        image: The image the labels were computed for, as :func:`medres.io.read_image` returned it.
        out_path: The ``.nii`` or ``.nii.gz`` to write (its folder is created).

    Raises:
        GeometryMismatchError: The labels are not on the image's grid.
    """
    labels = np.asarray(labels)
    if labels.shape != image.spatial_shape[:3]:
        raise GeometryMismatchError(f"labels of shape {labels.shape} do not lie on the image's grid "
                                    f"{image.spatial_shape[:3]}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = source_nifti_header(image)
    if header is None:
        written = nib.Nifti1Image(labels.astype(np.uint8), image.affine)
        written.header.set_xyzt_units("mm")
    else:
        stored = labels_in_source_order(labels, image.affine, header)
        header = header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        header.set_intent("label")
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        written = image_class(stored.astype(np.uint8), None, header)
    nib.save(written, out_path)
    return out_path


def source_nifti_header(image: Image) -> nib.Nifti1Header | None:
    """The header of the NIfTI file ``image`` was read from (NIfTI-2 headers included), or None."""
    header = image.sources[0] if len(image.sources) == 1 else None
    return header if isinstance(header, nib.Nifti1Header) else None


def labels_in_source_order(labels_ras: np.ndarray, affine_ras: np.ndarray, header: nib.Nifti1Header) -> np.ndarray:
    """Labels put back into the source file's voxel order (the inverse of the reader's reorientation).

    Raises:
        GeometryMismatchError: The labels' grid is not the file's grid reoriented to RAS+.
    """
    source_affine = header.get_best_affine()
    source_shape = tuple(header.get_data_shape()[:3])
    back = ornt_transform(RAS_ORIENTATION, io_orientation(source_affine))
    stored = apply_orientation(labels_ras, back)
    implied_affine = np.asarray(affine_ras) @ inv_ornt_aff(back, labels_ras.shape)
    if stored.shape != source_shape or not np.allclose(implied_affine, source_affine, atol=GRID_TOLERANCE_MM):
        raise GeometryMismatchError(f"labels of shape {labels_ras.shape} do not lie on the input's grid "
                                    f"{source_shape}")
    return np.ascontiguousarray(stored)
