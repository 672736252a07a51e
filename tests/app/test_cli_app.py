"""`medres app` end to end: it serves the review app, and stopping it stops the server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.app.conftest import REPO
from tests.app.test_browser import free_port, wait_until_serving


def is_serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_medres_app_serves_and_stops_with_its_server(tmp_path: Path, tiny_checkpoint: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "medres", "app", "--root", str(REPO / "sample_data"),
               "--checkpoint", str(tiny_checkpoint), "--port", str(port), "--address", "127.0.0.1"]
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while is_serving(url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not is_serving(url), "the Streamlit server outlived `medres app`"
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
