"""``medres eval cxr`` and ``medres eval seg``: predictions on a held-out split, metrics, reports.

The orchestration lives here; the numbers come from the pure functions of
:mod:`medres.metrics`. :mod:`~medres.evaluate.cxr` (chest X-ray classifier:
predict, bootstrap, thresholds chosen on validation, calibrated checkpoint),
:mod:`~medres.evaluate.localisation` (Grad-CAM against the data's boxes),
:mod:`~medres.evaluate.cxr_report` and :mod:`~medres.evaluate.plots` (what it
writes) and :mod:`~medres.evaluate.seg` (Dice, HD95, NSD of segmentations).
"""
