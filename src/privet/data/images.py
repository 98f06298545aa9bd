"""IDX image and label files (MNIST, Fashion-MNIST and anything in their layout), gzip-compressed or raw.

An IDX file is a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim`` 32-bit sizes, then the values
row-major. privet reads the two kinds that image classification uses, both of unsigned bytes:

- images: magic ``0x00000803``, sizes ``N, rows, cols``; returned as float32 in [0, 1], shape ``(N, 1, rows, cols)``;
- labels: magic ``0x00000801``, size ``N``; returned as int64, shape ``(N,)``.

A file whose magic, sizes or length do not agree is refused with a one-line :class:`~privet.errors.UsageError`
that names the file and the problem (never its contents). privet ships no data: callers pass the paths.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from privet.data.bundled import Split
from privet.errors import NotFoundError, UsageError

__all__ = [
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MNIST_FILES",
    "load_idx_images",
    "load_idx_labels",
    "load_mnist_like",
    "scaled",
]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
# The standard names, in the order train images, train labels, test images, test labels.
MNIST_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_BYTES = 1 << 32  # 4 GiB decompressed: far above any IDX data set, well below a gzip bomb's reach
_HINT = "Pass an IDX file as published for MNIST / Fashion-MNIST (gzip-compressed or raw)."


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"IDX file {path} does not exist", "Check the path.")
    if not path.is_file():
        raise UsageError(f"{path} is not a file", _HINT)
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
            handle.seek(0)
            if head != _GZIP_MAGIC:
                return handle.read()
            with gzip.GzipFile(fileobj=handle) as unzipped:
                data = unzipped.read(_MAX_BYTES + 1)
    except PermissionError:
        raise UsageError(f"IDX file {path} cannot be read (permission denied)", "Check its permissions.") from None
    except (OSError, EOFError, zlib.error):
        raise UsageError(f"{path} is not a valid gzip file (truncated or corrupted)", _HINT) from None
    if len(data) > _MAX_BYTES:
        raise UsageError(f"{path} decompresses to more than 4 GiB", _HINT)
    return data


def _parse(path: Path, magic: int) -> np.ndarray:
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UsageError(f"{path} is too short to be an IDX file ({len(data)} bytes)", _HINT)
    found = struct.unpack_from(">I", data)[0]
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise UsageError(f"{path} is not an IDX {kind} file (magic 0x{found:08x}, expected 0x{magic:08x})", _HINT)
    sizes = struct.unpack_from(f">{ndim}I", data, 4)
    if sizes[0] == 0 or (ndim == 3 and 0 in sizes[1:]):
        raise UsageError(f"{path} declares an empty data set (sizes {'x'.join(map(str, sizes))})", _HINT)
    expected = header + int(np.prod(sizes, dtype=np.int64))
    if len(data) != expected:
        raise UsageError(
            f"{path} holds {len(data)} bytes but its header ({'x'.join(map(str, sizes))}) needs {expected}",
            "The file is truncated or has trailing data; obtain an intact copy.",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(sizes)


def scaled(pixels: np.ndarray) -> torch.Tensor:
    """8-bit pixel values as float32 in [0, 1], exactly as the loaders give them."""
    return torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))


def load_idx_images(path: Path, *, pixels: bool = False) -> torch.Tensor:
    """An IDX images file as float32 in [0, 1] (``pixels``: the uint8 values), shape ``(N, 1, rows, cols)``."""
    values = _parse(path, IMAGES_MAGIC)
    return (torch.from_numpy(values.astype(np.uint8)) if pixels else scaled(values)).unsqueeze(1)


def load_idx_labels(path: Path) -> torch.Tensor:
    """An IDX labels file as int64, shape ``(N,)``."""
    return torch.from_numpy(_parse(path, LABELS_MAGIC).astype(np.int64))


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise NotFoundError(
        f"{directory} has no {stem}.gz (or {stem})",
        f"Put the four standard files there: {', '.join(n + '.gz' for n in MNIST_FILES)}.",
    )


def _pair(directory: Path, images_stem: str, labels_stem: str, pixels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path = _find(directory, images_stem), _find(directory, labels_stem)
    images, labels = load_idx_images(images_path, pixels=pixels), load_idx_labels(labels_path)
    if len(images) != len(labels):
        raise UsageError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels",
            "Use the images and labels file of the same split.",
        )
    return images, labels


def load_mnist_like(directory: Path, *, name: str | None = None, pixels: bool = False) -> Split:
    """The official train and test splits of an MNIST-layout directory (MNIST, Fashion-MNIST, ...).

    The directory holds ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (each may also be uncompressed, without
    ``.gz``). Images are ``(N, 1, 28, 28)`` float32 in [0, 1] (with ``pixels``, the 8-bit values as uint8, a
    quarter of the memory); labels int64.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFoundError(f"data directory {directory} does not exist", "Pass the directory that holds the files.")
    x_train, y_train = _pair(directory, MNIST_FILES[0], MNIST_FILES[1], pixels)
    x_test, y_test = _pair(directory, MNIST_FILES[2], MNIST_FILES[3], pixels)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(
            f"the train images are {tuple(x_train.shape[2:])} but the test images {tuple(x_test.shape[2:])}",
            "Use the train and test files of the same data set.",
        )
    rows, cols = x_train.shape[2:]
    return Split(
        name or directory.name,
        x_train,
        y_train,
        x_test,
        y_test,
        tuple(f"pixel_{r}_{c}" for r in range(rows) for c in range(cols)),
    )
