"""medres review app (Streamlit): the page's layout only; the logic lives in the rest of ``medres.app``.

Start it with ``medres app --root DIR --checkpoint CKPT [--seg-checkpoint CKPT]``,
which runs this file with ``streamlit run`` (it ships in the wheel, so an
installed medres has its app). Streamlit executes the file from the top on
every interaction, as ``__main__``: the configuration is read again each time,
and :func:`main` draws the page. ``apps/review.py`` in the source tree runs
this same file. Research use only, not for diagnosis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from medres.app import analysis, files, header, resources, state, views, volume, worklist
from medres.errors import MedresError
from medres.io import read_image

CONFIG = state.load_config()
SESSION = st.session_state
NO_NAMES_SOURCE = "none found (no model card, medres segment volumes.json or dataset.json), so values are numbered"


def show_error(error: MedresError) -> None:
    st.error(f"{error.reason}: {error}")


def load_classifier() -> analysis.LoadedModel | None:
    if CONFIG.checkpoint is None:
        return None
    try:
        return resources.classifier(str(CONFIG.checkpoint))
    except MedresError as error:
        show_error(error)
        return None


def sidebar(model: analysis.LoadedModel | None) -> str:
    st.sidebar.title("medres review")
    if "next_mode" in SESSION:
        SESSION["mode"] = SESSION.pop("next_mode")
    mode = st.sidebar.radio("View", ["Case", "Worklist"], key="mode")
    st.sidebar.caption(f"Root: {CONFIG.root}" if CONFIG.root else "No root folder configured")
    with st.sidebar.expander("Model card"):
        if model is None:
            st.write("No classifier loaded (start the app with --checkpoint).")
        else:
            st.caption(f"checkpoint sha256 {model.sha256[:16]}…")
            st.json(analysis.card_summary(model.card), expanded=False)
    return mode


def open_path(relative: str, **extra) -> None:
    try:
        path = files.resolve_case_path(CONFIG.root, relative)
        state.open_case(SESSION, path, relative or ".", "root", **extra)
    except MedresError as error:
        show_error(error)


def browse_panel() -> None:
    current = SESSION.get(state.BROWSE_DIR, "")
    try:
        entries = files.list_folder(CONFIG.root, current)
    except MedresError as error:
        show_error(error)
        SESSION[state.BROWSE_DIR], entries = "", []
    st.caption(f"Folder: /{current}")
    labels = {entry.relative: entry.name + ("/" if entry.is_dir else "") for entry in entries}
    chosen = st.selectbox("File or series folder", list(labels), format_func=labels.get, key="browse_choice")
    left, middle, right = st.columns(3)
    if left.button("Open", key="browse_open", disabled=chosen is None):
        open_path(chosen)
    if middle.button("Enter folder", key="browse_enter", disabled=chosen is None):
        SESSION[state.BROWSE_DIR] = chosen
        st.rerun()
    if right.button("Up", key="browse_up", disabled=not current):
        SESSION[state.BROWSE_DIR] = files.parent_of(current)
        st.rerun()
    typed = st.text_input("Or type a path relative to the root", key="browse_path")
    if st.button("Open path", key="browse_open_path") and typed:
        open_path(typed)


def upload_panel() -> None:
    refusal_slot = st.empty()  # above the uploader; filled after the upload (if any) has been handled
    receive_upload()
    if state.UPLOAD_REFUSAL in SESSION:
        refusal_slot.error(SESSION[state.UPLOAD_REFUSAL])


def receive_upload() -> None:
    uploads = st.file_uploader("DICOM file(s) of one series, NIfTI or PNG", accept_multiple_files=True,
                               key=state.upload_widget_key(SESSION), max_upload_size=CONFIG.upload_limit_mb,
                               help=f"Checked by content; at most {CONFIG.upload_limit_mb} MB.")
    if not uploads:
        return
    signature = tuple(item.file_id for item in uploads)
    if SESSION.get(state.UPLOAD_KEY) == signature:
        return
    SESSION[state.UPLOAD_KEY] = signature
    SESSION.pop(state.UPLOAD_REFUSAL, None)
    folder = state.replace_upload_folder(SESSION)
    try:
        target = files.save_uploads(folder, [(item.name, item.getvalue()) for item in uploads],
                                    CONFIG.upload_limit_bytes)
        state.open_case(SESSION, target, uploads[0].name if len(uploads) == 1 else f"{len(uploads)} files",
                        "upload")
    except MedresError as error:
        state.refuse_upload(SESSION, f"{error.reason}: {error}")
        st.rerun()  # draw the emptied uploader now, so the next file goes into a widget that is read


def xray_window(image_array: np.ndarray) -> tuple[float, float]:
    presets = state.computed(SESSION, ("xray_presets",), lambda: views.xray_presets(image_array))
    choice = st.selectbox("Window preset", [*presets, "Manual"], index=1, key="xray_preset")
    level, width = presets.get(choice, presets["Standard (1-99 %)"])
    if choice == "Manual":
        low, high = float(image_array.min()), float(image_array.max())
        span = max(high - low, 1e-3)
        high = low + span
        level = st.slider("Level", low, high, level, key="xray_level")
        width = st.slider("Width", span / 100, span * 2, max(span / 100, min(width, span * 2)), key="xray_width")
    return level, width


def xray_view(case: state.Case, model: analysis.LoadedModel | None) -> None:
    image_column, chart_column = st.columns([3, 2])
    with chart_column:
        level, width = xray_window(case.image.array[0])
    gray = views.fit_for_display(views.apply_window(case.image.array[0], level, width))
    refusal = analysis.scope_refusal(case.image)
    if model is None or refusal is not None:
        image_column.image(gray, caption=case.name, width="stretch")
        if refusal is not None:
            chart_column.error(f"Out of scope for the chest X-ray model - {refusal.reason}: {refusal.detail}")
            chart_column.info("No probabilities or Grad-CAM are computed for this image: the model's numbers "
                              "would mean nothing here (`medres score` skips it for the same reason).")
        else:
            st.info("No classifier loaded: start the app with --checkpoint to see scores and Grad-CAM.")
        return
    scores = state.computed(SESSION, ("scores",), lambda: analysis.score_xray(model, case.image))
    table = views.probability_table(scores.probabilities, scores.thresholds)
    with chart_column:
        st.markdown(views.positive_calls_text(table))
        st.altair_chart(views.probability_chart(table), width="stretch")
        st.caption(views.threshold_caption(scores.thresholds))
        st.download_button("Download scores (JSON)", analysis.scores_json(scores, model, case.name),
                           file_name="scores.json", mime="application/json", key="download_scores", on_click="ignore")
    with image_column:
        overlay_panel(case, model, gray, list(table["label"]))


def overlay_panel(case: state.Case, model: analysis.LoadedModel, gray: np.ndarray, ranked: list[str]) -> None:
    default = ranked.index(case.preferred_label) if case.preferred_label in ranked else 0
    controls = st.columns([3, 3, 2, 2])
    label = controls[0].selectbox("Class", ranked, index=default, key="cam_class", format_func=views.finding_name)
    method = controls[1].radio("Method", ["gradcam", "gradcam++"], key="cam_method", horizontal=True)
    colormap = controls[2].selectbox("Colormap", views.COLORMAPS, key="cam_colormap")
    side_by_side = controls[3].checkbox("Side by side", key="cam_side_by_side")
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="cam_opacity")
    heat = state.computed(SESSION, ("cam", label, method),
                          lambda: analysis.explain_xray(model, case.image, label, method, gray.shape))
    overlay = views.heatmap_overlay(gray, heat, opacity, colormap)
    finding = views.finding_name(label)
    if side_by_side:
        left, right = st.columns(2)
        left.image(gray, caption=case.name, width="stretch")
        right.image(overlay, caption=f"Grad-CAM: {finding}", width="stretch")
    else:
        st.image(overlay, caption=f"{case.name} - Grad-CAM: {finding} (peak brightness = probability)",
                 width="stretch")
    st.download_button("Download overlay (PNG)", views.to_png(overlay), file_name=f"gradcam_{label}.png",
                       mime="image/png", key="download_overlay", on_click="ignore")
    if case.heatmap_path is not None:
        st.image(state.heatmap_image(case.heatmap_path), caption="Heatmap written by medres score")


def volume_window(modality: str, data: np.ndarray) -> tuple[float, float]:
    auto = state.computed(SESSION, ("auto_window",), lambda: views.window_from_percentiles(data, 1, 99))
    presets = {"Auto (1-99 %)": auto, **views.CT_PRESETS}
    default = list(presets).index(views.DEFAULT_CT_PRESET) if modality == "CT" else 0
    choice = st.selectbox("Window preset (CT presets in HU)", [*presets, "Manual"], index=default,
                          key="volume_preset")
    level, width = presets.get(choice, auto)
    if choice == "Manual":
        level = st.number_input("Level", value=float(level), key="volume_level")
        width = st.number_input("Width", value=float(width), min_value=1e-3, key="volume_width")
    return level, width


def segmentation_panel(case: state.Case) -> tuple[np.ndarray, volume.LabelNames | None] | None:
    """The label volume to overlay and its names, from the source the user picks (None: no overlay)."""
    options = ["None", "Label file under the root", "Upload a label file", "Run the segmentation model"]
    source = st.radio("Segmentation", options, key="seg_source", horizontal=True)
    try:
        if source == options[1]:
            relative = st.text_input("Label NIfTI (relative to the root)", key="seg_path")
            if relative:
                return state.computed(SESSION, ("label_file", relative), lambda: label_file(
                    case, files.resolve_case_path(CONFIG.root, relative)))
        elif source == options[2]:
            upload = st.file_uploader("Label NIfTI", key="seg_upload", max_upload_size=CONFIG.upload_limit_mb)
            if upload is not None:
                return state.computed(SESSION, ("label_upload", upload.file_id), lambda: label_file(
                    case, files.save_upload(state.upload_folder(SESSION), upload.name, upload.getvalue(),
                                            CONFIG.upload_limit_bytes)))
        elif source == options[3]:
            return run_segmenter(case)
    except MedresError as error:
        show_error(error)
    return None


def label_file(case: state.Case, path: Path) -> tuple[np.ndarray, volume.LabelNames | None]:
    """A label file checked against the open image's grid, with the names found beside it or its data set."""
    labels = volume.check_same_grid(case.image, read_image(path))
    image_path = case.path if case.source == "root" else None
    return labels, volume.names_for_label_file(path, image_path, CONFIG.root)


