"""The committed samples are exactly what sample_data/make_samples.py writes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SAMPLE_DATA


def test_samples_regenerate_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(SAMPLE_DATA / "make_samples.py"), str(tmp_path)], check=True)
    written = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    committed = sorted(path.relative_to(SAMPLE_DATA) for path in SAMPLE_DATA.rglob("*")
                       if path.is_file() and path.name != "make_samples.py" and "__pycache__" not in path.parts)
    assert written == committed
    for relative in written:
        assert (tmp_path / relative).read_bytes() == (SAMPLE_DATA / relative).read_bytes(), relative


def test_samples_are_small():
    total = sum(path.stat().st_size for path in SAMPLE_DATA.rglob("*") if path.is_file())
    assert total < 5 * 1024**2
