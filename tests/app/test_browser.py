"""The review app in a real headless Chromium: start `streamlit run`, open a sample, see the overlay."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import APP_SCRIPT, REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
START_TIMEOUT_S = 90
PAGE_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium is not installed")


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


@pytest.fixture()
def served_app(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[str]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "sample_data" / "chest.png", root / "chest.png")
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--", "--root", str(root), "--checkpoint", str(tiny_checkpoint)]
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


def test_overlay_renders_in_a_real_browser(served_app: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(served_app)
            page.get_by_text("Research use only, not for diagnosis.").first.wait_for()
            path_box = page.get_by_label("Or type a path relative to the root")
            path_box.fill("chest.png")
            path_box.press("Enter")
            page.get_by_role("button", name="Open path").click()
            overlay = page.locator('[data-testid="stImage"] img').first
            overlay.wait_for(state="visible")
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                ".some(img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0)")
            size = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            page.get_by_text("Grad-CAM:").first.wait_for()
            screenshot = tmp_path / "review_app.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert size[0] > 0 and size[1] > 0
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n!.gitignore\n")
    shutil.copy(screenshot, ARTIFACTS / "review_app.png")
