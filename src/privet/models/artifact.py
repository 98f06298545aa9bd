"""Signed, optionally encrypted model artifacts: pack, verify, unpack, read.

Layout (integers big-endian)::

    "PRIVET\\x1aM" | payload | envelope JSON | Ed25519 signature (64) | envelope length u32 | "\\x1aPRIVETZ"

The plain payload is ``manifest length u32 | manifest JSON | file bytes, in manifest order``. An encrypted
payload is that, sealed with :mod:`privet.crypto.stream`. The envelope (name, version, signer, payload and
manifest digests) is signed; the signature covers the magic and the envelope bytes. Everything a reader
acts on is thus authenticated: names, shapes, dtypes and offsets of tensors sit in the manifest, bound by
its digest, not in an unsigned header.

Verification streams the payload once and releases nothing (no file, no tensor) until every check holds:
signature, payload digest, manifest digest, each file's digest and each tensor's digest, and agreement
between each safetensors header and the manifest's tensor table.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from privet.crypto.keyring import DEFAULT_AEAD
from privet.crypto.signing import SIGNATURE_SIZE, SigningKey, VerifyKey
from privet.crypto.stream import KeySource, StreamHeader, decrypt_stream, encrypt_stream, rewrap_file
from privet.errors import FormatError, IntegrityError, NotFoundError, UsageError
from privet.files import atomic_directory, atomic_file
from privet.models.manifest import (
    Envelope,
    FileEntry,
    Manifest,
    PrivacyGuarantee,
    Scalar,
    Signer,
    TensorEntry,
    canonical,
    parse_envelope,
    parse_manifest,
)
from privet.models.safetensors_index import TensorSpan, header_length, parse_header, read_header, refuse_pickle

MAGIC = b"PRIVET\x1aM"
END = b"\x1aPRIVETZ"
SUFFIX = ".pvm"
_TRAILER = struct.Struct(">I8s")
_BLOCK = 1 << 20

Trust = Callable[[str], VerifyKey]
Progress = Callable[[int], None]


def trust_only(keys: Iterable[VerifyKey]) -> Trust:
    """A trust function that accepts exactly ``keys`` (for example public keys given with --trust)."""
    by_fingerprint = {key.fingerprint: key for key in keys}

    def resolve(fingerprint: str) -> VerifyKey:
        if fingerprint not in by_fingerprint:
            raise IntegrityError(
                f"the artifact is signed by {fingerprint}, which is not among the trusted keys",
                "Pass the signer's public key with --trust if you trust it.",
            )
        return by_fingerprint[fingerprint]

    return resolve


@dataclass(frozen=True)
class Verified:
    """An artifact whose every check passed. ``files`` holds contents when read into memory."""

    envelope: Envelope
    manifest: Manifest
    key_name: str | None = None
    key_version: int | None = None
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


# -- digests -----------------------------------------------------------------------------------------
class _FileDigest:
    """SHA-256 of a whole file and of each tensor span in it, fed in order, in one pass."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.size = 0
        self._file = hashlib.sha256()
        self._spans = spans
        self._hashers = [hashlib.sha256() for _ in spans]
        self._next = 0

    def feed(self, view: memoryview) -> None:
        start, end = self.size, self.size + len(view)
        self._file.update(view)
        while self._next < len(self._spans) and self._spans[self._next][1] <= start:
            self._next += 1
        index = self._next
        while index < len(self._spans) and self._spans[index][0] < end:
            first, last = self._spans[index]
            self._hashers[index].update(view[max(first, start) - start : min(last, end) - start])
            index += 1
        self.size = end

    @property
    def sha256(self) -> str:
        return self._file.hexdigest()

    @property
    def span_digests(self) -> list[str]:
        return [h.hexdigest() for h in self._hashers]


def _digest_file(path: Path, spans: list[TensorSpan] | None) -> _FileDigest:
    digest = _FileDigest([(s.start, s.end) for s in spans or []])
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.feed(memoryview(block))
    return digest


# -- packing -----------------------------------------------------------------------------------------
def _collect(source: Path) -> list[tuple[str, Path]]:
    if source.is_symlink() or not source.exists():
        raise NotFoundError(f"{source} does not exist or is a symbolic link")
    if source.is_file():
        if source.suffix != ".safetensors":
            refuse_pickle(source)
            raise UsageError(f"{source.name} is not a .safetensors file", "Pack a .safetensors file or a directory.")
        return [(source.name, source)]
    found = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and directories (.git, .cache) are not part of a model
        if path.is_symlink():
            raise UsageError(f"{path.relative_to(source)} is a symbolic link", "Replace links with the files.")
        if path.is_file():
            found.append((relative.as_posix(), path))
    if not found:
        raise UsageError(f"{source} holds no files")
    if not any(rel.endswith(".safetensors") for rel, _ in found):
        raise UsageError(f"{source} holds no .safetensors file", "Save the weights with safetensors first.")
    return found


