"""The plain way to segment a NIfTI volume with MONAI: the reference ``bench_segment.py`` times as a process.

    python benchmarks/plain_segment.py VOLUME.nii.gz CHECKPOINT OUT.nii.gz

What a MONAI user writes: ``nibabel`` load -> z-score over the volume ->
``monai.inferers.sliding_window_inference`` with its defaults (``sw_batch_size=1``,
``overlap=0.25``, constant blending, fp32) over the card's window size -> argmax
-> save as ``uint8`` NIfTI with the input's affine. The input is expected at
the model's spacing (no resampling), as the benchmark's volume is. The model
comes from the same checkpoint through :func:`medres.models.load_checkpoint`.
Run as its own process, it pays the interpreter's start-up and its imports.
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medres.models import load_checkpoint


def main(volume_path: str, checkpoint: str, out_path: str) -> None:
    model = load_checkpoint(checkpoint)
    volume = nib.load(volume_path)
    array = np.asarray(volume.dataobj, dtype=np.float32)
    array = (array - array.mean()) / max(float(array.std()), 1e-8)
    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(array)[None, None], model.card.input_size, 1, model)
    labels = logits[0].argmax(dim=0).to(torch.uint8).numpy()
    nib.save(nib.Nifti1Image(labels, volume.affine), out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
