"""Sliding-window logits: MONAI's window placement and blending, balanced batches, mirroring TTA, OOM fallback."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from medres.inference import mirror_flips, run_with_memory_fallback, sliding_window_logits
from medres.inference.sliding_window import balanced_batch_size, count_windows, window_predictor
from medres.inference.tta import average_over_flips, tta_mirror_axes
from medres.models import create_model
from medres.synthetic.phantoms import PHANTOM_LABELS


def test_count_windows_matches_monai():
    calls = []
    volume = torch.zeros(1, 1, 70, 50, 20)
    sliding_window_inference(volume, (32, 32, 16), 1, lambda w: calls.append(1) or w, overlap=0.5)
    assert count_windows((70, 50, 20), (32, 32, 16), 0.5) == len(calls)


def test_balanced_batch_size_never_leaves_a_lone_window():
    assert [balanced_batch_size(n, 4) for n in (1, 4, 5, 8, 9, 10)] == [1, 4, 3, 4, 3, 4]


def test_windows_run_in_balanced_batches_with_monai_results():
    model = create_model("resunet3d_tiny", labels=PHANTOM_LABELS).eval()
    batch_sizes = []
    model.register_forward_pre_hook(lambda module, args: batch_sizes.append(len(args[0])))
    volume = torch.randn(1, 96, 96, 32)  # 48x48x32 windows at overlap 0.5: 3 x 3 x 1 = 9
    logits = sliding_window_logits(model, volume, (48, 48, 32), torch.device("cpu"), 4, 0.5, "fp32")
    assert batch_sizes == [3, 3, 3]
    with torch.no_grad():
        reference = sliding_window_inference(volume[None], (48, 48, 32), 1, model, overlap=0.5, mode="gaussian")[0]
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)


def test_mirroring_tta_of_an_equivariant_model_changes_nothing():
    assert len(mirror_flips((0, 1, 2))) == 8 and mirror_flips(()) == [()]
    model = torch.nn.Conv3d(1, 2, 1)
    windows = torch.randn(2, 1, 8, 8, 8)
    plain = window_predictor(model, torch.device("cpu"), "fp32")(windows)
    mirrored = window_predictor(model, torch.device("cpu"), "fp32", mirror_flips((0, 1, 2)))(windows)
    torch.testing.assert_close(plain, mirrored)


def fake_out_of_memory(failures: dict[tuple[str, int], int], log: list):
    def run(device: torch.device, batch: int) -> torch.Tensor:
        log.append((device.type, batch))
        if failures.get((device.type, batch), 0):
            failures[(device.type, batch)] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return torch.ones(1)
    return run


def test_out_of_memory_halves_the_batch_then_moves_to_cpu():
    log, notes = [], []
    failures = {("cuda", 4): 1, ("cuda", 2): 1, ("cuda", 1): 1}
    run_with_memory_fallback(fake_out_of_memory(failures, log), torch.device("cuda"), 4, notes)
    assert log == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert "2 window(s) per batch" in notes[0] and "running on the CPU" in notes[-1]


def test_out_of_memory_on_the_cpu_is_not_retried():
    with pytest.raises(torch.OutOfMemoryError):
        run_with_memory_fallback(fake_out_of_memory({("cpu", 2): 1}, []), torch.device("cpu"), 2, [])


def test_tta_flips_only_the_axes_the_card_names_and_says_when_there_are_none():
    notes: list[str] = []
    card = create_model("resunet3d_tiny", labels=PHANTOM_LABELS, mirror_axes=(0, 2)).card
    assert tta_mirror_axes(card, notes) == (0, 2) and not notes
    assert mirror_flips((0, 2)) == [(), (2,), (4,), (2, 4)]
    plain = create_model("resunet3d_tiny", labels=PHANTOM_LABELS, mirror_axes=()).card
    assert tta_mirror_axes(plain, notes) == () and "no effect" in notes[0]


def test_average_over_flips_flips_each_output_back_before_averaging():
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 3, padding=1).eval()  # not mirror-invariant
    windows = torch.randn(2, 1, 6, 5, 4)
    with torch.no_grad():
        expected = (model(windows) + torch.flip(model(torch.flip(windows, (3,))), (3,))) / 2
        averaged = average_over_flips(model, windows, [(), (3,)])
    torch.testing.assert_close(averaged, expected)
    assert not torch.allclose(averaged, model(windows).detach())


def test_a_single_copy_is_returned_as_the_model_gives_it():
    """No flips: no float32 copy of bf16 outputs (the blending widens them as it adds them)."""
    outputs = torch.randn(2, 3, 4, 4, 4).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    assert average_over_flips(lambda batch: outputs, torch.zeros(2, 1, 4, 4, 4), [()]) is outputs


@pytest.mark.parametrize("roi", [(48, 48, 32), (17, 20, 9)])
def test_gaussian_importance_equals_monais(roi):
    from monai.data.utils import compute_importance_map

    from medres.inference.sliding_window import gaussian_importance

    expected = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125, device="cpu")
    torch.testing.assert_close(gaussian_importance(roi, torch.device("cpu")), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,roi,overlap", [
    ((70, 50, 20), (32, 32, 16), 0.5),   # several windows per axis, the last ones moved back to the edge
    ((70, 50, 20), (32, 32, 16), 0.25),  # MONAI's default overlap
    ((30, 61, 9), (32, 24, 16), 0.5),    # axes shorter than the window: padded, then cropped back
    ((32, 33, 16), (32, 32, 16), 0.0),   # one window, and one voxel past it
])
@pytest.mark.parametrize("bf16_channels_last", [False, True], ids=["float32 windows", "bf16 channels-last windows"])
def test_blending_equals_monais_sliding_window(shape, roi, overlap, bf16_channels_last):
    """medres's own window loop (so `medres segment` skips importing MONAI) against MONAI's, two output channels.

    bf16 channels-last windows (what the network gives under bf16) are widened
    as they are added; MONAI is given the same bf16 values as float32.
    """
    from medres.inference.sliding_window import blend_windows

    network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.Tanh()).eval()
    if bf16_channels_last:
        def rounded(windows: torch.Tensor) -> torch.Tensor:
            return network(windows).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    else:
        rounded = network
    volume = torch.randn(1, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = sliding_window_inference(volume[None], roi, 3, lambda windows: rounded(windows).float(),
                                            overlap=overlap, mode="gaussian")[0]
        actual = blend_windows(volume, roi, 3, overlap, rounded)
    assert actual.shape == expected.shape == (2, *shape) and actual.dtype == torch.float32
    assert (actual.stride(0) == 1) == bf16_channels_last  # the sum is kept in the windows' layout
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
