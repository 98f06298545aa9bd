"""privet's wire format: a versioned message cut into frames, so that payloads of any size travel.

A :class:`Message` is a kind (``"task"``, ``"update"``, ...), a small JSON header and an optional payload of raw
bytes (typically a tensor's memory). :func:`encode` turns it into a sequence of frames:

- frame 0: ``b"PVT"``, the schema version (one byte), then the JSON envelope
  ``{"kind", "header", "size", "compression"}``;
- frames 1..n: the payload in pieces of at most :data:`CHUNK` bytes, each compressed on its own (zlib) when
  compression was asked for.

Nothing ever holds the payload twice: the sender slices it without copying, and :func:`decode` allocates the
declared size once and fills it as frames arrive, refusing more or fewer bytes than declared, and payloads over
the receiver's limit. A receiver that must not hold large payloads in memory at all (a server collecting model
updates) passes ``spool``: a payload over ``spool_over`` bytes then goes, frame by frame, to an unnamed temporary
file in that folder (:class:`Spooled`; the OS removes it when it is closed, or when the process dies).

The protobuf 2 GB ceiling does not apply: gRPC only ever sees frames. A message of an unknown schema version
is refused with an error that says which versions this side speaks.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from privet.errors import FormatError

__all__ = ["CHUNK", "SCHEMA_VERSION", "Message", "Spooled", "decode", "encode"]

SCHEMA_VERSION = 1
CHUNK = 1 << 20  # 1 MiB per frame: far below gRPC's default 4 MiB message limit
_MAGIC = b"PVT"
_MAX_ENVELOPE = 1 << 20


class Spooled:
    """A received payload kept in an unnamed temporary file instead of memory; read it back in pieces."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self.nbytes = size

    def read(self, offset: int, size: int) -> bytearray:
        """``size`` bytes from ``offset`` (a fresh, writable buffer)."""
        if offset < 0 or size < 0 or offset + size > self.nbytes:
            raise FormatError(f"bytes {offset}..{offset + size} are outside the {self.nbytes}-byte payload")
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            count = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            if count <= 0:
                raise FormatError("the spooled payload is shorter than declared")
            done += count
        return buffer

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Message:
    """What parties send each other: ``kind``, a JSON-serialisable ``header`` and raw ``payload`` bytes (or, for
    a large payload a receiver asked to spool, a :class:`Spooled` file)."""

    kind: str
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes | bytearray | memoryview | Spooled = b""


def encode(message: Message, *, compress: bool = False) -> Iterator[bytes]:
    """The frames of ``message`` (a generator: payload pieces are produced as they are sent)."""
    if isinstance(message.payload, Spooled):
        raise TypeError("a spooled payload is read back with Spooled.read, not sent on")
    payload = memoryview(message.payload).cast("B")
    envelope = {
        "kind": message.kind,
        "header": message.header,
        "size": payload.nbytes,
        "compression": "zlib" if compress else None,
    }
    yield _MAGIC + bytes([SCHEMA_VERSION]) + json.dumps(envelope, separators=(",", ":")).encode()
    for start in range(0, payload.nbytes, CHUNK):
        piece = payload[start : start + CHUNK]
        yield zlib.compress(piece, 1) if compress else bytes(piece)


def decode(frames: Iterable[bytes], *, max_size: int, spool: Path | None = None, spool_over: int = 64 << 20) -> Message:
    """Reassemble a message from its frames; refuse a bad envelope, a wrong size or a payload over ``max_size``.

    With ``spool``, a payload larger than ``spool_over`` bytes is written to a temporary file there instead.
    """
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None or len(first) < 4 or first[:3] != _MAGIC:
        raise FormatError("the peer did not send a privet message", "Connect privet parties to each other only.")
    if first[3] != SCHEMA_VERSION:
        raise FormatError(
            f"the peer speaks message schema version {first[3]}, this side speaks {SCHEMA_VERSION}",
            "Run the same privet version on the server and the clients.",
        )
    if len(first) > _MAX_ENVELOPE:
        raise FormatError("the message envelope is too large")
    try:
        envelope = json.loads(first[4:])
        kind, header, size, compression = (envelope[k] for k in ("kind", "header", "size", "compression"))
    except (ValueError, KeyError, TypeError):
        raise FormatError("the message envelope is malformed") from None
    if not isinstance(kind, str) or not isinstance(header, dict) or not isinstance(size, int) or size < 0:
        raise FormatError("the message envelope has fields of the wrong type")
    if compression not in (None, "zlib"):
        raise FormatError(f"unknown compression {compression!r}")
    if size > max_size:
        raise FormatError(f"the peer sent a {size}-byte payload, over this side's limit of {max_size} bytes")
    if spool is not None and size > spool_over:
        file = tempfile.TemporaryFile(dir=spool)  # noqa: SIM115 - it lives on in the Spooled payload
        try:
            _fill(iterator, size, compression, file.write)
        except BaseException:
            file.close()
            raise
        file.flush()
        return Message(kind, header, Spooled(file, size))
    payload = bytearray(size)
    view = memoryview(payload)
    filled = 0

    def put(piece: bytes) -> None:
        nonlocal filled
        view[filled : filled + len(piece)] = piece
        filled += len(piece)

    _fill(iterator, size, compression, put)
    return Message(kind, header, payload)


def _fill(frames: Iterator[bytes], size: int, compression: str | None, put: Any) -> None:
    filled = 0
    for frame in frames:
        piece = _inflate(frame, size - filled) if compression else frame
        if filled + len(piece) > size:
            raise FormatError("the peer sent more payload than it declared")
        put(piece)
        filled += len(piece)
    if filled != size:
        raise FormatError(f"the message ended after {filled} of {size} payload bytes", "The peer may have gone away.")


def _inflate(frame: bytes, room: int) -> bytes:
    decompressor = zlib.decompressobj()
    try:
        # Bounded: a frame may not inflate past what the declared size still allows (no zip bombs).
        piece = decompressor.decompress(frame, max(room, 0) + 1)
    except zlib.error:
        raise FormatError("a compressed frame is corrupt") from None
    if decompressor.unconsumed_tail or not decompressor.eof:
        raise FormatError("a compressed frame inflates past the declared payload size or is truncated")
    return piece
