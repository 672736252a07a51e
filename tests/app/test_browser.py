"""The review app in a real headless Chromium: start `streamlit run`, use it as a reader would, keep screenshots.

The screenshots (tests/app/_artifacts/, not committed) are for a person to
look at: the X-ray view with numeric probabilities and the threshold
explained, an out-of-scope CT slice with its reason, the volume view with
direction letters and organ names, and a refused upload followed by one that
goes through. The assertions check what can be checked from the page.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from medres.synthetic.phantoms import make_ct_phantoms
from tests.app.conftest import APP_SCRIPT, REPO
from tests.conftest import dicom_test_file

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
START_TIMEOUT_S = 90
PAGE_TIMEOUT_MS = 90_000
VIEWPORT = {"width": 1500, "height": 1900}
NOTICE = "Research use only, not for diagnosis."
PHANTOM_IMAGE = "phantoms/imagesTr/phantom_023_000.nii.gz"
PHANTOM_LABELS = "phantoms/labelsTr/phantom_023_000.nii.gz"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="Debian's chromium (/usr/bin/chromium) is not installed; .ci/run installs it")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {START_TIMEOUT_S} s")


def make_root(root: Path) -> Path:
    """A chest PNG, pydicom's axial CT slice, and one CT phantom in the MSD layout (dataset.json names organs)."""
    root.mkdir()
    shutil.copy(REPO / "sample_data" / "chest.png", root / "chest.png")
    shutil.copy(dicom_test_file("CT_small.dcm"), root / "ct_slice.dcm")
    make_ct_phantoms(root / "phantoms", 1, seed=23, dicom_cases=0)
    assert json.loads((root / "phantoms" / "dataset.json").read_text())["labels"]["1"] == "liver"
    return root


@pytest.fixture()
def served_app(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[str]:
    """The app served by `streamlit run` with the flags `medres app` passes, the reduced toolbar included."""
    root = make_root(tmp_path / "root")
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
               "--", "--root", str(root), "--checkpoint", str(tiny_checkpoint)]
    log = (tmp_path / "streamlit.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def open_path(page, relative: str) -> None:
    path_box = page.get_by_label("Or type a path relative to the root")
    path_box.fill(relative)
    path_box.press("Enter")
    page.get_by_role("button", name="Open path").click()
    page.get_by_role("heading", name=relative).wait_for()


def wait_for_images(page, count: int) -> None:
    page.wait_for_function(
        "n => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).length >= n", arg=count)


def settle(page) -> None:
    """Wait until Streamlit has finished its rerun (no 'Running...' status) and the page has painted."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
    page.wait_for_timeout(800)


def save(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n!.gitignore\n")
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_the_app_as_a_reader_uses_it(served_app: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    notes = tmp_path / "notes.png"
    notes.write_text("plain text, whatever the name says")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(served_app)
            page.get_by_text(NOTICE).first.wait_for()
            settle(page)
            assert page.get_by_text(NOTICE).count() == 1, "the research notice is shown once"
            assert page.get_by_text("Deploy", exact=True).count() == 0, "no Deploy button"

            open_path(page, "chest.png")
            page.get_by_text("Grad-CAM:").first.wait_for()
            page.get_by_text("The number beside each bar").wait_for()
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
            wait_for_images(page, 1)
            settle(page)
            chart_text = page.locator('[data-testid="stVegaLiteChart"]').first.inner_text()
            page.get_by_text("Class", exact=True).first.scroll_into_view_if_needed()
            class_box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Class").first
            shown_class = class_box.inner_text()
            save(page, "1_xray_probabilities.png")

            open_path(page, "ct_slice.dcm")
            page.get_by_text("out_of_scope_modality").wait_for()
            wait_for_images(page, 1)
            settle(page)
            out_of_scope = {"charts": page.locator('[data-testid="stVegaLiteChart"]').count(),
                            "gradcam": page.get_by_text("Grad-CAM:").count()}
            save(page, "2_out_of_scope_ct_slice.png")

            open_path(page, PHANTOM_IMAGE)
            page.get_by_text("Label file under the root").click()
            label_box = page.get_by_label("Label NIfTI (relative to the root)")
            label_box.fill(PHANTOM_LABELS)
            label_box.press("Enter")
            page.get_by_text("Label names from: phantoms/dataset.json").wait_for()
            wait_for_images(page, 3)
            settle(page)
            legend = page.locator('[data-testid="stMarkdown"]').filter(has_text="liver").first.inner_text()
            slider_value = page.locator('[data-testid="stSlider"]').filter(has_text="Axial slice").first.inner_text()
            caption = page.get_by_text("axial ", exact=False).filter(has_text="/").first.inner_text()
            save(page, "3_volume_orientation_and_organs.png")

            page.get_by_role("tab", name="Upload").click()
            uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]').first
            uploader.set_input_files(str(notes))
            page.get_by_text("not_dicom").first.wait_for()
            settle(page)
            save(page, "4_upload_refused.png")
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
                str(REPO / "sample_data" / "chest.png"))
            page.get_by_role("heading", name="chest.png").wait_for()
            page.get_by_text("Grad-CAM:").first.wait_for()
            settle(page)
            refusal_left = page.get_by_text("not_dicom").count()
            save(page, "5_upload_accepted_after_refusal.png")
        finally:
            browser.close()
    assert "1.00" in chart_text or "0." in chart_text, "numbers are drawn beside the bars"
    assert "…" not in shown_class and "..." not in shown_class
    assert out_of_scope == {"charts": 0, "gradcam": 0}, "no probabilities and no Grad-CAM for a CT slice"
    assert "liver" in legend and "spleen" in legend and "label 1" not in legend
    slice_number = caption.split()[1].split("/")[0]
    assert slice_number in slider_value, f"slider shows {slider_value!r}, caption {caption!r}"
    assert refusal_left == 0, "the refusal message went away once a valid file was accepted"