def _describe(rel: str, path: Path) -> FileEntry:
    # A file that parses as safetensors is not sniffed for pickles: its first bytes are a header length,
    # which can look like a pickle's PROTO opcode. Anything else must not be a pickle.
    spans = read_header(path) if rel.endswith(".safetensors") else None
    if spans is None:
        refuse_pickle(path)
    digest = _digest_file(path, spans)
    tensors = None
    try:
        if spans is not None:
            tensors = [
                TensorEntry(name=s.name, dtype=s.dtype, shape=list(s.shape), offsets=(s.start, s.end), sha256=d)
                for s, d in zip(spans, digest.span_digests, strict=True)
            ]
        return FileEntry(path=rel, size=digest.size, sha256=digest.sha256, tensors=tensors)
    except ValueError as exc:
        raise UsageError(f"{rel} cannot be described in a manifest ({_first_error(exc)})") from None


class _PayloadReader(io.RawIOBase):
    """The plain payload as a stream; refuses a source file that changed since it was described."""

    def __init__(self, prefix: bytes, files: list[tuple[FileEntry, Path]], progress: Progress | None) -> None:
        self._prefix = memoryview(prefix)
        self._files = list(files)
        self._current: tuple[FileEntry, BinaryIO, _FileDigest] | None = None
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        while True:
            if self._current is None:
                if not self._files:
                    return 0
                entry, path = self._files.pop(0)
                self._current = (entry, path.open("rb"), _FileDigest([]))
            entry, handle, digest = self._current
            # Read no more than the described size: a file that grows while packing must not stall us.
            count = handle.readinto(view[: entry.size - digest.size]) if digest.size < entry.size else 0
            if count:
                digest.feed(view[:count])
                if self._progress:
                    self._progress(count)
                return count
            grown = bool(handle.read(1))
            handle.close()
            self._current = None
            if grown or digest.size != entry.size or digest.sha256 != entry.sha256:
                raise UsageError(f"{entry.path} changed while it was being packed", "Pack it again.")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pack(
    source: Path,
    dest: Path,
    *,
    name: str,
    version: str,
    signer: SigningKey,
    keys: KeySource | None = None,
    key_name: str = DEFAULT_AEAD,
    framework: str = "pytorch",
    metadata: dict[str, Scalar] | None = None,
    privacy: PrivacyGuarantee | None = None,
    progress: Progress | None = None,
) -> Envelope:
    """Pack a model directory or ``.safetensors`` file into a signed artifact at ``dest`` (atomically).

    With ``keys`` the payload (manifest and files) is encrypted under ``key_name``'s primary version.
    """
    files = [(_describe(rel, path), path) for rel, path in _collect(Path(source))]
    created = _now()
    try:
        manifest = Manifest(
            name=name,
            version=version,
            framework=framework,
            created_at=created,
            metadata=dict(metadata or {}),
            privacy=privacy,
            files=[entry for entry, _ in files],
        )
    except ValueError as exc:
        raise UsageError(f"the model description is invalid ({_first_error(exc)})") from None
    manifest_bytes = canonical(manifest)
    prefix = struct.pack(">I", len(manifest_bytes)) + manifest_bytes
    reader = _PayloadReader(prefix, files, progress)
    payload_hash = hashlib.sha256()
    with atomic_file(Path(dest), mode=0o644) as out:
        out.write(MAGIC)
        if keys is not None:
            encrypt_stream(io.BufferedReader(reader, _BLOCK), out, keys, key_name, observe=payload_hash.update)
        else:
            buffer = memoryview(bytearray(_BLOCK))
            while count := reader.readinto(buffer):
                out.write(buffer[:count])
                payload_hash.update(buffer[:count])
        verify_key = signer.verify_key
        envelope = Envelope(
            name=name,
            version=version,
            created_at=created,
            encrypted=keys is not None,
            signer=Signer(key=signer.name, version=signer.version, fingerprint=verify_key.fingerprint),
            payload_size=len(prefix) + sum(entry.size for entry, _ in files),
            payload_sha256=payload_hash.hexdigest(),
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        )
        envelope_bytes = canonical(envelope)
        out.write(envelope_bytes)
        out.write(signer.sign(MAGIC + envelope_bytes))
        out.write(_TRAILER.pack(len(envelope_bytes), END))
    return envelope


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)


