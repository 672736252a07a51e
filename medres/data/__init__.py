"""Data sets: ChestX-ray14 index, synthetic data and DICOM writers."""
