"""Signed, optionally encrypted model artifacts: round trips, the tamper matrix, keys, rewrap, unsafe formats."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.crypto import DataKey, Keyring, SigningKey, StreamHeader, VerifyKey
from privet.crypto.stream import TAG_SIZE
from privet.errors import (
    FormatError,
    IntegrityError,
    KeyDestroyedError,
    NotFoundError,
    PrivetError,
    UnsafeFormatError,
    UsageError,
)
from privet.models import Envelope, PrivacyGuarantee, Verified, pack, read, rewrap, trust_only, unpack, verify
from privet.models.artifact import END, MAGIC, Trust
from privet.models.manifest import Manifest, Signer, canonical, parse_envelope, parse_manifest
from privet.models.reference import ModelSpec, load_weights
from privet.models.safetensors_index import MAX_HEADER, TensorSpan, parse_header, read_header

CHUNK = 1 << 20
SEALED_CHUNK = CHUNK + TAG_SIZE
SIGNATURE = 64
TRAILER = 12  # envelope length u32 and END


# -- helpers -------------------------------------------------------------------------------------------
def assert_refusal_line(error: PrivetError) -> None:
    line = error.one_line()
    assert line.startswith("error: ")
    assert "\n" not in line
    assert line == line.strip()


def assert_nothing_left(directory: Path, *expected: Path) -> None:
    """Only ``expected`` remain in ``directory``: no output directory, no ``.part`` file or directory."""
    assert sorted(directory.iterdir()) == sorted(expected)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Layout:
    """Where things lie in an artifact's bytes, computed from the bytes themselves."""

    size: int
    envelope_start: int
    signature_start: int
    envelope: Envelope
    header_len: int = 0  # encrypted: the stream header after MAGIC
    key_slot: tuple[int, int] = (0, 0)  # encrypted: [start, end) of the key name and version
    chunks: list[int] = field(default_factory=list)  # encrypted: offset of each sealed chunk
    manifest_len: int = 0  # plain
    manifest: Manifest | None = None  # plain
    file_starts: dict[str, int] = field(default_factory=dict)  # plain: absolute offset of each file

    @property
    def payload_end(self) -> int:
        return self.envelope_start

    def chunk(self, index: int) -> tuple[int, int]:
        start = self.chunks[index]
        return start, min(start + SEALED_CHUNK, self.payload_end)

    def tensor(self, path: str, name: str) -> tuple[int, int]:
        assert self.manifest is not None
        entry = next(f for f in self.manifest.files if f.path == path)
        tensor = next(t for t in entry.tensors or [] if t.name == name)
        return self.file_starts[path] + tensor.offsets[0], self.file_starts[path] + tensor.offsets[1]


def layout(data: bytes) -> Layout:
    envelope_len, end = struct.unpack(">I8s", data[-TRAILER:])
    assert end == END
    signature_start = len(data) - TRAILER - SIGNATURE
    envelope_start = signature_start - envelope_len
    envelope = parse_envelope(data[envelope_start:signature_start])
    base = Layout(len(data), envelope_start, signature_start, envelope)
    if envelope.encrypted:
        header = StreamHeader.parse(data[len(MAGIC) :])
        assert header.chunk_size == CHUNK
        header_len = len(header.to_bytes())
        slot_start = len(MAGIC) + len(header.fixed) + 1  # after the name length byte
        return dataclasses.replace(
            base,
            header_len=header_len,
            key_slot=(slot_start, slot_start + len(header.key_name) + 4),
            chunks=list(range(len(MAGIC) + header_len, envelope_start, SEALED_CHUNK)),
        )
    (manifest_len,) = struct.unpack(">I", data[8:12])
    manifest = parse_manifest(data[12 : 12 + manifest_len])
    starts, offset = {}, 12 + manifest_len
    for entry in manifest.files:
        starts[entry.path] = offset
        offset += entry.size
    assert offset == envelope_start
    return dataclasses.replace(base, manifest_len=manifest_len, manifest=manifest, file_starts=starts)


def with_envelope(data: bytes, lay: Layout, envelope_bytes: bytes, signature: bytes | None = None) -> bytes:
    """``data`` with its envelope replaced (and its signature, when given), the trailer adjusted."""
    signature = data[lay.signature_start : lay.signature_start + SIGNATURE] if signature is None else signature
    return data[: lay.envelope_start] + envelope_bytes + signature + struct.pack(">I8s", len(envelope_bytes), END)


OPS = ("verify", "read", "unpack")


