"""Loaders of real data layouts: the ChestX-ray14 index and splits, MSD / nnU-Net volume datasets, their caches.

Synthetic stand-ins for these layouts (for the demo, tests, notebooks and
benchmarks) live in :mod:`medres.synthetic`, which imports from here; nothing
here imports it, so the real loaders never depend on the painter.
"""

SYNTHETIC_README = "README_SYNTHETIC.txt"
"""A file a data folder may carry to say that its contents are synthetic.

:mod:`medres.synthetic` writes it into every folder it generates; ``eval cxr``
and ``eval seg`` look for it so their reports can say the numbers describe no
real patient.
"""
