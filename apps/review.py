"""The documented entry of the review app: ``streamlit run apps/review.py -- --root DIR --checkpoint CKPT``.

The page itself ships in the package as ``medres/app/review.py`` (what
``medres app`` starts). This file runs that module as ``__main__``, afresh on
every Streamlit rerun, exactly as if Streamlit had been pointed at it.
"""

from __future__ import annotations

import runpy

runpy.run_module("medres.app.review", run_name="__main__")
