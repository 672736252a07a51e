"""`medres demo --quick`: the product tour end to end through the CLI (every journey)."""

from __future__ import annotations

import csv

from medres.cli.main import main


def test_quick_tour_runs_every_journey(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "medres app --root" in printed
    assert (out / "reports" / "cxr" / "report.md").is_file()
    with open(out / "scores" / "scores.csv") as stream:
        scored = list(csv.DictReader(stream))
    assert any(row["path"].endswith("RG1_UNCR.dcm") for row in scored)  # the real MONOCHROME1 chest CR
    assert (out / "runs" / "seg" / "best.safetensors").is_file()
    assert any((out / "segmentation").rglob("*.nii.gz")) and any((out / "segmentation").rglob("*.dcm"))
    for leaked in ("Synthetic^Phantom", "SYNTHETIC-0001"):
        assert leaked not in (out / "scores" / "scores.csv").read_text()
