"""medres: chest X-ray classification, CT/MRI segmentation, batch DICOM scoring, review app."""

from __future__ import annotations

__version__ = "0.1.0"