# -- reading -----------------------------------------------------------------------------------------
class _Window(io.RawIOBase):
    """``length`` bytes of ``handle`` from its current position, as a stream."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self._handle = handle
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")[: self._left]
        count = self._handle.readinto(view) if len(view) else 0
        self._left -= count
        return count


class _FileCheck:
    """Receives one file's bytes, checks them against its manifest entry, and passes them on."""

    def __init__(self, entry: FileEntry, out: BinaryIO | None) -> None:
        self.entry = entry
        tensors = sorted(entry.tensors or [], key=lambda t: t.offsets)
        for before, after in itertools.pairwise(tensors):
            if after.offsets[0] < before.offsets[1]:
                raise IntegrityError(f"the manifest's tensors of {entry.path} overlap")
        self._tensors = tensors
        self._digest = _FileDigest([t.offsets for t in tensors])
        self._head = bytearray() if entry.tensors is not None else None
        self._head_need = 8
        self.out = out

    @property
    def remaining(self) -> int:
        return self.entry.size - self._digest.size

    def feed(self, view: memoryview) -> None:
        position = self._digest.size
        if self._head is not None and position < self._head_need:
            self._head += view[: self._head_need - position]
            if self._head_need == 8 and len(self._head) == 8:
                self._head_need = header_length(bytes(self._head))
                self._head += view[8 - position : self._head_need - position]
        self._digest.feed(view)
        if self.out is not None:
            self.out.write(view)

    def finish(self) -> None:
        entry = self.entry
        if self._digest.sha256 != entry.sha256:
            raise IntegrityError(f"{entry.path} does not match its digest in the manifest")
        for tensor, digest in zip(self._tensors, self._digest.span_digests, strict=True):
            if digest != tensor.sha256:
                raise IntegrityError(f"tensor {tensor.name!r} of {entry.path} does not match its digest")
        if self._head is not None:
            actual = parse_header(bytes(self._head), entry.size, entry.path)
            claimed = [TensorSpan(t.name, t.dtype, tuple(t.shape), *t.offsets) for t in self._tensors]
            if actual != claimed:
                raise IntegrityError(f"the safetensors header of {entry.path} disagrees with the signed manifest")


class _PayloadSink:
    """Parses the plain payload as it arrives; the manifest is checked against the signed digest first."""

    def __init__(self, envelope: Envelope, open_file: Callable[[FileEntry], BinaryIO | None]) -> None:
        self._envelope = envelope
        self._open = open_file
        self._prefix = bytearray()
        self.manifest: Manifest | None = None
        self._pending: list[FileEntry] = []
        self._current: _FileCheck | None = None
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        self.size += len(view)
        while view:
            if self.manifest is None:
                view = self._take_manifest(view)
                continue
            if self._current is None:
                if not self._pending:
                    raise IntegrityError("the artifact's payload has data after its last file")
                entry = self._pending.pop(0)
                self._current = _FileCheck(entry, self._open(entry))
            count = min(len(view), self._current.remaining)
            self._current.feed(view[:count])
            view = view[count:]
            self._close_if_done()
        return len(data)

    def _take_manifest(self, view: memoryview) -> memoryview:
        need = 4 if len(self._prefix) < 4 else 4 + struct.unpack(">I", self._prefix[:4])[0]
        count = min(len(view), need - len(self._prefix))
        self._prefix += view[:count]
        if len(self._prefix) == 4 and not 0 < struct.unpack(">I", self._prefix)[0] <= self._envelope.payload_size:
            raise IntegrityError("the artifact's manifest length is out of range")
        if len(self._prefix) == need and need > 4:
            body = bytes(self._prefix[4:])
            if hashlib.sha256(body).hexdigest() != self._envelope.manifest_sha256:
                raise IntegrityError("the artifact's manifest does not match its signed digest")
            self.manifest = parse_manifest(body)
            self._pending = list(self.manifest.files)
            self._close_if_done()
        return view[count:]

    def _close_if_done(self) -> None:
        while True:
            if self._current is None and self._pending and self._pending[0].size == 0:
                entry = self._pending.pop(0)
                self._current = _FileCheck(entry, self._open(entry))
            if self._current is None or self._current.remaining:
                return
            self._current.finish()
            if self._current.out is not None:
                self._current.out.close()
            self._current = None

    def finish(self) -> Manifest:
        if self.manifest is None or self._pending or self._current is not None:
            raise IntegrityError("the artifact's payload ends before its last file")
        if self.size != self._envelope.payload_size:
            raise IntegrityError("the artifact's payload size does not match its envelope")
        return self.manifest


