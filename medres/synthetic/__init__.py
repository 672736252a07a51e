"""Synthetic data for the demo, the tests, the notebooks and the benchmarks; never for a clinical purpose.

:mod:`~medres.synthetic.chestxray14` writes a ChestX-ray14 folder in NIH's
layout, with findings drawn by :mod:`~medres.synthetic.findings`;
:mod:`~medres.synthetic.phantoms` writes CT phantoms in the Medical
Segmentation Decathlon layout; :mod:`~medres.synthetic.dicom` writes DICOM
files and series with known content and geometry. Each generated folder carries
:data:`medres.data.SYNTHETIC_README`. The loaders in :mod:`medres.data` read
these folders exactly as they read the real data sets.
"""
