"""A command imports only what it uses: a wrong argument is refused, and an image described, without torch.

Each case runs ``medres.cli.main.main`` in a fresh interpreter (``python -c``)
and reads that interpreter's ``sys.modules`` afterwards, so nothing this test
process has imported can hide an import. Heavy modules are the ones a user
waits for: torch, MONAI (which pulls in pandas, matplotlib and scipy.signal
itself), highdicom, streamlit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, subprocess_environment

SAMPLE_DATA = REPO / "sample_data"
HEAVY = ("torch", "monai", "sklearn", "pandas", "matplotlib", "scipy.signal", "highdicom", "streamlit")
RUN_AND_LIST_MODULES = """
import json, sys
from medres.cli.main import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as stop:  # --help
    code = stop.code
print(json.dumps({"code": code, "modules": sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)}))
"""


def run_in_fresh_interpreter(argv: list[str], watched: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    """Run ``medres ARGV`` in a new interpreter; its exit code and which of ``watched`` it imported."""
    result = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, json.dumps(argv), json.dumps(watched)],
                            capture_output=True, text=True, env=subprocess_environment(), cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome["code"], outcome["modules"]


@pytest.fixture(scope="module")
def input_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "chest.png").write_bytes((SAMPLE_DATA / "chest.png").read_bytes())
    (folder / "notes.txt").write_text("not a checkpoint\n")
    return folder


def test_info_on_a_png_imports_nothing_heavy():
    code, imported = run_in_fresh_interpreter(["info", str(SAMPLE_DATA / "chest.png")])
    assert code == 0 and imported == []


def test_info_on_a_dicom_file_imports_nothing_heavy():
    code, imported = run_in_fresh_interpreter(["info", str(SAMPLE_DATA / "cr_chest_monochrome1.dcm")])
    assert code == 0 and imported == []


@pytest.mark.parametrize("case", ["missing input", "text file as checkpoint", "pickle as checkpoint", "help"])
def test_a_refused_score_command_imports_nothing_heavy(case, input_folder, tmp_path):
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04\x95" + bytes(64))  # what torch.save's legacy format starts with
    arguments = {
        "missing input": [str(tmp_path / "missing"), "--checkpoint", str(input_folder / "notes.txt")],
        "text file as checkpoint": [str(input_folder), "--checkpoint", str(input_folder / "notes.txt")],
        "pickle as checkpoint": [str(input_folder), "--checkpoint", str(pickle)],
        "help": ["--help"],
    }[case]
    code, imported = run_in_fresh_interpreter(["score", *arguments, *(["--out", str(tmp_path / "out")]
                                                                       if case != "help" else [])])
    assert code == (0 if case == "help" else 2)
    assert imported == []
    assert not (tmp_path / "out").exists()


def test_a_refused_segment_command_imports_nothing_heavy(input_folder, tmp_path):
    code, imported = run_in_fresh_interpreter(["segment", str(tmp_path / "missing.nii.gz"), "--checkpoint",
                                               str(input_folder / "notes.txt"), "--out", str(tmp_path / "out")])
    assert code == 2 and imported == []


def test_segment_and_score_import_torch_and_nothing_else_heavy(tmp_path):
    """Their networks (:mod:`medres.models.networks`), scaling, prediction and window loop import no MONAI.

    So neither the main process nor the decoders pay for MONAI's package (and
    the pandas, matplotlib, scipy.signal it loads); a volume already at the
    model's spacing needs no resampling, so MONAI's resamplers are not imported either.
    """
    import nibabel as nib
    import torch

    from medres.models import create_model, save_checkpoint

    torch.manual_seed(0)
    segmenter = save_checkpoint(create_model("resunet3d_tiny"), tmp_path / "seg.safetensors")
    classifier = save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), tmp_path / "cxr.safetensors")
    volume = np.random.default_rng(0).normal(0, 100, (40, 40, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 1.5, 1.0])), tmp_path / "ct.nii.gz")
    (tmp_path / "films").mkdir()
    (tmp_path / "films" / "chest.png").write_bytes((SAMPLE_DATA / "chest.png").read_bytes())
    assert run_in_fresh_interpreter(["segment", str(tmp_path / "ct.nii.gz"), "--checkpoint", str(segmenter),
                                     "--out", str(tmp_path / "seg"), "--no-progress"]) == (0, ["torch"])
    assert run_in_fresh_interpreter(["score", str(tmp_path / "films"), "--checkpoint", str(classifier),
                                     "--out", str(tmp_path / "scores"), "--no-progress"]) == (0, ["torch"])