def read_envelope(handle: BinaryIO, size: int) -> tuple[Envelope, bytes, bytes, int]:
    """The envelope (not yet verified), its bytes, the signature, and the payload length."""
    minimum = len(MAGIC) + SIGNATURE_SIZE + _TRAILER.size
    if size < minimum:
        raise FormatError("the file is too short to be a privet artifact")
    handle.seek(0)
    if handle.read(len(MAGIC)) != MAGIC:
        raise FormatError("this is not a privet model artifact (bad magic)")
    handle.seek(size - _TRAILER.size)
    envelope_len, end = _TRAILER.unpack(handle.read(_TRAILER.size))
    if end != END:
        raise FormatError("the artifact's trailer is missing (truncated or not signed)")
    if envelope_len > size - minimum:
        raise FormatError("the artifact's envelope length is out of range")
    payload_len = size - minimum - envelope_len
    handle.seek(len(MAGIC) + payload_len)
    envelope_bytes = handle.read(envelope_len)
    signature = handle.read(SIGNATURE_SIZE)
    return parse_envelope(envelope_bytes), envelope_bytes, signature, payload_len


def inspect(path: Path) -> Envelope:
    """The envelope of an artifact, NOT verified: for deciding how to open it, never for trusting it."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path} is not a file")
    with path.open("rb") as handle:
        return read_envelope(handle, path.stat().st_size)[0]


def _open_verified(
    path: Path,
    trust: Trust,
    keys: KeySource | None,
    open_file: Callable[[FileEntry], BinaryIO | None],
    progress: Progress | None,
) -> Verified:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path} is not a file")
    with path.open("rb") as handle:
        size = path.stat().st_size
        envelope, envelope_bytes, signature, payload_len = read_envelope(handle, size)
        verify_key = trust(envelope.signer.fingerprint)
        verify_key.verify(signature, MAGIC + envelope_bytes)
        if envelope.encrypted and keys is None:
            raise UsageError("the artifact is encrypted and no keyring was given", "Unlock the keyring first.")
        sink = _PayloadSink(envelope, open_file)
        digest = hashlib.sha256()
        handle.seek(len(MAGIC))
        window = io.BufferedReader(_Window(handle, payload_len), _BLOCK)
        key_name = key_version = None
        if envelope.encrypted:
            header = StreamHeader.read(window)
            key_name, key_version = header.key_name, header.key_version
            decrypt_stream(window, sink, keys, header=header, observe=digest.update, progress=progress)  # type: ignore[arg-type]
        else:
            while block := window.read(_BLOCK):
                digest.update(block)
                sink.write(block)
                if progress:
                    progress(len(block))
        if digest.hexdigest() != envelope.payload_sha256:
            raise IntegrityError("the artifact's payload does not match its signed digest")
        manifest = sink.finish()
    if (manifest.name, manifest.version) != (envelope.name, envelope.version):
        raise IntegrityError("the artifact's manifest names another model than its envelope")
    return Verified(envelope, manifest, key_name, key_version)


def verify(path: Path, trust: Trust, keys: KeySource | None = None, *, progress: Progress | None = None) -> Verified:
    """Check an artifact completely without writing anything; raises on the first failed check."""
    return _open_verified(path, trust, keys, lambda _entry: None, progress)


def read(path: Path, trust: Trust, keys: KeySource | None = None, *, progress: Progress | None = None) -> Verified:
    """Verify an artifact and return its files' contents in memory (for models that fit in memory)."""
    buffers: dict[str, io.BytesIO] = {}

    def open_file(entry: FileEntry) -> BinaryIO:
        buffers[entry.path] = _KeptBytes()
        return buffers[entry.path]

    verified = _open_verified(path, trust, keys, open_file, progress)
    files = {name: buffer.getvalue() for name, buffer in buffers.items()}
    return Verified(verified.envelope, verified.manifest, verified.key_name, verified.key_version, files)


class _KeptBytes(io.BytesIO):
    """A BytesIO whose contents survive ``close`` (the sink closes each file when it is complete)."""

    def close(self) -> None:
        pass


def unpack(
    path: Path, out_dir: Path, trust: Trust, keys: KeySource | None = None, *, progress: Progress | None = None
) -> Verified:
    """Verify an artifact and write its files under ``out_dir``, which appears only if every check holds."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UsageError(f"{out_dir} already exists", "Unpack into a new directory.")
    with atomic_directory(out_dir) as staging:

        def open_file(entry: FileEntry) -> BinaryIO:
            target = staging.joinpath(*entry.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            return target.open("xb")

        return _open_verified(path, trust, keys, open_file, progress)


def rewrap(path: Path, keys: KeySource, key_name: str | None = None) -> StreamHeader | None:
    """Re-wrap an encrypted artifact's file key under the primary key version; the signature stays valid."""
    path = Path(path)
    if not inspect(path).encrypted:
        return None
    return rewrap_file(path, keys, key_name, offset=len(MAGIC))
