"""The plain way to segment a NIfTI volume with MONAI: the reference ``bench_segment.py`` times as a process.

    python benchmarks/plain_segment.py VOLUME.nii.gz CHECKPOINT OUT.nii.gz

What a MONAI user writes: ``nibabel`` load -> z-score over the volume ->
``monai.inferers.sliding_window_inference`` with its defaults (``sw_batch_size=1``,
``overlap=0.25``, constant blending, fp32) over the card's window size -> argmax
-> save as ``uint8`` NIfTI with the input's affine. The input is expected at
the model's spacing (no resampling), as the benchmark's volume is. The model is
MONAI's ``UNet`` as ``resunet3d`` configures it, with the checkpoint's tensors
(safetensors; the keys are MONAI's); window size and labels come from the
checkpoint's card.
Run as its own process, it pays the interpreter's start-up and its imports.
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from safetensors.torch import load_file

from medres.models import read_card


def load_resunet3d(checkpoint: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """MONAI's residual U-Net (``resunet3d``'s settings) with the checkpoint's weights; and its window size."""
    card = read_card(checkpoint)
    model = UNet(spatial_dims=3, in_channels=card.in_channels, out_channels=len(card.labels),
                 channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
    model.load_state_dict(load_file(checkpoint))
    return model.eval(), tuple(card.input_size)


def main(volume_path: str, checkpoint: str, out_path: str) -> None:
    model, window = load_resunet3d(checkpoint)
    volume = nib.load(volume_path)
    array = np.asarray(volume.dataobj, dtype=np.float32)
    array = (array - array.mean()) / max(float(array.std()), 1e-8)
    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(array)[None, None], window, 1, model)
    labels = logits[0].argmax(dim=0).to(torch.uint8).numpy()
    nib.save(nib.Nifti1Image(labels, volume.affine), out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
