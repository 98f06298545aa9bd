"""Reading a safetensors header without loading tensors, and refusing formats that can run code."""

from __future__ import annotations

import io
import itertools
import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from privet.errors import FormatError, UnsafeFormatError

MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
_SNIFF = 1 << 20  # how much of a file is parsed for pickle opcodes
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill"})
_DTYPES = frozenset(
    {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
)


@dataclass(frozen=True)
class TensorSpan:
    """One tensor's dtype, shape and byte range [start, end) within its file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def header_length(prefix: bytes) -> int:
    """Total header bytes (the 8-byte length and the JSON) given at least the first 8 bytes."""
    size = int.from_bytes(prefix[:8], "little")
    if size > MAX_HEADER:
        raise FormatError(f"the safetensors header claims {size} bytes, over the {MAX_HEADER} limit")
    return 8 + size


def parse_header(head: bytes, file_size: int, what: str) -> list[TensorSpan]:
    """Tensor spans from the header bytes ``head`` (length prefix and JSON), sorted and checked.

    Spans must lie inside the file and must not overlap: each byte belongs to at most one tensor.
    """
    if len(head) < 8 or len(head) != header_length(head) or len(head) > file_size:
        raise FormatError(f"{what} is not a safetensors file (bad header length)")
    try:
        table = json.loads(head[8:])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError(f"{what} is not a safetensors file (header is not JSON)") from None
    if not isinstance(table, dict):
        raise FormatError(f"{what} is not a safetensors file (header is not an object)")
    spans = []
    for name, info in table.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (first, last) = info["dtype"], info["shape"], info["data_offsets"]
            valid = (
                dtype in _DTYPES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(first, int)
                and isinstance(last, int)
                and 0 <= first <= last
            )
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise FormatError(f"{what}: tensor entry {len(spans)} of the safetensors header is malformed")
        spans.append(TensorSpan(name, dtype, tuple(shape), len(head) + first, len(head) + last))
    spans.sort(key=lambda s: (s.start, s.end))
    for before, after in itertools.pairwise(spans):
        if after.start < before.end:
            raise FormatError(f"{what}: two tensors of the safetensors file overlap")
    if spans and spans[-1].end > file_size:
        raise FormatError(f"{what}: a tensor lies beyond the end of the safetensors file")
    return spans


def read_header(path: Path) -> list[TensorSpan]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise FormatError(f"{path.name} is not a safetensors file (too short)")
        head = prefix + handle.read(header_length(prefix) - 8)
    return parse_header(head, size, path.name)


def _parses_as_pickle(window: bytes, *, truncated: bool) -> bool:
    """Whether ``window`` reads as a pickle's opcodes (parsed with pickletools, never executed).

    Any protocol counts, 0 and 1 included, which have no magic number. A window that is a cut-off prefix
    of a larger file counts when its opcodes parse until the data runs out at the cut.
    """
    if len(window) >= 2 and window[0] == 0x80 and 2 <= window[1] <= 5:  # PROTO opcode: protocols 2 to 5
        return True
    opcodes = 0
    try:
        for opcode, _arg, _position in pickletools.genops(io.BytesIO(window)):
            if opcode.name == "STOP":
                return opcodes > 0
            opcodes += 1
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        ran_out = "remain" in str(exc) or "no newline" in str(exc)
        return truncated and opcodes > 0 and ran_out
    return False


def refuse_pickle(path: Path) -> None:
    """Raise UnsafeFormatError if ``path`` is a pickle or a PyTorch zip checkpoint (which holds a pickle)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFormatError(f"{path.name} is a pickle-based format ({path.suffix}), which can run code when loaded")
    with path.open("rb") as handle:
        window = handle.read(_SNIFF)
    if _parses_as_pickle(window, truncated=path.stat().st_size > len(window)):
        raise UnsafeFormatError(f"{path.name} is a Python pickle, which can run code when loaded")
    if window[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return
        if any(name.endswith((".pkl", "/data.pkl")) for name in names):
            raise UnsafeFormatError(f"{path.name} is a PyTorch checkpoint (a zipped pickle), which can run code")