def run_segmenter(case: state.Case) -> tuple[np.ndarray, volume.LabelNames] | None:
    if CONFIG.seg_checkpoint is None:
        st.info("No segmentation model configured: start the app with --seg-checkpoint.")
        return None
    if ("segmentation",) not in SESSION.get(state.CACHE, {}):
        if not st.button("Segment", key="seg_run"):
            return None
        bar = st.progress(0.0, text="Segmenting ...")
        model = resources.segmenter(str(CONFIG.seg_checkpoint))
        labels = volume.run_segmentation(model.model, case.image, lambda done: bar.progress(min(done, 1.0)))
        SESSION[state.CACHE][("segmentation",)] = (labels, volume.names_from_card(model.card.labels))
    return SESSION[state.CACHE][("segmentation",)]


def slice_index(plane: str, size: int) -> int:
    """The 0-based index of the plane's slider, which shows slice numbers from 1 as the caption does."""
    if size <= 1:
        return 0
    return st.slider(f"{plane.capitalize()} slice", 1, size, size // 2 + 1, key=f"slice_{plane}") - 1


def volume_view(case: state.Case) -> None:
    data = case.image.array[0]
    level, width = volume_window(case.image.modality, data)
    segmentation = segmentation_panel(case)
    labels, label_names = segmentation if segmentation is not None else (None, None)
    opacity = st.slider("Label opacity", 0.0, 1.0, 0.4, 0.05, key="seg_opacity")
    present = [int(value) for value in np.unique(labels) if value > 0] if labels is not None else []
    names = label_names.for_values(present) if label_names is not None else volume.label_names(present)
    colours = views.label_colours(present)
    columns = st.columns(3)
    for column, plane in zip(columns, ("axial", "coronal", "sagittal")):
        with column:
            size = data.shape[views.AXES[plane]]
            index = slice_index(plane, size)
            gray = views.apply_window(views.volume_slice(data, plane, index), level, width)
            if labels is not None:
                gray = views.label_overlay(gray, views.volume_slice(labels, plane, index), colours, opacity)
            st.image(views.display_slice(gray, case.image.spacing, plane), caption=f"{plane} {index + 1}/{size}",
                     width="stretch")
    st.caption("Shown the radiological way: the patient's right (R) on the viewer's left; letters mark the "
               "patient's directions (R/L right-left, A/P anterior-posterior, S/I superior-inferior); "
               "pixels are square in millimetres.")
    if labels is not None:
        st.markdown(views.legend_html(names, colours), unsafe_allow_html=True)
        source = label_names.source if label_names is not None else NO_NAMES_SOURCE
        st.caption(f"Label names from: {source}")
        st.dataframe(volume.label_volumes(labels, case.image.affine, names), hide_index=True)


def header_panel(case: state.Case) -> None:
    table = header.header_table(case.path)
    if len(table):
        with st.expander("DICOM header (identifying fields masked)"):
            st.dataframe(table, hide_index=True, width="stretch")


def case_page(model: analysis.LoadedModel | None) -> None:
    browse_tab, upload_tab = st.tabs(["Browse the root", "Upload"])
    with browse_tab:
        browse_panel()
    with upload_tab:
        upload_panel()
    case = state.current_case(SESSION)
    if case is None:
        st.info("Open a DICOM file, DICOM series folder, NIfTI or PNG to review it.")
        return
    st.subheader(case.name)
    if case.image.is_volume:
        volume_view(case)
    else:
        xray_view(case, model)
    header_panel(case)


def worklist_page() -> None:
    relative = st.text_input("Output folder of medres score (relative to the root)", key="worklist_folder")
    if not relative:
        return
    try:
        loaded = worklist.load_worklist(files.resolve_under_root(CONFIG.root, relative))
    except MedresError as error:
        show_error(error)
        return
    new_place, problem = SESSION.get("worklist_input_root", ""), None
    try:
        if new_place:
            loaded = worklist.load_worklist(loaded.folder, files.resolve_case_path(CONFIG.root, new_place))
        worklist.input_folder(loaded, CONFIG.root)
    except MedresError as error:
        problem = error
    if problem is not None or new_place:
        st.text_input(worklist.MOVED_PROMPT, key="worklist_input_root",
                      help="The folder that was scored, relative to the root, when it is no longer where the "
                      "run recorded it.")
    if problem is not None:
        show_error(problem)
    elif new_place:
        st.caption(f"Images are read from {new_place} (the run recorded {loaded.recorded_input_root}).")
    filters = st.columns(3)
    label = filters[0].selectbox("Class", loaded.labels, key="worklist_label", format_func=views.finding_name)
    low, high = filters[1].slider("Probability", 0.0, 1.0, (0.0, 1.0), 0.01, key="worklist_range")
    positives = filters[2].checkbox("Positive calls only", key="worklist_positive")
    rows = worklist.filter_worklist(loaded, label, low, high, positives)
    st.dataframe(rows[worklist.display_columns(loaded, label)], width="stretch")
    if len(loaded.errors):
        st.caption(f"{len(loaded.errors)} file(s) were skipped or failed (errors table).")
    if rows.empty:
        st.info("No rows match the filter.")
        return
    options = {int(index): f"{row['path']}  (p={row['prob_' + label]:.3f})" for index, row in rows.iterrows()}
    chosen = st.selectbox("Row", list(options), format_func=options.get, key="worklist_row")
    if st.button("Open image", key="worklist_open"):
        row = loaded.table.loc[chosen]
        try:
            path = worklist.image_path(loaded, row, CONFIG.root)
            heatmap = worklist.heatmap_path(loaded, row, label, CONFIG.root)
            state.open_case(SESSION, path, str(row["path"]), "root", heatmap_path=heatmap, preferred_label=label)
            SESSION["next_mode"] = "Case"
            st.rerun()
        except MedresError as error:
            show_error(error)


def main() -> None:
    """Draw the page: the research notice, the sidebar, then the case or the worklist view."""
    st.set_page_config(page_title="medres review", layout="wide")
    # No Deploy/Rerun/Clear-cache menu: a reader needs none of it. `medres app` passes --client.toolbarMode
    # minimal; set here too, it holds for every later session of a server started without that flag.
    st.set_option("client.toolbarMode", "minimal")
    st.warning(analysis.RESEARCH_NOTICE, icon="⚠️")
    if CONFIG.root is None or not CONFIG.root.is_dir():
        st.error("No root folder: start the app with `medres app --root DIR --checkpoint CKPT`.")
        return
    model = load_classifier()
    if sidebar(model) == "Worklist":
        worklist_page()
    else:
        case_page(model)


if __name__ == "__main__":
    main()
