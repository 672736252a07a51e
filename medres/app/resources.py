"""Models shared by every session of the app, loaded once (``st.cache_resource``).

Only the weights are shared; what a model computes for a user goes into that
user's session state (see :mod:`medres.app.state`), and each use holds the
model's lock (see :mod:`medres.app.analysis`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from medres.app.analysis import LoadedModel, load_model


@st.cache_resource(show_spinner="Loading the classifier ...")
def classifier(checkpoint: str) -> LoadedModel:
    """The chest X-ray classifier of ``checkpoint``, loaded once per app process."""
    return load_model(Path(checkpoint), task="cxr")


@st.cache_resource(show_spinner="Loading the segmentation model ...")
def segmenter(checkpoint: str) -> LoadedModel:
    """The segmentation model of ``checkpoint``, loaded once per app process."""
    return load_model(Path(checkpoint), task="seg")
