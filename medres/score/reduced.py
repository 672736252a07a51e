"""Decoding JPEG 2000 radiographs at a reduced resolution (``--reduced-j2k``).

JPEG 2000 stores an image as a wavelet pyramid, so a decoder can stop
``r`` levels early and return the image at ``1 / 2**r`` of its size for a
fraction of the work. Preprocessing shrinks every radiograph to the card's
stored size (256 px) anyway, so decoding a 2,000-pixel film at 500 px loses
nothing the model could see, for a fraction of the decoding work with OpenJPEG
through Pillow (``Image.reduce``; ``benchmarks/RESULTS.md`` has the ratio), and
decoding, not the network, is what bounds scoring of compressed archives.

The reduced image is the wavelet low-pass band, not an antialiased bilinear
resize, so scores differ slightly from full decoding (the benchmark reports
by how much); that is why this is an option, not the default.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from medres.io.assemble import image_from_frames
from medres.io.budget import check_size_budget
from medres.io.dicom import apply_pixel_semantics, read_dicom_dataset, translate_errors
from medres.io.image import Image
from medres.models.card import ModelCard

JPEG2000_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
PILLOW_GRAY_MODES = frozenset({"L", "I;16", "I;16L", "I;16B", "I"})


def reduction_levels(rows: int, columns: int, target: int) -> int:
    """The most halvings that keep the shorter side at least ``target`` pixels."""
    levels, side = 0, min(rows, columns)
    while side // 2 >= target:
        side //= 2
        levels += 1
    return levels


def decode_reduced_if_j2k(dataset: Dataset, path: Path, card: ModelCard, size_budget: int) -> Image | None:
    """The image decoded at reduced resolution, or ``None`` where that does not apply.

    Applies to single-frame, single-sample, unsigned JPEG 2000 files larger
    than twice the stored size; everything else goes through the normal decoder.
    """
    syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    simple = (int(dataset.get("NumberOfFrames", 1) or 1) == 1 and int(dataset.get("SamplesPerPixel", 1) or 1) == 1
              and int(dataset.get("PixelRepresentation", 0) or 0) == 0)
    levels = reduction_levels(rows, columns, card.stored_size)
    if syntax not in JPEG2000_SYNTAXES or not simple or levels == 0:
        return None
    bits = int(dataset.get("BitsAllocated", 16) or 16)
    check_size_budget((rows, columns), max(1, (bits + 7) // 8), size_budget, path)
    with translate_errors(path):
        full = read_dicom_dataset(path, defer_pixels=False)
        codestream = next(generate_frames(full.PixelData, number_of_frames=1))
    decoded = _decode_reduced(codestream, levels)
    if decoded is None:
        return None
    stored, levels = decoded
    dtype = np.uint8 if bits <= 8 else np.uint16
    frames = stored.astype(dtype)[None]
    values = apply_pixel_semantics(frames, dataset, path)
    image = image_from_frames(values, dataset, path)
    image.meta["reduced_resolution_levels"] = levels
    return image


def _decode_reduced(codestream: bytes, levels: int) -> tuple[np.ndarray, int] | None:
    """Decode at ``levels`` halvings, or fewer where OpenJPEG/Pillow refuse; ``None`` if all fail.

    Returns:
        The stored values and the number of halvings used.

    Some valid codestreams (pydicom-data's ``RG1_J2KR.dcm``) decode at one
    halving but not at two; a refusal is quick, so trying fewer levels costs
    little, and a file none of them suits is decoded in full by the caller.
    """
    for attempt in range(levels, 0, -1):
        try:
            with PILImage.open(io.BytesIO(codestream)) as picture:
                picture.reduce = attempt
                picture.load()
                if picture.mode not in PILLOW_GRAY_MODES:
                    return None
                return np.asarray(picture), attempt
        except (OSError, ValueError, SyntaxError):
            continue
    return None