def run(op: str, path: Path, out: Path, trust: Trust, keys: Keyring | None) -> Verified:
    if op == "verify":
        return verify(path, trust, keys)
    if op == "read":
        return read(path, trust, keys)
    return unpack(path, out, trust, keys)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (and put back pytest-timeout's alarm afterwards)."""

    def on_alarm(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


class MemoKeys:
    """A keyring's data keys, memoised (the byte sweeps verify thousands of times)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._known: dict[tuple[str, int | None], DataKey] = {}

    def data_key(self, name: str = "default", version: int | None = None) -> DataKey:
        if (name, version) not in self._known:
            self._known[(name, version)] = self._keyring.data_key(name, version)
        return self._known[(name, version)]


# -- shared artifacts for the tamper matrix (nothing here changes the keyring) -------------------------
@dataclass(frozen=True)
class Packed:
    keys: Keyring
    signer: SigningKey
    artifacts: dict[str, bytes]  # "encrypted" / "plain" (3.2 MB, multi-chunk), "small-encrypted" / "small-plain"


@pytest.fixture(scope="module")
def packed(
    tmp_path_factory: pytest.TempPathFactory,
    open_artifact_keyring: Callable[[Path], Keyring],
    write_model_dir: Callable[..., Path],
) -> Packed:
    root = tmp_path_factory.mktemp("packed")
    keys = open_artifact_keyring(root / "keys")
    signer = keys.signing_key()
    big = write_model_dir(root / "big", big=True)
    small = write_model_dir(root / "small")
    artifacts = {}
    for label, source in (("", big), ("small-", small)):
        for kind, key_source in (("encrypted", keys), ("plain", None)):
            dest = root / f"{label}{kind}.pvm"
            pack(source, dest, name="model", version="1", signer=signer, keys=key_source)
            artifacts[f"{label}{kind}"] = dest.read_bytes()
            verify(dest, keys.verify_key, keys)  # the untampered artifacts are valid
    lay = layout(artifacts["encrypted"])
    assert len(lay.chunks) == 4  # three full chunks and a partial one
    assert lay.chunk(3)[1] - lay.chunk(3)[0] < SEALED_CHUNK
    return Packed(keys, signer, artifacts)


Tamper = Callable[[bytes, Layout], bytes]


def flip(where: Callable[[Layout], int], bit: int = 0) -> Tamper:
    def tamper(data: bytes, lay: Layout) -> bytes:
        changed = bytearray(data)
        changed[where(lay)] ^= 1 << bit
        return bytes(changed)

    return tamper


def keep(upto: Callable[[Layout], int]) -> Tamper:
    return lambda data, lay: data[: upto(lay)]


def cut(start: Callable[[Layout], int], end: Callable[[Layout], int]) -> Tamper:
    """Remove ``data[start:end]`` (the envelope, signature and trailer stay intact)."""
    return lambda data, lay: data[: start(lay)] + data[end(lay) :]


def insert(at: Callable[[Layout], int], what: Callable[[bytes, Layout], bytes]) -> Tamper:
    return lambda data, lay: data[: at(lay)] + what(data, lay) + data[at(lay) :]


def swap(first: Callable[[Layout], tuple[int, int]], second: Callable[[Layout], tuple[int, int]]) -> Tamper:
    """Exchange two equally long, non-overlapping regions (``first`` before ``second``)."""

    def tamper(data: bytes, lay: Layout) -> bytes:
        (a, b), (c, d) = first(lay), second(lay)
        assert b - a == d - c and b <= c
        return data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:]

    return tamper


def overwrite(target: Callable[[Layout], tuple[int, int]], source: Callable[[Layout], tuple[int, int]]) -> Tamper:
    def tamper(data: bytes, lay: Layout) -> bytes:
        (a, b), (c, d) = target(lay), source(lay)
        assert b - a == d - c
        return data[:a] + data[c:d] + data[b:]

    return tamper


def edit_envelope(**update: object) -> Tamper:
    """Change a field of the (valid JSON) envelope and keep the old signature."""

    def tamper(data: bytes, lay: Layout) -> bytes:
        return with_envelope(data, lay, canonical(lay.envelope.model_copy(update=update)))

    return tamper


def chunk(index: int) -> Callable[[Layout], tuple[int, int]]:
    return lambda lay: lay.chunk(index)


def block(index: int) -> Callable[[Layout], tuple[int, int]]:
    """A 1 MiB block of a plain payload, inside the big tensor file."""
    return lambda lay: (
        lay.file_starts["big.safetensors"] + index * CHUNK,
        lay.file_starts["big.safetensors"] + (index + 1) * CHUNK,
    )


COMMON: list[tuple[str, Tamper]] = [
    ("truncated-to-nothing", keep(lambda lay: 0)),
    ("truncated-after-magic", keep(lambda lay: len(MAGIC))),
    ("truncated-mid-payload", keep(lambda lay: len(MAGIC) + CHUNK + 1000)),
    ("truncated-at-envelope", keep(lambda lay: lay.envelope_start)),
    ("truncated-mid-signature", keep(lambda lay: lay.signature_start + 10)),
    ("trailer-dropped", keep(lambda lay: lay.size - TRAILER)),
    ("last-byte-dropped", keep(lambda lay: lay.size - 1)),
    ("payload-tail-cut-keeping-envelope", cut(lambda lay: lay.payload_end - 5000, lambda lay: lay.payload_end)),
    (
        "payload-middle-cut-keeping-envelope",
        cut(lambda lay: len(MAGIC) + 2 * CHUNK, lambda lay: len(MAGIC) + 2 * CHUNK + 64),
    ),
    ("bytes-appended-to-payload", insert(lambda lay: lay.payload_end, lambda data, lay: b"\0" * 16)),
    ("bytes-appended-after-trailer", lambda data, lay: data + b"\0"),
    ("magic-bit", flip(lambda lay: 3)),
    ("envelope-first-byte", flip(lambda lay: lay.envelope_start)),
    ("envelope-middle-bit", flip(lambda lay: (lay.envelope_start + lay.signature_start) // 2, 5)),
    ("envelope-last-byte", flip(lambda lay: lay.signature_start - 1, 1)),
    ("envelope-version-edited", edit_envelope(version="2")),
    ("envelope-payload-size-edited", edit_envelope(payload_size=1)),
    ("envelope-payload-digest-edited", edit_envelope(payload_sha256="0" * 64)),
    ("signature-first-bit", flip(lambda lay: lay.signature_start)),
    ("signature-last-bit", flip(lambda lay: lay.signature_start + SIGNATURE - 1, 7)),
    ("trailer-length-bit", flip(lambda lay: lay.size - TRAILER + 3)),
    ("trailer-end-bit", flip(lambda lay: lay.size - 1)),
]

ENCRYPTED: list[tuple[str, Tamper]] = [
    ("stream-header-truncated", keep(lambda lay: len(MAGIC) + 50)),
    ("final-chunk-dropped", cut(lambda lay: lay.chunk(3)[0], lambda lay: lay.payload_end)),
    ("middle-chunk-dropped", cut(lambda lay: lay.chunk(1)[0], lambda lay: lay.chunk(1)[1])),
    ("chunks-0-1-swapped", swap(chunk(0), chunk(1))),
    ("chunks-1-2-swapped", swap(chunk(1), chunk(2))),
    ("chunk-1-duplicated", insert(lambda lay: lay.chunk(1)[1], lambda data, lay: data[slice(*lay.chunk(1))])),
    ("chunk-0-replaces-chunk-1", overwrite(chunk(1), chunk(0))),
    ("final-chunk-duplicated", insert(lambda lay: lay.payload_end, lambda data, lay: data[slice(*lay.chunk(3))])),
    ("stream-magic-bit", flip(lambda lay: len(MAGIC) + 2)),
    ("stream-chunk-size-bit", flip(lambda lay: len(MAGIC) + 10)),
    ("stream-file-id-bit", flip(lambda lay: len(MAGIC) + 20, 3)),
    ("stream-key-name-bit", flip(lambda lay: lay.key_slot[0] + 1, 0)),  # "default" -> "dffault"
    ("stream-key-name-length-bit", flip(lambda lay: lay.key_slot[0] - 1, 0)),
    ("stream-key-version-bit", flip(lambda lay: lay.key_slot[1] - 1, 1)),  # v1 -> v3
    ("stream-wrapped-key-bit", flip(lambda lay: lay.key_slot[1] + 2 + 20, 6)),
    ("stream-header-tag-bit", flip(lambda lay: len(MAGIC) + lay.header_len - 1)),
    ("chunk-0-body-bit", flip(lambda lay: lay.chunk(0)[0])),
    ("chunk-1-body-bit", flip(lambda lay: lay.chunk(1)[0] + CHUNK // 2, 4)),
    ("final-chunk-body-bit", flip(lambda lay: lay.chunk(3)[0] + 7, 2)),
    ("chunk-0-tag-bit", flip(lambda lay: lay.chunk(0)[1] - 1)),
    ("chunk-2-tag-bit", flip(lambda lay: lay.chunk(2)[1] - TAG_SIZE, 7)),
    ("final-chunk-tag-bit", flip(lambda lay: lay.payload_end - 1, 3)),
    ("envelope-says-plain", edit_envelope(encrypted=False)),
]

PLAIN: list[tuple[str, Tamper]] = [
    ("manifest-length-bit", flip(lambda lay: 11)),
    ("manifest-length-high-bit", flip(lambda lay: 8, 7)),
    ("manifest-first-byte", flip(lambda lay: 12)),
    ("manifest-middle-bit", flip(lambda lay: 12 + lay.manifest_len // 2, 5)),
    ("manifest-last-byte", flip(lambda lay: 12 + lay.manifest_len - 1, 1)),
    ("safetensors-header-bit", flip(lambda lay: lay.file_starts["model.safetensors"] + 20, 1)),
    ("safetensors-length-prefix-bit", flip(lambda lay: lay.file_starts["model.safetensors"] + 4)),
    ("small-tensor-bit", flip(lambda lay: lay.tensor("model.safetensors", "0.weight")[0] + 5, 6)),
    ("last-tensor-last-byte", flip(lambda lay: lay.tensor("model.safetensors", "2.bias")[1] - 1)),
    ("big-tensor-bit", flip(lambda lay: sum(lay.tensor("big.safetensors", "w")) // 2, 3)),
    ("config-file-bit", flip(lambda lay: lay.file_starts["config.json"] + 2)),
    ("payload-blocks-swapped", swap(block(0), block(1))),
    ("payload-block-duplicated", overwrite(block(1), block(0))),
    ("payload-block-inserted", insert(lambda lay: block(1)(lay)[0], lambda data, lay: data[slice(*block(0)(lay))])),
    ("envelope-says-encrypted", edit_envelope(encrypted=True)),
]

MATRIX = [
    pytest.param(kind, tamper, id=f"{kind}-{name}")
    for kind, cases in (("encrypted", COMMON + ENCRYPTED), ("plain", COMMON + PLAIN))
    for name, tamper in cases
]


@pytest.mark.parametrize(("kind", "tamper"), MATRIX)
def test_tampered_artifact_is_refused_and_nothing_is_released(
    packed: Packed, tmp_path: Path, kind: str, tamper: Tamper
) -> None:
    """verify, read and unpack each refuse it; unpack leaves no output directory and no ``.part`` directory."""
    original = packed.artifacts[kind]
    tampered = tamper(original, layout(original))
    assert tampered != original
    path = tmp_path / "tampered.pvm"
    path.write_bytes(tampered)

    for op in OPS:
        try:
            run(op, path, tmp_path / "out", packed.keys.verify_key, packed.keys)
        except IntegrityError as error:
            assert_refusal_line(error)
        else:
            pytest.fail(f"{op} accepted the tampered artifact")
        assert_nothing_left(tmp_path, path)


def _bulk(lay: Layout) -> list[tuple[int, int]]:
    """Regions of uniform bulk data (tensor bytes, chunk bodies), which the sweep samples."""
    if lay.envelope.encrypted:
        return [(a, b - TAG_SIZE) for a, b in map(lay.chunk, range(len(lay.chunks)))]
    assert lay.manifest is not None
    return [lay.tensor(f.path, t.name) for f in lay.manifest.files for t in f.tensors or []]


@pytest.mark.parametrize("kind", ["small-encrypted", "small-plain"])
def test_every_single_bit_flip_is_refused(packed: Packed, tmp_path: Path, kind: str) -> None:
    """One bit flipped in each byte of a whole artifact, in turn (bit ``offset % 8``): always IntegrityError.

    Every byte of the framing, stream header (key slot included), manifest, safetensors headers, envelope,
    signature and trailer is tried; tensor bytes and chunk bodies, uniform bulk, every 5th byte.
    """
    original = packed.artifacts[kind]
    lay = layout(original)
    trust = trust_only([packed.signer.verify_key])
    keys = MemoKeys(packed.keys)
    bulk = _bulk(lay)
    offsets = [o for o in range(len(original)) if o % 5 == 0 or not any(a <= o < b for a, b in bulk)]
    assert len(offsets) > len(original) // 4
    path = tmp_path / "tampered.pvm"
    path.write_bytes(original)
    fd = os.open(path, os.O_RDWR)
    try:
        with deadline(120):  # a parser that loops on some flip fails here instead of hanging the run
            for offset in offsets:
                os.pwrite(fd, bytes([original[offset] ^ (1 << (offset % 8))]), offset)
                try:
                    verify(path, trust, keys)
                except IntegrityError as error:
                    assert_refusal_line(error)
                else:
                    pytest.fail(f"a bit flipped at offset {offset} of {len(original)} was accepted")
                os.pwrite(fd, original[offset : offset + 1], offset)
    finally:
        os.close(fd)
    verify(path, trust, keys)  # the file is back to the original


def test_key_slot_naming_an_unknown_key_version_is_an_integrity_error(packed: Packed, tmp_path: Path) -> None:
    original = packed.artifacts["small-encrypted"]
    lay = layout(original)
    tampered = bytearray(original)
    tampered[lay.key_slot[1] - 1] ^= 0x04  # key version 1 -> 5, which this keyring does not have
    path = tmp_path / "tampered.pvm"
    path.write_bytes(tampered)
    with pytest.raises(IntegrityError, match="v5") as refused:
        verify(path, packed.keys.verify_key, packed.keys)
    assert_refusal_line(refused.value)


def test_zero_manifest_length_is_refused_not_a_hang(packed: Packed, tmp_path: Path) -> None:
    tampered = bytearray(packed.artifacts["small-plain"])
    tampered[8:12] = bytes(4)  # anyone can edit a plain payload; the digests are checked as it streams
    path = tmp_path / "tampered.pvm"
    path.write_bytes(tampered)
    with deadline(5), pytest.raises(IntegrityError, match="manifest length"):
        verify(path, packed.keys.verify_key)


def test_payload_of_one_artifact_under_the_envelope_of_another_is_refused(packed: Packed, tmp_path: Path) -> None:
    plain, small = packed.artifacts["plain"], packed.artifacts["small-plain"]
    spliced = plain[: layout(plain).payload_end] + small[layout(small).payload_end :]
    path = tmp_path / "spliced.pvm"
    path.write_bytes(spliced)
    with pytest.raises(IntegrityError, match="does not match its signed digest"):
        verify(path, packed.keys.verify_key)


# -- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_round_trip(
    tmp_path: Path,
    big_model_dir: Path,
    artifact_keyring: Keyring,
    reference_spec: ModelSpec,
    reference_model: torch.nn.Module,
    encrypted: bool,
) -> None:
    (big_model_dir / "tokenizer").mkdir()
    (big_model_dir / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (big_model_dir / "tokenizer" / "empty.txt").write_bytes(b"")
    (big_model_dir / "a-empty-first").write_bytes(b"")
    sources = tree(big_model_dir)
    signer = artifact_keyring.signing_key()
    keys = artifact_keyring if encrypted else None
    privacy = PrivacyGuarantee(epsilon=3.0, delta=1e-5, accountant="rdp", details={"noise": 1.1})
    path = tmp_path / "model.pvm"
    packed_sizes: list[int] = []

    envelope = pack(
        big_model_dir,
        path,
        name="mlp",
        version="1.0.0",
        signer=signer,
        keys=keys,
        metadata=reference_spec.to_metadata(),
        privacy=privacy,
        progress=packed_sizes.append,
    )

    assert (envelope.name, envelope.version, envelope.encrypted) == ("mlp", "1.0.0", encrypted)
    assert envelope.signer == Signer(key="signing", version=1, fingerprint=signer.verify_key.fingerprint)
    assert sum(packed_sizes) == sum(len(b) for b in sources.values())
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

    verified_sizes: list[int] = []
    verified = verify(path, artifact_keyring.verify_key, keys, progress=verified_sizes.append)
    assert verified.envelope == envelope
    assert verified.files == {}
    assert sum(verified_sizes) == envelope.payload_size
    assert (verified.key_name, verified.key_version) == (("default", 1) if encrypted else (None, None))
    manifest = verified.manifest
    assert (manifest.name, manifest.version, manifest.framework, manifest.privacy) == (
        "mlp",
        "1.0.0",
        "pytorch",
        privacy,
    )
    assert ModelSpec.from_metadata(manifest.metadata) == reference_spec
    assert [f.path for f in manifest.files] == sorted(sources)
    for entry in manifest.files:
        assert entry.size == len(sources[entry.path])
        assert entry.sha256 == hashlib.sha256(sources[entry.path]).hexdigest()
        assert (entry.tensors is not None) == entry.path.endswith(".safetensors")
    big_tensor = next(f for f in manifest.files if f.path == "big.safetensors").tensors
    assert big_tensor is not None and big_tensor[0].shape == [800_000] and big_tensor[0].dtype == "F32"

    in_memory = read(path, artifact_keyring.verify_key, keys)
    assert in_memory.files == sources
    assert in_memory.manifest == manifest

    out = tmp_path / "unpacked" / "model"
    unpacked = unpack(path, out, artifact_keyring.verify_key, keys)
    assert unpacked.manifest == manifest
    assert tree(out) == sources
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]
    with pytest.raises(UsageError, match="already exists"):
        unpack(path, out, artifact_keyring.verify_key, keys)

    loaded = load_weights(ModelSpec.from_metadata(manifest.metadata), in_memory.files["model.safetensors"])
    features = torch.randn(64, 30, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(features), reference_model(features))


def test_pack_single_safetensors_file(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring) -> None:
    path = tmp_path / "single.pvm"
    pack(model_dir / "model.safetensors", path, name="single", version="1", signer=artifact_keyring.signing_key())
    verified = read(path, artifact_keyring.verify_key)
    assert list(verified.files) == ["model.safetensors"]
    assert verified.files["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()


def test_empty_and_zero_size_tensors_round_trip(tmp_path: Path, artifact_keyring: Keyring) -> None:
    source = tmp_path / "odd"
    source.mkdir()
    safetensors.torch.save_file({}, source / "empty.safetensors")
    safetensors.torch.save_file(
        {"none": torch.zeros(0), "one": torch.ones(1), "grid": torch.zeros(0, 3)}, source / "zero.safetensors"
    )
    path = tmp_path / "odd.pvm"
    pack(source, path, name="odd", version="1", signer=artifact_keyring.signing_key(), keys=artifact_keyring)
    verified = read(path, artifact_keyring.verify_key, artifact_keyring)
    assert verified.files == tree(source)
    assert next(f for f in verified.manifest.files if f.path == "empty.safetensors").tensors == []


def test_encrypted_artifact_needs_a_keyring(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring) -> None:
    path = tmp_path / "enc.pvm"
    pack(model_dir, path, name="m", version="1", signer=artifact_keyring.signing_key(), keys=artifact_keyring)
    with pytest.raises(UsageError, match="encrypted"):
        verify(path, artifact_keyring.verify_key)


def test_payload_hides_names_of_files_and_tensors_when_encrypted(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    path = tmp_path / "enc.pvm"
    pack(model_dir, path, name="m", version="1", signer=artifact_keyring.signing_key(), keys=artifact_keyring)
    data = path.read_bytes()
    for secret in (b"config.json", b"0.weight", b"architecture", b"model.safetensors"):
        assert secret not in data


@pytest.mark.parametrize("missing", ["nothing-here", "link"])
def test_pack_refuses_a_missing_or_linked_source(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, missing: str
) -> None:
    if missing == "link":
        (tmp_path / "link").symlink_to(model_dir)
    with pytest.raises(NotFoundError):
        pack(tmp_path / missing, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    assert not (tmp_path / "a.pvm").exists()


@pytest.mark.parametrize(
    ("name", "version"), [("../evil", "1"), ("m", "../1"), ("", "1"), ("m", "a/b"), ("x" * 129, "1")]
)
def test_pack_refuses_an_invalid_identity(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, name: str, version: str
) -> None:
    with pytest.raises(UsageError) as refused:
        pack(model_dir, tmp_path / "out" / "a.pvm", name=name, version=version, signer=artifact_keyring.signing_key())
    assert_refusal_line(refused.value)
    assert not (tmp_path / "out").exists()


def test_verify_refuses_a_missing_file_and_a_foreign_file(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    with pytest.raises(NotFoundError):
        verify(tmp_path / "absent.pvm", artifact_keyring.verify_key)
    with pytest.raises(FormatError, match="magic"):
        verify(model_dir / "model.safetensors", artifact_keyring.verify_key)


# -- keys, signers and trust -------------------------------------------------------------------------
def _pack(source: Path, dest: Path, keyring: Keyring, *, encrypted: bool, signer: SigningKey | None = None) -> Path:
    pack(
        source,
        dest,
        name="model",
        version="1",
        signer=signer or keyring.signing_key(),
        keys=keyring if encrypted else None,
    )
    return dest


@pytest.mark.parametrize("op", OPS)
def test_wrong_keyring_cannot_decrypt(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, other_keyring: Keyring, op: str
) -> None:
    work = tmp_path / "work"
    path = _pack(model_dir, work / "enc.pvm", artifact_keyring, encrypted=True)
    with pytest.raises(IntegrityError, match="does not unwrap") as refused:
        run(op, path, work / "out", artifact_keyring.verify_key, other_keyring)
    assert_refusal_line(refused.value)
    assert_nothing_left(work, path)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_another_keyrings_trust_refuses_the_signer(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, other_keyring: Keyring, encrypted: bool
) -> None:
    path = _pack(model_dir, tmp_path / "a.pvm", artifact_keyring, encrypted=encrypted)
    with pytest.raises(IntegrityError, match="not a trusted key") as refused:
        verify(path, other_keyring.verify_key, artifact_keyring)
    assert_refusal_line(refused.value)


def test_deleted_key_version_makes_the_artifact_unreadable(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    work = tmp_path / "work"
    old = _pack(model_dir, work / "v1.pvm", artifact_keyring, encrypted=True)
    artifact_keyring.rotate("default")
    new = _pack(model_dir, work / "v2.pvm", artifact_keyring, encrypted=True)
    assert verify(old, artifact_keyring.verify_key, artifact_keyring).key_version == 1
    artifact_keyring.delete("default", 1)

    with pytest.raises(KeyDestroyedError) as refused:
        verify(old, artifact_keyring.verify_key, artifact_keyring)
    assert_refusal_line(refused.value)
    with pytest.raises(KeyDestroyedError):
        unpack(old, work / "out", artifact_keyring.verify_key, artifact_keyring)
    assert_nothing_left(work, old, new)
    assert verify(new, artifact_keyring.verify_key, artifact_keyring).key_version == 2


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_revoked_signer_is_refused(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, encrypted: bool) -> None:
    old = _pack(model_dir, tmp_path / "v1.pvm", artifact_keyring, encrypted=encrypted)
    artifact_keyring.rotate("signing")
    new = _pack(model_dir, tmp_path / "v2.pvm", artifact_keyring, encrypted=encrypted)
    verify(old, artifact_keyring.verify_key, artifact_keyring)  # rotation alone keeps the old signer trusted
    artifact_keyring.delete("signing", 1)

    with pytest.raises(IntegrityError, match="no longer trusted") as refused:
        verify(old, artifact_keyring.verify_key, artifact_keyring)
    assert_refusal_line(refused.value)
    assert verify(new, artifact_keyring.verify_key, artifact_keyring).envelope.signer.version == 2


def test_trust_only(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, other_keyring: Keyring) -> None:
    signer = artifact_keyring.signing_key()
    path = _pack(model_dir, tmp_path / "a.pvm", artifact_keyring, encrypted=False)

    with pytest.raises(IntegrityError, match="not among the trusted keys") as refused:
        verify(path, trust_only([]))
    assert_refusal_line(refused.value)
    with pytest.raises(IntegrityError, match="not among the trusted keys"):
        verify(path, trust_only([other_keyring.signing_key().verify_key]))

    assert verify(path, trust_only([signer.verify_key])).envelope.signer.fingerprint == signer.verify_key.fingerprint
    from_pem = VerifyKey.from_pem(signer.verify_key.pem().encode())
    verify(path, trust_only([other_keyring.signing_key().verify_key, from_pem]))


def _attacker() -> SigningKey:
    return SigningKey("signing", 1, Ed25519PrivateKey.generate())


def _forge_model(source: Path) -> None:
    """Replace the weights in ``source`` with different ones of the same architecture."""
    torch.manual_seed(99)
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in ModelSpec("mlp", 30, 2, 16).build().state_dict().items()},
        source / "model.safetensors",
    )


def test_artifact_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    _forge_model(model_dir)
    attacker = _attacker()
    path = _pack(model_dir, tmp_path / "forged.pvm", artifact_keyring, encrypted=False, signer=attacker)
    with pytest.raises(IntegrityError, match="not a trusted key"):
        verify(path, artifact_keyring.verify_key)
    verify(path, trust_only([attacker.verify_key]))  # well formed: refused only for whom it is signed by


def test_forged_envelope_claiming_the_trusted_signer_is_refused(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    genuine = _pack(model_dir, tmp_path / "genuine.pvm", artifact_keyring, encrypted=False)
    _forge_model(model_dir)
    attacker = _attacker()
    forged = _pack(model_dir, tmp_path / "forged.pvm", artifact_keyring, encrypted=False, signer=attacker)
    data = forged.read_bytes()
    lay = layout(data)
    claimed = lay.envelope.model_copy(
        update={
            "signer": parse_envelope(
                genuine.read_bytes()[
                    layout(genuine.read_bytes()).envelope_start : layout(genuine.read_bytes()).signature_start
                ]
            ).signer
        }
    )
    envelope_bytes = canonical(claimed)
    forged.write_bytes(with_envelope(data, lay, envelope_bytes, attacker.sign(MAGIC + envelope_bytes)))

    with pytest.raises(IntegrityError, match="signature does not verify") as refused:
        verify(forged, artifact_keyring.verify_key)
    assert_refusal_line(refused.value)


def test_genuine_envelope_on_a_forged_payload_is_refused(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    genuine = _pack(model_dir, tmp_path / "genuine.pvm", artifact_keyring, encrypted=False).read_bytes()
    _forge_model(model_dir)
    forged = _pack(
        model_dir, tmp_path / "forged.pvm", artifact_keyring, encrypted=False, signer=_attacker()
    ).read_bytes()
    spliced = tmp_path / "spliced.pvm"
    spliced.write_bytes(forged[: layout(forged).payload_end] + genuine[layout(genuine).payload_end :])
    with pytest.raises(IntegrityError):
        read(spliced, artifact_keyring.verify_key)


# -- rewrap ----------------------------------------------------------------------------------------------
def test_rewrap_moves_the_artifact_to_the_new_key_version(
    tmp_path: Path, big_model_dir: Path, artifact_keyring: Keyring
) -> None:
    path = _pack(big_model_dir, tmp_path / "enc.pvm", artifact_keyring, encrypted=True)
    before = path.read_bytes()
    assert rewrap(path, artifact_keyring).key_version == 1  # nothing to do before a rotation
    assert path.read_bytes() == before

    artifact_keyring.rotate("default")
    header = rewrap(path, artifact_keyring)

    assert header is not None
    assert (header.key_name, header.key_version) == ("default", 2)
    after = path.read_bytes()
    old_header = StreamHeader.parse(before[len(MAGIC) :])
    assert StreamHeader.parse(after[len(MAGIC) :]) == header
    assert header.fixed == old_header.fixed
    assert len(header.to_bytes()) == len(old_header.to_bytes())
    slot_end = len(MAGIC) + len(header.fixed) + len(header.slot)
    assert after[:slot_end] != before[:slot_end]
    end_of_header = len(MAGIC) + len(header.to_bytes())
    assert after[end_of_header:] == before[end_of_header:]  # chunks, envelope, signature, trailer
    assert [p.name for p in tmp_path.iterdir()] == ["enc.pvm"] or not any(
        p.name.endswith(".part") for p in tmp_path.iterdir()
    )

    assert verify(path, artifact_keyring.verify_key, artifact_keyring).key_version == 2
    artifact_keyring.delete("default", 1)
    verified = read(path, artifact_keyring.verify_key, artifact_keyring)
    assert verified.key_version == 2
    assert verified.files == tree(big_model_dir)


def test_rewrap_leaves_a_plain_artifact_alone(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring) -> None:
    path = _pack(model_dir, tmp_path / "plain.pvm", artifact_keyring, encrypted=False)
    before = path.read_bytes()
    artifact_keyring.rotate("default")
    assert rewrap(path, artifact_keyring) is None
    assert path.read_bytes() == before


def test_rewrap_after_the_key_was_deleted_fails_without_damage(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    path = _pack(model_dir, tmp_path / "enc.pvm", artifact_keyring, encrypted=True)
    before = path.read_bytes()
    artifact_keyring.rotate("default")
    artifact_keyring.delete("default", 1)
    with pytest.raises(KeyDestroyedError):
        rewrap(path, artifact_keyring)
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == sorted([path, tmp_path / "keys", tmp_path / "model"])


# -- formats that can run code, and other refused sources ------------------------------------------------
def _torch_checkpoint(path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, path)


PICKLED = [
    pytest.param("model.pt", lambda p: p.write_bytes(b"not even a pickle"), id="pt-suffix"),
    pytest.param("weights.pkl", lambda p: p.write_bytes(pickle.dumps({"a": 1})), id="pkl-suffix"),
    pytest.param("MODEL.PTH", lambda p: p.write_bytes(b"x"), id="upper-case-suffix"),
    pytest.param("data.bin", lambda p: p.write_bytes(pickle.dumps({"a": 1})), id="pickle-content"),
    pytest.param("legacy.bin", lambda p: p.write_bytes(pickle.dumps([1], protocol=2)), id="pickle-protocol-2"),
    pytest.param("x.bin", _torch_checkpoint, id="torch-zip-checkpoint"),
]


@pytest.mark.parametrize(("filename", "write"), PICKLED)
def test_pickle_in_a_directory_is_refused(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, filename: str, write: Callable[[Path], None]
) -> None:
    write(model_dir / filename)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeFormatError) as refused:
        pack(model_dir, out / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    assert "safetensors" in refused.value.hint
    assert_refusal_line(refused.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("filename", "write"), PICKLED)
def test_pickle_as_a_single_file_is_refused(
    tmp_path: Path, artifact_keyring: Keyring, filename: str, write: Callable[[Path], None]
) -> None:
    write(tmp_path / filename)
    with pytest.raises(UnsafeFormatError) as refused:
        pack(tmp_path / filename, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    assert "safetensors" in refused.value.hint
    assert not (tmp_path / "a.pvm").exists()


@pytest.mark.parametrize(
    "content",
    [pickle.dumps({"a": 1}, protocol=0), pickle.dumps({"a": 1}, protocol=1), b"cos\nsystem\n(S'true'\ntR."],
    ids=["protocol-0", "protocol-1", "global-reduce"],
)
def test_old_protocol_pickle_is_refused(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, content: bytes
) -> None:
    (model_dir / "weights.bin").write_bytes(content)  # never loaded: only its bytes are looked at
    with pytest.raises(UnsafeFormatError):
        pack(model_dir, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())


def test_single_non_safetensors_file_is_a_usage_error(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    with pytest.raises(UsageError) as refused:
        pack(
            model_dir / "config.json", tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key()
        )
    assert type(refused.value) is UsageError
    assert not (tmp_path / "a.pvm").exists()


@pytest.mark.parametrize("where", ["top", "nested"])
def test_directory_with_a_symlink_is_refused(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, where: str
) -> None:
    target = model_dir / "sub" if where == "nested" else model_dir
    target.mkdir(exist_ok=True)
    (target / "weights-link.safetensors").symlink_to(model_dir / "model.safetensors")
    with pytest.raises(UsageError, match="symbolic link"):
        pack(model_dir, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    assert not (tmp_path / "a.pvm").exists()


def test_directory_without_safetensors_or_files_is_refused(tmp_path: Path, artifact_keyring: Keyring) -> None:
    source = tmp_path / "src"
    (source / "empty").mkdir(parents=True)
    with pytest.raises(UsageError, match="no files"):
        pack(source, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    (source / "config.json").write_text("{}")
    with pytest.raises(UsageError, match=r"no \.safetensors"):
        pack(source, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())


def test_malformed_safetensors_is_refused(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring) -> None:
    (model_dir / "broken.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(FormatError, match=r"broken\.safetensors"):
        pack(model_dir, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    assert not (tmp_path / "a.pvm").exists()


@pytest.mark.parametrize("case", ["unsafe-file-name", "long-tensor-name"])
def test_unrepresentable_source_is_a_usage_error(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, case: str
) -> None:
    if case == "unsafe-file-name":
        (model_dir / "notes#1.txt").write_text("a character the manifest's paths do not allow\n")
    else:
        safetensors.torch.save_file({"x" * 5000: torch.zeros(1)}, model_dir / "long.safetensors")
    with pytest.raises(UsageError) as refused:
        pack(model_dir, tmp_path / "a.pvm", name="m", version="1", signer=artifact_keyring.signing_key())
    assert_refusal_line(refused.value)
    assert not (tmp_path / "a.pvm").exists()


def test_hidden_files_and_directories_are_left_out(tmp_path: Path, model_dir: Path, artifact_keyring: Keyring) -> None:
    expected = tree(model_dir)
    (model_dir / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (model_dir / ".cache" / "huggingface").mkdir(parents=True)
    (model_dir / ".cache" / "huggingface" / "weights.pkl").write_bytes(pickle.dumps(1))
    path = tmp_path / "a.pvm"
    pack(model_dir, path, name="m", version="1", signer=artifact_keyring.signing_key())
    assert read(path, artifact_keyring.verify_key).files == expected


def _safetensors_with_header_length(target: int, tensors: dict[str, torch.Tensor]) -> bytes:
    """A valid safetensors file whose JSON header is ``target`` bytes long (found by varying a tensor name)."""
    for pad in range(target):
        data = safetensors.torch.save({**tensors, "c" + "x" * pad: torch.zeros(1)})
        if struct.unpack("<Q", data[:8])[0] == target:
            return data
    raise AssertionError(f"no header of {target} bytes")


@pytest.mark.parametrize(
    ("header_length", "big"),
    [
        pytest.param(0x280, False, id="640-proto-2"),
        pytest.param(0x580, False, id="1408-proto-5"),
        pytest.param(0x558, True, id="1368-binunicode-over-1MiB"),
        pytest.param(0x278, False, id="632"),
    ],
)
def test_safetensors_whose_header_length_looks_like_a_pickle_is_accepted(
    tmp_path: Path, artifact_keyring: Keyring, header_length: int, big: bool
) -> None:
    tensors = {"layer.weight": torch.zeros(2)}
    if big:
        tensors["w"] = torch.zeros(300_000)
    data = _safetensors_with_header_length(header_length, tensors)
    safetensors.torch.load(data)  # a genuine safetensors file
    source = tmp_path / "model.safetensors"
    source.write_bytes(data)
    path = tmp_path / "a.pvm"
    pack(source, path, name="m", version="1", signer=artifact_keyring.signing_key())
    assert read(path, artifact_keyring.verify_key).files == {"model.safetensors": data}


# -- atomic pack ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_pack_failing_midway_leaves_no_output(
    tmp_path: Path, big_model_dir: Path, artifact_keyring: Keyring, existing: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "a.pvm"
    if existing:
        dest.write_bytes(b"previous artifact")

    changed: list[bool] = []

    def change_a_later_file(_count: int) -> None:  # once the first bytes of big.safetensors are out
        if not changed:
            changed.append(True)
            with (big_model_dir / "model.safetensors").open("ab") as handle:
                handle.write(b"\0")

    for keys in (artifact_keyring, None):
        changed.clear()
        with pytest.raises(UsageError, match="changed while it was being packed"):
            pack(
                big_model_dir,
                dest,
                name="m",
                version="1",
                signer=artifact_keyring.signing_key(),
                keys=keys,
                progress=change_a_later_file,
            )
        assert [p.name for p in out.iterdir()] == (["a.pvm"] if existing else [])
        if existing:
            assert dest.read_bytes() == b"previous artifact"


def test_pack_refusing_a_pickle_leaves_an_existing_artifact(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring
) -> None:
    dest = tmp_path / "out" / "a.pvm"
    _pack(model_dir, dest, artifact_keyring, encrypted=True)
    before = dest.read_bytes()
    pickle_path = model_dir / "zz.bin"
    pickle_path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeFormatError):
        _pack(model_dir, dest, artifact_keyring, encrypted=True)
    assert dest.read_bytes() == before
    assert [p.name for p in dest.parent.iterdir()] == ["a.pvm"]


# -- safetensors headers ----------------------------------------------------------------------------------
def _header(table: object) -> bytes:
    body = json.dumps(table).encode()
    return struct.pack("<Q", len(body)) + body


def _entry(first: int, last: int, dtype: str = "F32", shape: list[int] | None = None) -> dict[str, object]:
    return {"dtype": dtype, "shape": [(last - first) // 4] if shape is None else shape, "data_offsets": [first, last]}


def test_parse_header_of_a_real_safetensors_file(tmp_path: Path) -> None:
    tensors = {"b": torch.arange(6, dtype=torch.float64).reshape(2, 3), "a": torch.ones(4, dtype=torch.int8)}
    data = safetensors.torch.save(tensors, metadata={"note": "x"})
    head_len = 8 + struct.unpack("<Q", data[:8])[0]
    spans = parse_header(data[:head_len], len(data), "real")
    assert {s.name for s in spans} == {"a", "b"}
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    for span in spans:
        tensor = tensors[span.name]
        assert span.end - span.start == tensor.numel() * tensor.element_size()
        assert span.shape == tuple(tensor.shape)
        assert data[span.start : span.end] == tensor.numpy().tobytes()
    path = tmp_path / "real.safetensors"
    path.write_bytes(data)
    assert read_header(path) == spans


def test_parse_header_spans_are_absolute_and_sorted() -> None:
    head = _header({"second": _entry(8, 16), "__metadata__": {"k": "v"}, "first": _entry(0, 8)})
    assert parse_header(head, len(head) + 16, "t") == [
        TensorSpan("first", "F32", (2,), len(head), len(head) + 8),
        TensorSpan("second", "F32", (2,), len(head) + 8, len(head) + 16),
    ]


@pytest.mark.parametrize(
    ("head", "extra", "message"),
    [
        pytest.param(_header({"a": _entry(0, 8), "b": _entry(4, 12)}), 12, "overlap", id="overlapping"),
        pytest.param(_header({"a": _entry(0, 8), "b": _entry(0, 4)}), 8, "overlap", id="same-start"),
        pytest.param(_header({"a": _entry(0, 16)}), 15, "beyond the end", id="past-eof"),
        pytest.param(_header({"a": _entry(0, 8, dtype="F128")}), 8, "malformed", id="bad-dtype"),
        pytest.param(_header({"a": _entry(0, 8, dtype="f32")}), 8, "malformed", id="lower-case-dtype"),
        pytest.param(_header({"a": _entry(8, 0)}), 8, "malformed", id="reversed-offsets"),
        pytest.param(_header({"a": _entry(-4, 4)}), 8, "malformed", id="negative-offset"),
        pytest.param(_header({"a": _entry(0, 8, shape=[-2])}), 8, "malformed", id="negative-dim"),
        pytest.param(_header({"a": _entry(0, 8, shape=[2.0])}), 8, "malformed", id="float-dim"),
        pytest.param(
            _header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}}), 8, "malformed", id="float-offset"
        ),
        pytest.param(
            _header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}),
            8,
            "malformed",
            id="three-offsets",
        ),
        pytest.param(_header({"a": {"dtype": "F32", "shape": [2]}}), 8, "malformed", id="no-offsets"),
        pytest.param(_header({"a": [1, 2]}), 8, "malformed", id="entry-not-object"),
        pytest.param(_header({"a": "F32"}), 8, "malformed", id="entry-string"),
        pytest.param(_header([1, 2]), 0, "not an object", id="table-not-object"),
        pytest.param(struct.pack("<Q", 5) + b"nope!", 0, "not JSON", id="not-json"),
        pytest.param(struct.pack("<Q", 2) + b"\xff\xfe", 0, "not JSON", id="not-utf8"),
        pytest.param(struct.pack("<Q", 100) + b"{}", 0, "bad header length", id="short-header"),
        pytest.param(b"\x02\x00\x00", 0, "bad header length", id="short-prefix"),
        pytest.param(struct.pack("<Q", MAX_HEADER + 1) + b"{}", 0, "over the", id="huge-header-length"),
        pytest.param(struct.pack("<Q", 2**63) + b"{}", 0, "over the", id="absurd-header-length"),
    ],
)
def test_parse_header_refuses(head: bytes, extra: int, message: str) -> None:
    with pytest.raises(FormatError, match=message) as refused:
        parse_header(head, len(head) + extra, "t.safetensors")
    assert_refusal_line(refused.value)


_OFFSETS = st.integers(min_value=-2, max_value=600)
_TENSOR_INFO = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F128", "f32", ""]),
        "shape": st.lists(st.integers(min_value=-1, max_value=8), max_size=3),
        "data_offsets": st.lists(_OFFSETS, min_size=2, max_size=2).map(sorted) | st.lists(_OFFSETS, max_size=3),
    }
)
_TABLES = st.dictionaries(
    st.text(max_size=8), _TENSOR_INFO | st.none() | st.integers() | st.lists(st.integers(), max_size=3), max_size=5
)


@settings(max_examples=150, deadline=None)
@given(table=_TABLES, extra=st.integers(min_value=0, max_value=700))
def test_parse_header_raises_only_format_error(table: dict[str, object], extra: int) -> None:
    head = _header(table)
    try:
        spans = parse_header(head, len(head) + extra, "fuzz")
    except FormatError as error:
        assert_refusal_line(error)
        return
    for span in spans:
        assert len(head) <= span.start <= span.end <= len(head) + extra
    for before, after in itertools.pairwise(spans):
        assert before.end <= after.start


@settings(max_examples=150, deadline=None)
@given(head=st.binary(max_size=64), extra=st.integers(min_value=0, max_value=64))
def test_parse_header_of_random_bytes_raises_only_format_error(head: bytes, extra: int) -> None:
    with contextlib.suppress(FormatError):
        parse_header(head, len(head) + extra, "fuzz")


def test_parse_header_refuses_a_header_longer_than_the_file() -> None:
    head = _header({})
    with pytest.raises(FormatError, match="bad header length"):
        parse_header(head, len(head) - 1, "t")


def test_read_header_refuses_a_tiny_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="too short"):
        read_header(path)


# -- more rewrap and unpack edges ---------------------------------------------------------------------------
def test_rewrap_under_another_key_name(tmp_path: Path, big_model_dir: Path, artifact_keyring: Keyring) -> None:
    path = _pack(big_model_dir, tmp_path / "enc.pvm", artifact_keyring, encrypted=True)
    before = path.read_bytes()
    artifact_keyring.create("models", "aead")

    header = rewrap(path, artifact_keyring, "models")

    assert header is not None and (header.key_name, header.key_version) == ("models", 1)
    after = path.read_bytes()
    old_header_len = len(StreamHeader.parse(before[len(MAGIC) :]).to_bytes())
    assert len(after) - len(before) == len("models") - len("default")  # only the key slot changed length
    assert after[len(MAGIC) + len(header.to_bytes()) :] == before[len(MAGIC) + old_header_len :]
    artifact_keyring.rotate("default")
    artifact_keyring.delete("default", 1)
    verified = read(path, artifact_keyring.verify_key, artifact_keyring)
    assert (verified.key_name, verified.key_version) == ("models", 1)
    assert verified.files == tree(big_model_dir)


@pytest.mark.parametrize("obstacle", ["file", "directory", "dangling-symlink"])
def test_unpack_never_writes_into_an_existing_path(
    tmp_path: Path, model_dir: Path, artifact_keyring: Keyring, obstacle: str
) -> None:
    path = _pack(model_dir, tmp_path / "a.pvm", artifact_keyring, encrypted=False)
    out = tmp_path / "out"
    target = tmp_path / "elsewhere"
    if obstacle == "file":
        out.write_bytes(b"keep")
    elif obstacle == "directory":
        out.mkdir()
    else:
        out.symlink_to(target)
    with pytest.raises(UsageError, match="exists"):
        unpack(path, out, artifact_keyring.verify_key)
    assert not target.exists()
    if obstacle == "file":
        assert out.read_bytes() == b"keep"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_verify_refuses_a_directory(tmp_path: Path, artifact_keyring: Keyring) -> None:
    with pytest.raises(NotFoundError, match="not a file"):
        verify(tmp_path, artifact_keyring.verify_key)
