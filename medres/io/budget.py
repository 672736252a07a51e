"""The size budget: refuse huge images before a byte of pixel data is allocated."""

from __future__ import annotations

from os import PathLike

from medres.errors import TooLargeError

DEFAULT_SIZE_BUDGET = 2 * 1024**3  # bytes of decoded pixel data


def check_size_budget(
    shape: tuple[int, ...], bytes_per_sample: int, size_budget: int, path: str | PathLike[str]
) -> int:
    """Raise ``too_large`` when ``prod(shape) * bytes_per_sample`` exceeds the budget.

    Args:
        shape: Every dimension of the decoded data (rows, columns, frames, samples...).
        bytes_per_sample: Bytes each decoded sample takes.
        size_budget: The largest allowed number of decoded bytes.
        path: The file, named in the error.

    Returns:
        The number of decoded bytes.
    """
    total = bytes_per_sample
    for dimension in shape:
        total *= max(int(dimension), 0)
    if total > size_budget:
        raise TooLargeError(
            f"decoded size {_human(total)} ({' x '.join(str(d) for d in shape)} x "
            f"{bytes_per_sample} bytes) exceeds the size budget of {_human(size_budget)}; "
            "pass a larger size_budget if this image is genuine",
            path=path,
        )
    return total


def _human(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
