"""Reading PNG and JPEG images (8- or 16-bit grayscale; colour to luminance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from medres.errors import CorruptError, MedresError, TruncatedError, library_message
from medres.io.budget import check_size_budget
from medres.io.image import Image

BYTES_PER_SAMPLE = {"1": 1, "L": 1, "P": 1, "LA": 1, "RGB": 1, "RGBA": 1, "CMYK": 1, "YCbCr": 1,
                    "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def read_raster(path: str | Path, *, size_budget: int) -> Image:
    """Read a PNG/JPEG into ``(1, rows, cols)`` float32.

    Grayscale keeps its values (0-255 or 0-65535); colour becomes ITU-R 601-2
    luma (Pillow's ``convert("L")``), recorded in ``meta["converted_from"]``.
    Pixel spacing is unknown (1 mm, ``meta["spacing_known"] = False``): PNG/JPEG
    resolution fields hold screen dpi, not detector millimetres.
    """
    try:
        with PILImage.open(path) as image:
            check_size_budget((image.height, image.width, len(image.getbands())),
                              BYTES_PER_SAMPLE.get(image.mode, 4), size_budget, path)
            image.load()
            mode = image.mode
            array = _to_gray_array(image)
            image_format = (image.format or "").lower()
    except MedresError:
        raise
    except UnidentifiedImageError as error:
        raise CorruptError("starts like a PNG/JPEG but Pillow cannot identify it", path=path) from error
    except PILImage.DecompressionBombError as error:
        raise CorruptError("refused by Pillow's decompression-bomb guard", path=path,
                           quoted=library_message(error)) from error
    except (OSError, SyntaxError, ValueError) as error:
        message = library_message(error)
        if "truncated" in message.lower():
            raise TruncatedError("the image data ends early", path=path, quoted=message) from error
        raise CorruptError("cannot decode", path=path, quoted=message) from error
    meta = {"source_format": image_format, "mode": mode, "spacing_known": False, "geometry": "plane"}
    if mode not in ("L", "I;16", "I;16B", "I;16L", "I", "F", "1"):
        meta["converted_from"] = mode
    return Image(array[None], (1.0, 1.0), np.eye(4), meta, "OT")


def _to_gray_array(image: PILImage.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image).astype(np.float32)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)
