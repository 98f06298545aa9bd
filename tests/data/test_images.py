"""IDX loading: gzip and raw files, strict headers and sizes, the official MNIST / Fashion-MNIST files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.data.images import MNIST_FILES, load_idx_images, load_idx_labels, load_mnist_like
from privet.errors import NotFoundError, UsageError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _images(pixels: np.ndarray) -> bytes:
    n, rows, cols = pixels.shape
    return struct.pack(">IIII", 0x00000803, n, rows, cols) + pixels.astype(np.uint8).tobytes()


def _labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist_like(directory: Path, n_train: int = 40, n_test: int = 12, *, gz: bool = True, seed: int = 0) -> Path:
    """Four small IDX files in the standard layout; pixel means depend on the label (learnable)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), n in zip(((0, 1), (2, 3)), (n_train, n_test), strict=True):
        labels = rng.integers(0, 10, n)
        pixels = rng.integers(0, 60, (n, 28, 28)) + (labels * 19)[:, None, None]
        for index, blob in ((images_name, _images(pixels)), (labels_name, _labels(labels))):
            name = MNIST_FILES[index]
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (directory / name).write_bytes(blob)
    return directory


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_round_trip(tmp_path: Path, gz: bool) -> None:
    pixels = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    for name, blob in (("img", _images(pixels)), ("lab", _labels(labels))):
        (tmp_path / name).write_bytes(gzip.compress(blob) if gz else blob)
    images = load_idx_images(tmp_path / "img")
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert torch.equal((images * 255).round().to(torch.int64).squeeze(1), torch.from_numpy(pixels))
    loaded = load_idx_labels(tmp_path / "lab")
    assert loaded.dtype == torch.int64 and loaded.tolist() == [7, 0, 9]


def test_directory_of_standard_names(tmp_path: Path) -> None:
    split = load_mnist_like(write_mnist_like(tmp_path / "d", gz=False), name="tiny")
    assert split.name == "tiny"
    assert split.x_train.shape == (40, 1, 28, 28) and split.x_test.shape == (12, 1, 28, 28)
    assert split.y_train.shape == (40,) and split.classes <= 10


def _one_line(exc: pytest.ExceptionInfo) -> str:
    line = exc.value.one_line()
    assert "\n" not in line and line.startswith("error: ")
    return line


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (struct.pack(">IIII", 0x00000801, 1, 28, 28) + bytes(784), "not an IDX images file"),
        (struct.pack(">IIII", 0x00000803, 2, 28, 28) + bytes(784), "needs"),
        (struct.pack(">IIII", 0x00000803, 1, 28, 28) + bytes(785), "needs"),
        (struct.pack(">IIII", 0x00000803, 0, 28, 28), "empty"),
        (b"\x00\x00\x08", "too short"),
        (b"\x1f\x8b\x08\x00garbage", "not a valid gzip"),
        (gzip.compress(struct.pack(">IIII", 0x00000803, 1, 28, 28) + bytes(784))[:-9], "not a valid gzip"),
    ],
)
def test_bad_image_files_are_one_line_usage_errors(tmp_path: Path, blob: bytes, expected: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(UsageError) as refused:
        load_idx_images(path)
    assert expected in _one_line(refused)


def test_bad_label_file_and_mismatched_counts(tmp_path: Path) -> None:
    (tmp_path / "lab").write_bytes(_images(np.zeros((1, 28, 28))))
    with pytest.raises(UsageError) as refused:
        load_idx_labels(tmp_path / "lab")
    assert "not an IDX labels file" in _one_line(refused)
    directory = write_mnist_like(tmp_path / "d")
    (directory / f"{MNIST_FILES[1]}.gz").write_bytes(gzip.compress(_labels(np.zeros(39))))
    with pytest.raises(UsageError) as refused:
        load_mnist_like(directory)
    assert "40 images but" in _one_line(refused)


def test_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_idx_images(tmp_path / "nope")
    with pytest.raises(NotFoundError) as refused:
        load_mnist_like(tmp_path / "nope")
    assert "does not exist" in _one_line(refused)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError) as refused:
        load_mnist_like(tmp_path / "empty")
    assert "train-images-idx3-ubyte.gz" in _one_line(refused)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(blob)
    for load in (load_idx_images, load_idx_labels):
        try:
            load(path)
        except UsageError as exc:
            assert "\n" not in exc.one_line()


@pytest.mark.parametrize("folder", ["mnist", "fashion-mnist"])
def test_official_files(folder: str) -> None:
    directory = SHARED / folder
    if not (directory / f"{MNIST_FILES[0]}.gz").is_file():
        pytest.skip(f"{directory} is not present (the product ships no data; this checks the official files)")
    split = load_mnist_like(directory)
    assert split.x_train.shape == (60000, 1, 28, 28) and split.x_test.shape == (10000, 1, 28, 28)
    assert split.classes == 10 and float(split.x_train.min()) >= 0.0 and float(split.x_train.max()) == 1.0
    counts = torch.bincount(split.y_test).tolist()
    if folder == "mnist":
        assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    else:
        assert counts == [1000] * 10
