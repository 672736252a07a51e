"""One containment rule: ``medres score``'s folder walk and the review app agree on what lies inside a root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medres.app.files import resolve_case_path
from medres.errors import UnsafePathError
from medres.paths import is_within_root, resolve_under_root
from medres.score.discover import walk_folder

LINKS_OUT = {"out_absolute", "out_relative", "out_folder", "chain_out", "sibling_prefix"}
LINKS_IN = {"in_absolute", "in_dotdot", "sub/up_in", "in_folder", "dangling"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with links out of it (absolute, relative with ``..``, a chain, a name sharing its prefix) and in."""
    base, outside, sibling = tmp_path / "root", tmp_path / "outside", tmp_path / "root2"
    for folder in (base / "sub", outside, sibling):
        folder.mkdir(parents=True)
    (base / "real.png").write_bytes(b"x")
    (base / "sub" / "inner.dcm").write_bytes(b"x")
    (outside / "secret.dcm").write_bytes(b"x")
    (sibling / "x.dcm").write_bytes(b"x")
    links = {
        "out_absolute": outside / "secret.dcm", "out_relative": "../outside/secret.dcm", "out_folder": outside,
        "chain_out": "out_relative", "sibling_prefix": "../root2/x.dcm",
        "in_absolute": base / "real.png", "in_dotdot": "sub/../real.png", "sub/up_in": "../real.png",
        "in_folder": "sub", "dangling": "missing.png",
    }
    for name, target in links.items():
        os.symlink(target, base / name)
    return base


def test_the_walk_and_the_app_refuse_the_same_links(root: Path):
    walked = {entry.relative: entry for entry in walk_folder(root)}
    score_outside = {name for name, entry in walked.items() if entry.skip and entry.skip.reason == "outside_root"}
    app_refused = set()
    for name in LINKS_OUT | LINKS_IN:
        try:
            resolve_under_root(root, name)
        except UnsafePathError as error:
            assert error.reason == "unsafe_path" and "outside the root" in str(error)
            app_refused.add(name)
    assert score_outside == app_refused == LINKS_OUT
    assert walked["in_folder"].skip.reason == "linked_folder", "a folder link inside is skipped, not followed"
    assert {"sub/inner.dcm", "real.png", "in_absolute", "in_dotdot", "sub/up_in"} <= {
        name for name, entry in walked.items() if entry.skip is None}


def test_the_shared_check_sees_through_dotdot_and_absolute_paths(root: Path):
    real_root = os.path.realpath(root)
    assert is_within_root(root / "sub" / ".." / "real.png", real_root)
    assert not is_within_root(root / ".." / "outside" / "secret.dcm", real_root)
    assert not is_within_root(root.parent / "root2" / "x.dcm", real_root), "components, not a string prefix"
    assert is_within_root(root, real_root) and not is_within_root(root.parent, real_root)
    assert all(not is_within_root(root / name, real_root) for name in LINKS_OUT)


@pytest.mark.parametrize("typed", ["../outside/secret.dcm", "sub/../real.png", "/etc/passwd", "C:/Windows"])
def test_the_app_refuses_typed_dotdot_and_absolute_paths_before_resolving(root: Path, typed: str):
    with pytest.raises(UnsafePathError, match="absolute|'\\.\\.'"):
        resolve_under_root(root, typed)


def test_a_series_folder_with_one_link_out_is_refused_whole(root: Path):
    (root / "series").mkdir()
    (root / "series" / "IM1.dcm").write_bytes(b"x")
    assert resolve_case_path(root, "series") == (root / "series").resolve()
    os.symlink(root.parent / "outside" / "secret.dcm", root / "series" / "IM2.dcm")
    with pytest.raises(UnsafePathError, match="IM2.dcm in the folder links outside the root"):
        resolve_case_path(root, "series")
