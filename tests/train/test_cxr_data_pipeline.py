"""The preprocessing cache and the PNG loader give identical tensors; losses; --init checks."""

from __future__ import annotations

import pytest
import torch

from medres.data.chestxray14 import load_chestxray14
from medres.data.cxr_dataset import CxrDataset, prepare_cxr_cache
from medres.models import create_model
from medres.synthetic.chestxray14 import make_chestxray14
from medres.train.cxr import bce_loss
from medres.transforms.cxr import Augmentation, CxrInputTransform


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr")
    make_chestxray14(root, 40, seed=3, image_size=96)
    return load_chestxray14(root)


@pytest.mark.parametrize("augment", [False, True])
def test_cache_and_png_loaders_give_the_same_tensors(small_data, tmp_path, augment):
    card = create_model("chexnet_tiny", input_size=(48, 48)).card
    cache = prepare_cxr_cache(small_data.table, tmp_path / "cache", size=64, workers=1, progress=False)
    transform = CxrInputTransform(card, Augmentation() if augment else None, seed=7)
    from_cache = CxrDataset(small_data.table, transform, cache)
    from_files = CxrDataset(small_data.table, transform, None, stored_size=64)
    for epoch in (0, 1):
        from_cache.set_epoch(epoch)
        from_files.set_epoch(epoch)
        for index in range(len(from_cache)):
            cached_input, cached_labels = from_cache[index]
            file_input, file_labels = from_files[index]
            assert cached_input.shape == (1, 48, 48)
            torch.testing.assert_close(cached_input, file_input, rtol=0, atol=0)
            torch.testing.assert_close(cached_labels, file_labels)


def test_cache_is_reused_and_never_half_written(small_data, tmp_path):
    first = prepare_cxr_cache(small_data.table, tmp_path / "cache", size=32, workers=1, progress=False)
    stamp = (first.folder / "images.u8").stat().st_mtime_ns
    again = prepare_cxr_cache(small_data.table, tmp_path / "cache", size=32, workers=1, progress=False)
    assert (again.folder / "images.u8").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.partial"))


def test_augmentation_depends_only_on_seed_epoch_and_index(small_data):
    card = create_model("chexnet_tiny").card
    dataset = CxrDataset(small_data.table, CxrInputTransform(card, Augmentation(), seed=1), None, 64)
    first, _ = dataset[3]
    again, _ = dataset[3]
    dataset.set_epoch(1)
    other_epoch, _ = dataset[3]
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other_epoch)


def test_class_weighted_loss_uses_negatives_over_positives():
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    loss = bce_loss(labels, class_weighted=True)
    torch.testing.assert_close(loss.pos_weight, torch.tensor([1.0, 3.0]))
    assert bce_loss(labels, class_weighted=False).pos_weight is None


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float64"])
def test_min_max_scaling_equals_monais_scale_intensity(dtype):
    """``scale_to_unit`` (written out so decoders skip importing MONAI) against MONAI's ``ScaleIntensity(0, 1)``."""
    import numpy as np
    from monai.transforms import ScaleIntensity

    from medres.transforms.cxr import scale_to_unit

    rng = np.random.default_rng(4)
    radiograph = (rng.normal(800, 300, size=(1, 97, 131)).clip(-1000, 4095)).astype(dtype)
    expected = np.asarray(ScaleIntensity(minv=0.0, maxv=1.0)(radiograph.astype(np.float32)))
    assert np.array_equal(scale_to_unit(radiograph).numpy(), expected)
    constant = np.full((1, 8, 8), 7, dtype=dtype)
    assert np.array_equal(scale_to_unit(constant).numpy(), np.asarray(ScaleIntensity(minv=0.0, maxv=1.0)(
        constant.astype(np.float32))))
