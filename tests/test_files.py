"""Atomic writes: a file or directory appears whole under its final name, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from privet.errors import UsageError
from privet.files import atomic_directory, atomic_file


class BoomError(Exception):
    pass


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_file_writes_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        with atomic_file(target) as handle:
            handle.write(b"hello ")
            handle.write(b"world")
            assert not target.exists()  # nothing under the final name until the block ends
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"hello world"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert names(tmp_path) == ["out.bin"]


def test_atomic_file_custom_mode_and_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "public.txt"
    with atomic_file(target, mode=0o644) as handle:
        handle.write(b"x")
    assert target.read_bytes() == b"x"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_file_replaces_existing(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old contents")
    target.chmod(0o644)
    with atomic_file(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert names(tmp_path) == ["data.bin"]


def test_atomic_file_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old contents")
    with pytest.raises(BoomError), atomic_file(target) as handle:
        handle.write(b"partial new contents")
        assert any(n.endswith(".part") for n in names(tmp_path))  # the temporary file is beside the target
        raise BoomError
    assert target.read_bytes() == b"old contents"
    assert names(tmp_path) == ["data.bin"]


def test_atomic_file_failure_without_old_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(BoomError), atomic_file(target) as handle:
        handle.write(b"partial")
        raise BoomError
    assert names(tmp_path) == []


def test_atomic_file_keyboard_interrupt_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as handle:
        handle.write(b"partial")
        raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_atomic_directory_appears_on_success(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with atomic_directory(target) as work:
        assert work.is_dir()
        assert work.parent == tmp_path
        assert work != target
        (work / "a.txt").write_text("a")
        (work / "sub").mkdir()
        (work / "sub" / "b.txt").write_text("b")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    assert (target / "sub" / "b.txt").read_text() == "b"
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "bundle"
    with pytest.raises(BoomError), atomic_directory(target) as work:
        (work / "a.txt").write_text("a")
        raise BoomError
    assert not target.exists()
    assert names(tmp_path / "nested") == []


def test_atomic_directory_refuses_existing_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(UsageError, match="already exists"), atomic_directory(target) as work:
        (work / "new.txt").write_text("new")
    assert names(target) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "old"
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_refuses_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.write_text("a file")
    with pytest.raises(UsageError, match="already exists"), atomic_directory(target) as work:
        (work / "new.txt").write_text("new")
    assert target.read_text() == "a file"
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_refuses_existing_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    with pytest.raises(UsageError, match="already exists"), atomic_directory(target) as work:
        (work / "new.txt").write_text("new")
    assert names(target) == []
    assert names(tmp_path) == ["bundle"]
