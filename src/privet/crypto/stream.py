"""Streaming authenticated encryption for files of any size, in constant memory.

Format (all integers big-endian)::

    fixed part   magic "PRIVET\\x1aE" | format u8 = 1 | algorithm u8 (1 = AES-256-GCM) | chunk_log2 u8 | file_id 16B
    key slot     name_len u8 | key name | key version u32 | wrapped_len u16 | wrapped file key
    header tag   HMAC-SHA256 over fixed part and key slot, keyed from the file key (32 bytes)
    chunks       AES-256-GCM(chunk key, nonce = index u64 | 0 0 0 | last u8, aad = fixed part), 16-byte tag each

Every file gets a fresh random 256-bit file key, wrapped (AES-256-GCM, with key name, version and file_id
as associated data) by a keyring key version. The chunk key and the header key are derived from the file
key with HKDF-SHA256 bound to file_id, algorithm and chunk size. Each chunk's nonce carries its index
and a last-chunk flag (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizar, 2015), so
truncation at any point, reordering, duplication, appended data and any bit flip fail authentication.
A per-file key means chunk nonces never repeat under one key, across any number of files.

Re-wrapping (after a key rotation) rewrites only the key slot and header tag; the fixed part and the
chunks, which artifact signatures cover, stay byte-identical.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privet.crypto.keyed import Aead, derive_key, keyed_digest
from privet.crypto.keyring import DEFAULT_AEAD, DataKey, validate_key_name
from privet.errors import FormatError, IntegrityError, KeyNotFoundError, PrivetError, UsageError
from privet.files import atomic_file

MAGIC = b"PRIVET\x1aE"
FORMAT_VERSION = 1
ALG_AES256GCM = 1
TAG_SIZE = 16
HEADER_TAG_SIZE = 32
DEFAULT_CHUNK_LOG2 = 20  # 1 MiB: large enough to amortise per-call cost, small enough for constant memory
MIN_CHUNK_LOG2, MAX_CHUNK_LOG2 = 12, 24
_FIXED = struct.Struct(">8sBBB16s")
_WRAP_NONCE = 12


class KeySource(Protocol):
    """Where stream encryption gets its wrapping keys (the :class:`~privet.crypto.keyring.Keyring`)."""

    def data_key(self, name: str = DEFAULT_AEAD, version: int | None = None) -> DataKey: ...


@dataclass(frozen=True)
class StreamHeader:
    """A parsed header. ``fixed`` is what artifact signatures cover; ``slot`` names the wrapping key."""

    chunk_log2: int
    file_id: bytes
    key_name: str
    key_version: int
    wrapped_key: bytes
    tag: bytes

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2

    @property
    def fixed(self) -> bytes:
        return _FIXED.pack(MAGIC, FORMAT_VERSION, ALG_AES256GCM, self.chunk_log2, self.file_id)

    @property
    def slot(self) -> bytes:
        name = self.key_name.encode()
        return (
            struct.pack(">B", len(name))
            + name
            + struct.pack(">IH", self.key_version, len(self.wrapped_key))
            + self.wrapped_key
        )

    def to_bytes(self) -> bytes:
        return self.fixed + self.slot + self.tag

    @classmethod
    def read(cls, src: BinaryIO) -> StreamHeader:
        """Read and parse a header from ``src``; raises FormatError on anything malformed."""
        fixed = _read_exact(src, _FIXED.size, "header")
        magic, fmt, alg, chunk_log2, file_id = _FIXED.unpack(fixed)
        if magic != MAGIC:
            raise FormatError("this is not a privet encrypted file (bad magic)")
        if fmt != FORMAT_VERSION:
            raise FormatError(f"encrypted-file format version {fmt} is not supported", "Upgrade privet.")
        if alg != ALG_AES256GCM:
            raise FormatError(f"encryption algorithm id {alg} is not supported", "Upgrade privet.")
        if not MIN_CHUNK_LOG2 <= chunk_log2 <= MAX_CHUNK_LOG2:
            raise FormatError(f"chunk size 2^{chunk_log2} is out of range")
        (name_len,) = struct.unpack(">B", _read_exact(src, 1, "header"))
        try:
            key_name = _read_exact(src, name_len, "header").decode("ascii")
            validate_key_name(key_name)
        except (UnicodeDecodeError, UsageError):
            raise FormatError("the header's key name is malformed") from None
        key_version, wrapped_len = struct.unpack(">IH", _read_exact(src, 6, "header"))
        if wrapped_len != _WRAP_NONCE + 32 + TAG_SIZE:
            raise FormatError("the header's wrapped key has the wrong length")
        wrapped = _read_exact(src, wrapped_len, "header")
        tag = _read_exact(src, HEADER_TAG_SIZE, "header")
        return cls(chunk_log2, file_id, key_name, key_version, wrapped, tag)

    @classmethod
    def parse(cls, data: bytes) -> StreamHeader:
        import io

        return cls.read(io.BytesIO(data))


@dataclass(frozen=True)
class StreamStats:
    plaintext_bytes: int
    ciphertext_bytes: int
    chunks: int
    key_name: str
    key_version: int


def _read_exact(src: BinaryIO, size: int, what: str) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise FormatError(f"the file ends inside its {what} (truncated)")
    return data


def _stats(header: StreamHeader, plaintext: int, chunks: int) -> StreamStats:
    ciphertext = len(header.to_bytes()) + plaintext + TAG_SIZE * chunks
    return StreamStats(plaintext, ciphertext, chunks, header.key_name, header.key_version)


def _readinto_full(src: BinaryIO, view: memoryview) -> int:
    total = 0
    while total < len(view):
        got = src.readinto(view[total:])
        if not got:
            break
        total += got
    return total


def _chunks(src: BinaryIO, size: int) -> Iterator[tuple[memoryview, bool]]:
    """Yield ``(chunk, is_last)`` reading one chunk ahead, so the last chunk is known when it is yielded.

    Two buffers alternate; a yielded view stays valid until the next one is yielded.
    """
    buffers = [bytearray(size), bytearray(size)]
    current = 0
    filled = _readinto_full(src, memoryview(buffers[0]))
    while True:
        following = _readinto_full(src, memoryview(buffers[1 - current])) if filled == size else 0
        last = following == 0
        yield memoryview(buffers[current])[:filled], last
        if last:
            return
        current, filled = 1 - current, following


def _derive(file_key: bytes, header: StreamHeader, label: bytes) -> bytes:
    info = b"privet stream v1 " + label + bytes([ALG_AES256GCM, header.chunk_log2])
    return derive_key(file_key, info, salt=header.file_id)


def _wrap_context(key_name: str, key_version: int, file_id: bytes) -> bytes:
    return f"privet stream v1 file key|{key_name}|{key_version}|".encode() + file_id


def _header_tag(file_key: bytes, header: StreamHeader) -> bytes:
    return keyed_digest(_derive(file_key, header, b"header"), header.fixed + header.slot)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(8, "big") + (b"\x00\x00\x00\x01" if last else b"\x00\x00\x00\x00")


def seal_header(keys: KeySource, key_name: str, file_key: bytes, chunk_log2: int, file_id: bytes) -> StreamHeader:
    """Wrap ``file_key`` under the primary version of ``key_name`` and authenticate the header."""
    wrapping = keys.data_key(key_name)
    wrapped = Aead(wrapping.material).seal(file_key, _wrap_context(wrapping.name, wrapping.version, file_id))
    draft = StreamHeader(chunk_log2, file_id, wrapping.name, wrapping.version, wrapped, b"")
    return StreamHeader(chunk_log2, file_id, wrapping.name, wrapping.version, wrapped, _header_tag(file_key, draft))


def open_header(keys: KeySource, header: StreamHeader) -> bytes:
    """Unwrap the file key and check the header tag; returns the file key."""
    try:
        wrapping = keys.data_key(header.key_name, header.key_version)
    except KeyNotFoundError:
        raise IntegrityError(
            f"the file names key {header.key_name} v{header.key_version}, which this keyring does not have",
            "The header was modified, or the file belongs to another keyring.",
        ) from None
    try:
        file_key = Aead(wrapping.material).open(
            header.wrapped_key, _wrap_context(header.key_name, header.key_version, header.file_id)
        )
    except IntegrityError:
        raise IntegrityError(
            f"the file key does not unwrap under {header.key_name} v{header.key_version}",
            "The header was modified, or the file belongs to another keyring.",
        ) from None
    if not hmac.compare_digest(_header_tag(file_key, header), header.tag):
        raise IntegrityError("the encrypted file's header was modified")
    return file_key


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    keys: KeySource,
    key_name: str = DEFAULT_AEAD,
    *,
    chunk_log2: int = DEFAULT_CHUNK_LOG2,
    observe: Callable[[bytes | memoryview], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamStats:
    """Encrypt everything readable from ``src`` into ``dst``.

    ``observe`` receives the fixed header part and then every ciphertext chunk, in order (artifacts
    hash those bytes to sign them); ``progress`` receives plaintext byte counts as they are done.
    """
    if not MIN_CHUNK_LOG2 <= chunk_log2 <= MAX_CHUNK_LOG2:
        raise UsageError(f"chunk size 2^{chunk_log2} is out of range", f"Use {MIN_CHUNK_LOG2}..{MAX_CHUNK_LOG2}.")
    file_key = os.urandom(32)
    header = seal_header(keys, key_name, file_key, chunk_log2, os.urandom(16))
    aead = AESGCM(_derive(file_key, header, b"chunk"))
    aad = header.fixed
    dst.write(header.to_bytes())
    if observe:
        observe(aad)
    out_view = memoryview(bytearray(header.chunk_size + TAG_SIZE))
    index = total = 0
    for index, (chunk, last) in enumerate(_chunks(src, header.chunk_size)):
        produced = len(chunk) + TAG_SIZE
        aead.encrypt_into(_nonce(index, last), chunk, aad, out_view[:produced])
        dst.write(out_view[:produced])
        if observe:
            observe(out_view[:produced])
        total += len(chunk)
        if progress:
            progress(len(chunk))
    return _stats(header, total, index + 1)


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    keys: KeySource,
    *,
    header: StreamHeader | None = None,
    observe: Callable[[bytes | memoryview], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamStats:
    """Decrypt ``src`` into ``dst``, refusing at the first chunk that fails authentication.

    ``dst`` may receive authenticated chunks before a later one fails; callers that must not expose
    a partial result write to a temporary file (see :func:`decrypt_file`).
    """
    if header is None:
        header = StreamHeader.read(src)
    file_key = open_header(keys, header)
    aead = AESGCM(_derive(file_key, header, b"chunk"))
    aad = header.fixed
    if observe:
        observe(aad)
    out = memoryview(bytearray(header.chunk_size))
    index = total = 0
    for index, (chunk, last) in enumerate(_chunks(src, header.chunk_size + TAG_SIZE)):
        if len(chunk) < TAG_SIZE:
            raise IntegrityError("the encrypted file is truncated (its final chunk is missing)")
        size = len(chunk) - TAG_SIZE
        try:
            aead.decrypt_into(_nonce(index, last), chunk, aad, out[:size])
        except InvalidTag:
            raise IntegrityError(
                f"chunk {index} of the encrypted file failed authentication",
                "The file was modified, truncated, reordered or corrupted; nothing was released.",
            ) from None
        if observe:
            observe(chunk)
        dst.write(out[:size])
        total += size
        if progress:
            progress(size)
    return _stats(header, total, index + 1)


def rewrap_header(keys: KeySource, header: StreamHeader, key_name: str | None = None) -> StreamHeader:
    """The same header with its file key re-wrapped under the primary version of ``key_name``."""
    file_key = open_header(keys, header)
    return seal_header(keys, key_name or header.key_name, file_key, header.chunk_log2, header.file_id)


def _check_paths(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise UsageError(f"{src} is not a file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError("the output path is the input path", "Write to another file.")


def encrypt_file(
    src: Path,
    dst: Path,
    keys: KeySource,
    key_name: str = DEFAULT_AEAD,
    *,
    progress: Callable[[int], None] | None = None,
) -> StreamStats:
    """Encrypt the file ``src`` to ``dst`` atomically."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    with src.open("rb") as reader, atomic_file(dst) as writer:
        return encrypt_stream(reader, writer, keys, key_name, progress=progress)


def decrypt_file(
    src: Path, dst: Path, keys: KeySource, *, progress: Callable[[int], None] | None = None
) -> StreamStats:
    """Decrypt ``src`` to ``dst``; ``dst`` appears only if every chunk authenticated."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    with src.open("rb") as reader, atomic_file(dst) as writer:
        return decrypt_stream(reader, writer, keys, progress=progress)


def rewrap_file(path: Path, keys: KeySource, key_name: str | None = None, *, offset: int = 0) -> StreamHeader:
    """Re-wrap the stream starting at ``offset`` in ``path`` under the primary version, atomically.

    The bytes before ``offset`` (an artifact's signed envelope, say) and the chunks are copied unchanged.
    """
    path = Path(path)
    with path.open("rb") as reader:
        prefix = reader.read(offset)
        old = StreamHeader.read(reader)
        new = rewrap_header(keys, old, key_name)
        if new.key_name == old.key_name and new.key_version == old.key_version:
            return old
        try:
            with atomic_file(path) as writer:
                writer.write(prefix)
                writer.write(new.to_bytes())
                while block := reader.read(1 << 20):
                    writer.write(block)
        except OSError as exc:
            raise PrivetError(f"re-wrapping {path.name} failed ({exc.strerror})") from None
    return new
