"""PNG and JPEG: 8/16-bit grayscale kept, colour to luminance, bad files refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from medres.errors import MedresError
from medres.io import read_image


def test_16bit_png_keeps_its_values(sample_data):
    path = sample_data / "chest.png"
    expected = np.asarray(PILImage.open(path)).astype(np.float32)
    image = read_image(path)
    assert image.array.shape == (1, 256, 256) and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], expected)
    assert image.array.max() > 255 and image.meta["spacing_known"] is False


def test_8bit_png(tmp_path):
    pixels = np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) % 256
    PILImage.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").array[0], pixels)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_colour_becomes_luminance(tmp_path, suffix):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    PILImage.fromarray(rgb).save(tmp_path / f"c.{suffix}", quality=100)
    image = read_image(tmp_path / f"c.{suffix}")
    expected = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert image.array.shape == (1, 32, 32)
    assert abs(float(image.array.mean()) - expected) < 2
    assert image.meta["converted_from"] == "RGB"


def test_truncated_png_is_refused(tmp_path, sample_data):
    data = (sample_data / "chest.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(MedresError) as caught:
        read_image(tmp_path / "cut.png")
    assert caught.value.reason in ("truncated", "corrupt")


def test_png_over_budget_is_refused(sample_data):
    with pytest.raises(MedresError, match="size budget") as caught:
        read_image(sample_data / "chest.png", size_budget=1000)
    assert caught.value.reason == "too_large"
