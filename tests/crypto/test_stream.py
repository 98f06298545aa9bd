"""Streaming AEAD: round trips, the tamper matrix, rotation, crypto-shredding, header parsing, atomicity.

Files here use 4 KiB chunks (chunk_log2=12) so that several chunks fit in a few kilobytes.
"""

from __future__ import annotations

import io
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.crypto import (
    Keyring,
    StreamHeader,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    encrypt_stream,
    from_env_value,
    new_env_value,
    rewrap_file,
)
from privet.crypto.stream import MAGIC, TAG_SIZE
from privet.errors import (
    FormatError,
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    PrivetError,
    UsageError,
)
from privet.store import Store

LOG2 = 12
CHUNK = 1 << LOG2
SPAN = CHUNK + TAG_SIZE  # one full ciphertext chunk
FIXED = 27  # magic 8 | format 1 | algorithm 1 | chunk_log2 1 | file_id 16
PLAIN = random.Random(1234).randbytes(3 * CHUNK + 1000)  # 4 chunks: 3 full, 1 partial


def encrypt_bytes(data: bytes, keys: Keyring, key_name: str = "default") -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, keys, key_name, chunk_log2=LOG2)
    return out.getvalue()


def decrypt_bytes(blob: bytes, keys: Keyring) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, keys)
    return out.getvalue()


def header_len(blob: bytes) -> int:
    return len(StreamHeader.parse(blob).to_bytes())


def chunks(blob: bytes) -> list[bytes]:
    body = blob[header_len(blob) :]
    return [body[i : i + SPAN] for i in range(0, len(body), SPAN)]


def flip(blob: bytes, offset: int, bit: int = 0x01) -> bytes:
    data = bytearray(blob)
    data[offset] ^= bit
    return bytes(data)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def refused(tmp_path: Path, blob: bytes, keys: Keyring, error: type[PrivetError], match: str) -> PrivetError:
    """Decrypt ``blob`` with decrypt_file, expecting ``error``; check that nothing was released."""
    src, dst = tmp_path / "tampered.enc", tmp_path / "released.bin"
    src.write_bytes(blob)
    with pytest.raises(error, match=match) as info:
        decrypt_file(src, dst, keys)
    assert not dst.exists()
    assert leftovers(tmp_path) == []
    assert info.value.one_line().startswith("error: ")
    return info.value


@pytest.fixture
def sample(keyring: Keyring) -> bytes:
    blob = encrypt_bytes(PLAIN, keyring)
    assert len(chunks(blob)) == 4
    return blob


@pytest.fixture
def other_keyring(tmp_path: Path) -> Iterator[Keyring]:
    other = Store.open(f"sqlite:///{tmp_path}/other/privet.db")
    yield Keyring.initialize(other, from_env_value(new_env_value()))
    other.close()


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "n_chunks"),
    [(0, 1), (1, 1), (CHUNK - 1, 1), (CHUNK, 1), (CHUNK + 1, 2), (3 * CHUNK, 3), (3 * CHUNK + 1000, 4)],
)
def test_round_trip(keyring: Keyring, size: int, n_chunks: int) -> None:
    data = PLAIN[:size]
    src, out = io.BytesIO(data), io.BytesIO()
    seen: list[int] = []
    stats = encrypt_stream(src, out, keyring, chunk_log2=LOG2, progress=seen.append)
    blob = out.getvalue()
    assert (stats.plaintext_bytes, stats.chunks, stats.key_name, stats.key_version) == (size, n_chunks, "default", 1)
    assert stats.ciphertext_bytes == len(blob) == header_len(blob) + size + n_chunks * TAG_SIZE
    assert sum(seen) == size
    if size >= 64:
        assert data[:64] not in blob

    back = io.BytesIO()
    stats = decrypt_stream(io.BytesIO(blob), back, keyring)
    assert back.getvalue() == data
    assert (stats.plaintext_bytes, stats.chunks, stats.ciphertext_bytes) == (size, n_chunks, len(blob))


def test_same_plaintext_encrypts_differently(keyring: Keyring) -> None:
    first, second = encrypt_bytes(b"x" * 100, keyring), encrypt_bytes(b"x" * 100, keyring)
    assert first != second
    assert StreamHeader.parse(first).file_id != StreamHeader.parse(second).file_id


def test_observe_sees_fixed_header_and_chunks(keyring: Keyring) -> None:
    seen_enc: list[bytes] = []
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(PLAIN), out, keyring, chunk_log2=LOG2, observe=lambda b: seen_enc.append(bytes(b)))
    blob = out.getvalue()
    expected = blob[:FIXED] + blob[header_len(blob) :]
    assert b"".join(seen_enc) == expected
    seen_dec: list[bytes] = []
    decrypt_stream(io.BytesIO(blob), io.BytesIO(), keyring, observe=lambda b: seen_dec.append(bytes(b)))
    assert b"".join(seen_dec) == expected


def test_file_round_trip(keyring: Keyring, tmp_path: Path) -> None:
    src, enc, dec = tmp_path / "plain.bin", tmp_path / "plain.enc", tmp_path / "plain.out"
    src.write_bytes(PLAIN)
    stats = encrypt_file(src, enc, keyring)
    assert stats.ciphertext_bytes == enc.stat().st_size
    assert StreamHeader.parse(enc.read_bytes()).chunk_size == 1 << 20  # the default
    decrypt_file(enc, dec, keyring)
    assert dec.read_bytes() == PLAIN
    assert stat.S_IMODE(enc.stat().st_mode) == stat.S_IMODE(dec.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("chunk_log2", [11, 25, 0])
def test_chunk_size_out_of_range(keyring: Keyring, chunk_log2: int) -> None:
    with pytest.raises(UsageError, match="out of range"):
        encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), keyring, chunk_log2=chunk_log2)


def test_encrypt_file_refuses_same_path(keyring: Keyring, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(PLAIN)
    with pytest.raises(UsageError, match="output path is the input path"):
        encrypt_file(path, path, keyring)
    link = tmp_path / "link.bin"
    link.symlink_to(path)
    with pytest.raises(UsageError, match="output path is the input path"):
        encrypt_file(path, link, keyring)
    assert path.read_bytes() == PLAIN
    with pytest.raises(UsageError, match="output path is the input path"):
        decrypt_file(path, path, keyring)
    with pytest.raises(UsageError, match="is not a file"):
        encrypt_file(tmp_path / "missing.bin", tmp_path / "out.enc", keyring)
    assert leftovers(tmp_path) == []


# -- the tamper matrix -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 5, FIXED - 1, FIXED, FIXED + 1, FIXED + 5, 60, "H-1"])
def test_truncated_inside_header(tmp_path: Path, keyring: Keyring, sample: bytes, cut: int | str) -> None:
    at = header_len(sample) - 1 if cut == "H-1" else cut
    refused(tmp_path, sample[:at], keyring, FormatError, "ends inside its header")


def test_truncated_after_header(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    refused(tmp_path, sample[: header_len(sample)], keyring, IntegrityError, "truncated")


@pytest.mark.parametrize("kept", [1, 2, 3])
def test_truncated_at_chunk_boundary(tmp_path: Path, keyring: Keyring, sample: bytes, kept: int) -> None:
    """Dropping whole final chunks: the new last chunk was not sealed as last."""
    blob = sample[: header_len(sample) + kept * SPAN]
    refused(tmp_path, blob, keyring, IntegrityError, f"chunk {kept - 1} of the encrypted file failed")


@pytest.mark.parametrize(
    ("cut", "match"),
    [
        (100, "chunk 0 .*failed"),
        (SPAN - 1, "chunk 0 .*failed"),
        (SPAN + 5, "truncated"),  # less than a tag left of chunk 1
        (SPAN + TAG_SIZE, "chunk 1 .*failed"),
        (2 * SPAN + 2000, "chunk 2 .*failed"),
        (3 * SPAN + 1000 + TAG_SIZE - 1, "chunk 3 .*failed"),  # one byte short of the end
    ],
)
def test_truncated_mid_chunk(tmp_path: Path, keyring: Keyring, sample: bytes, cut: int, match: str) -> None:
    refused(tmp_path, sample[: header_len(sample) + cut], keyring, IntegrityError, match)


@pytest.mark.parametrize(
    ("order", "first_bad"),
    [
        ([1, 0, 2, 3], 0),  # swap
        ([0, 2, 1, 3], 1),  # swap
        ([0, 1, 1, 2, 3], 2),  # duplicate
        ([0, 0, 1, 2, 3], 1),  # duplicate
        ([0, 1, 2, 3, 3], 3),  # duplicate the final chunk
        ([0, 2, 3], 1),  # drop a middle chunk
        ([0, 1, 3], 2),  # drop a middle chunk
    ],
)
def test_chunks_reordered_duplicated_dropped(
    tmp_path: Path, keyring: Keyring, sample: bytes, order: list[int], first_bad: int
) -> None:
    parts = chunks(sample)
    blob = sample[: header_len(sample)] + b"".join(parts[i] for i in order)
    refused(tmp_path, blob, keyring, IntegrityError, f"chunk {first_bad} of the encrypted file failed")


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * TAG_SIZE, b"\x00" * (SPAN + 3), "last", "first"])
@pytest.mark.parametrize("size", [len(PLAIN), 2 * CHUNK, 0])
def test_appended_data(tmp_path: Path, keyring: Keyring, extra: bytes | str, size: int) -> None:
    blob = encrypt_bytes(PLAIN[:size], keyring)
    parts = chunks(blob)
    tail = parts[-1] if extra == "last" else parts[0] if extra == "first" else extra
    assert isinstance(tail, bytes)
    refused(tmp_path, blob + tail, keyring, IntegrityError, "failed authentication")


def test_chunk_spliced_from_another_file(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    """Same key, same position, another file: the per-file key refuses it."""
    other = chunks(encrypt_bytes(PLAIN, keyring))
    parts = chunks(sample)
    parts[1] = other[1]
    blob = sample[: header_len(sample)] + b"".join(parts)
    refused(tmp_path, blob, keyring, IntegrityError, "chunk 1 of the encrypted file failed")


# Offsets into a header for key "default" (7 bytes): fixed part 0..26, name_len 27, name 28..34,
# version 35..38, wrapped_len 39..40, wrapped key 41..100 (nonce 41..52), header tag 101..132.
@pytest.mark.parametrize(
    ("offset", "bit", "error", "match"),
    [
        (0, 0x01, FormatError, "bad magic"),
        (7, 0x80, FormatError, "bad magic"),
        (8, 0x01, FormatError, "format version"),
        (9, 0x02, FormatError, "algorithm"),
        (10, 0x80, FormatError, "out of range"),
        (10, 0x01, IntegrityError, "header was modified"),  # 2^12 -> 2^13: in range, but authenticated
        (11, 0x01, IntegrityError, "does not unwrap"),  # file_id
        (26, 0x80, IntegrityError, "does not unwrap"),
        (27, 0x01, FormatError, "wrong length"),  # name_len 7 -> 6 shifts the slot
        (28, 0x80, FormatError, "key name is malformed"),  # not ASCII
        (28, 0x20, FormatError, "key name is malformed"),  # upper case
        (39, 0x01, FormatError, "wrong length"),  # wrapped_len
        (41, 0x01, IntegrityError, "does not unwrap"),  # wrap nonce
        (60, 0x10, IntegrityError, "does not unwrap"),  # wrapped file key
        (100, 0x80, IntegrityError, "does not unwrap"),  # wrap tag
        (101, 0x01, IntegrityError, "header was modified"),  # header tag
        (132, 0x80, IntegrityError, "header was modified"),
    ],
)
def test_flipped_bit_in_header(
    tmp_path: Path, keyring: Keyring, sample: bytes, offset: int, bit: int, error: type, match: str
) -> None:
    assert header_len(sample) == 133
    exc = refused(tmp_path, flip(sample, offset, bit), keyring, error, match)
    assert type(exc) is error


def test_flipped_bit_in_key_name_pointing_at_another_key(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    # 'default' -> 'eefault': with no such key the file is refused as naming a key this keyring lacks ...
    refused(tmp_path, flip(sample, 28), keyring, IntegrityError, "names key eefault v1, which this keyring does not")
    # ... and when that key exists, its key cannot unwrap the file key.
    keyring.create("eefault", "aead")
    refused(tmp_path, flip(sample, 28), keyring, IntegrityError, "does not unwrap under eefault v1")


def test_edited_key_version(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    # version 1 -> 3 (last byte of the u32) and 1 -> 2^24 + 1 (first byte)
    refused(tmp_path, flip(sample, 38, 0x02), keyring, IntegrityError, "names key default v3, which")
    refused(tmp_path, flip(sample, 35, 0x01), keyring, IntegrityError, f"names key default v{2**24 + 1}, which")
    keyring.rotate("default")
    keyring.rotate("default")
    refused(tmp_path, flip(sample, 38, 0x02), keyring, IntegrityError, "does not unwrap under default v3")
    decrypt_file_ok(tmp_path, sample, keyring)


def decrypt_file_ok(tmp_path: Path, blob: bytes, keys: Keyring) -> bytes:
    src, dst = tmp_path / "good.enc", tmp_path / "good.out"
    src.write_bytes(blob)
    decrypt_file(src, dst, keys)
    data = dst.read_bytes()
    dst.unlink()
    return data


@pytest.mark.parametrize(("index", "where"), [(0, 0), (0, 2000), (1, CHUNK - 1), (2, 7), (3, 999)])
def test_flipped_bit_in_chunk_body(tmp_path: Path, keyring: Keyring, sample: bytes, index: int, where: int) -> None:
    offset = header_len(sample) + index * SPAN + where
    refused(tmp_path, flip(sample, offset, 0x04), keyring, IntegrityError, f"chunk {index} of the encrypted file")


@pytest.mark.parametrize(("index", "tag_byte"), [(0, 0), (1, 15), (2, 8), (3, 0), (3, 15)])
def test_flipped_bit_in_chunk_tag(tmp_path: Path, keyring: Keyring, sample: bytes, index: int, tag_byte: int) -> None:
    parts = chunks(sample)
    offset = header_len(sample) + sum(len(p) for p in parts[: index + 1]) - TAG_SIZE + tag_byte
    refused(tmp_path, flip(sample, offset, 0x40), keyring, IntegrityError, f"chunk {index} of the encrypted file")


def test_every_single_bit_flip_in_header_is_refused(keyring: Keyring) -> None:
    blob = encrypt_bytes(b"small secret", keyring)
    for offset in range(header_len(blob)):
        for bit in (0x01, 0x80):
            with pytest.raises((IntegrityError, KeyNotFoundError)):
                decrypt_bytes(flip(blob, offset, bit), keyring)
    assert decrypt_bytes(blob, keyring) == b"small secret"


def test_wrong_keyring(tmp_path: Path, sample: bytes, other_keyring: Keyring) -> None:
    refused(tmp_path, sample, other_keyring, IntegrityError, "does not unwrap under default v1")


def test_tampered_file_does_not_replace_existing_output(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    src, dst = tmp_path / "in.enc", tmp_path / "out.bin"
    src.write_bytes(sample[:-1])
    dst.write_bytes(b"previous contents")
    with pytest.raises(IntegrityError):
        decrypt_file(src, dst, keyring)
    assert dst.read_bytes() == b"previous contents"
    assert leftovers(tmp_path) == []


# -- rotation and crypto-shredding -----------------------------------------------------------------


def test_rotation_and_rewrap(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    path = tmp_path / "model.enc"
    path.write_bytes(sample)
    keyring.rotate("default")
    assert decrypt_file_ok(tmp_path, sample, keyring) == PLAIN  # old files still open
    assert StreamHeader.parse(encrypt_bytes(b"new", keyring)).key_version == 2  # new files use v2

    old_header = StreamHeader.parse(sample)
    new_header = rewrap_file(path, keyring)
    rewrapped = path.read_bytes()
    assert (new_header.key_name, new_header.key_version) == ("default", 2)
    assert StreamHeader.parse(rewrapped) == new_header
    assert new_header.fixed == old_header.fixed
    assert rewrapped[:FIXED] == sample[:FIXED]
    assert rewrapped[header_len(rewrapped) :] == sample[header_len(sample) :]  # chunks byte-identical
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []

    keyring.delete("default", 1)
    refused(tmp_path, sample, keyring, KeyDestroyedError, "default v1 was deleted")
    assert decrypt_file_ok(tmp_path, rewrapped, keyring) == PLAIN


def test_rewrap_is_a_no_op_under_the_primary(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    path = tmp_path / "model.enc"
    path.write_bytes(sample)
    assert rewrap_file(path, keyring) == StreamHeader.parse(sample)
    assert path.read_bytes() == sample


def test_rewrap_to_another_key_keeps_prefix(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    path = tmp_path / "artifact.bin"
    prefix = b"SIGNED ENVELOPE\x00\x01"
    path.write_bytes(prefix + sample)
    keyring.create("archive", "aead")
    header = rewrap_file(path, keyring, "archive", offset=len(prefix))
    data = path.read_bytes()
    assert data.startswith(prefix)
    assert (header.key_name, header.key_version) == ("archive", 1)
    assert data[len(prefix) + header_len(data[len(prefix) :]) :] == sample[header_len(sample) :]
    assert decrypt_bytes(data[len(prefix) :], keyring) == PLAIN


def test_rewrap_refuses_tampered_header(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    path = tmp_path / "model.enc"
    tampered = flip(sample, 101)
    path.write_bytes(tampered)
    keyring.rotate("default")
    with pytest.raises(IntegrityError, match="header was modified"):
        rewrap_file(path, keyring)
    assert path.read_bytes() == tampered
    assert leftovers(tmp_path) == []


def test_deleted_key_version(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    keyring.rotate("default")
    keyring.delete("default", 1)
    exc = refused(tmp_path, sample, keyring, KeyDestroyedError, "v1 was deleted")
    assert "cannot be recovered" in exc.hint


def test_crypto_shredding_whole_key(tmp_path: Path, keyring: Keyring, sample: bytes) -> None:
    keyring.rotate("default")
    under_v2 = encrypt_bytes(PLAIN, keyring)
    assert decrypt_bytes(under_v2, keyring) == PLAIN
    keyring.delete("default")
    for blob in (sample, under_v2):
        refused(tmp_path, blob, keyring, KeyDestroyedError, "was deleted")
    with pytest.raises(KeyDestroyedError):
        encrypt_bytes(b"more", keyring)


# -- header parsing (property-based) ---------------------------------------------------------------

_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
key_names = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(alphabet=_FIRST + "._:-", max_size=63))
headers = st.builds(
    StreamHeader,
    chunk_log2=st.integers(12, 24),
    file_id=st.binary(min_size=16, max_size=16),
    key_name=key_names,
    key_version=st.integers(0, 2**32 - 1),
    wrapped_key=st.binary(min_size=60, max_size=60),
    tag=st.binary(min_size=32, max_size=32),
)


@settings(deadline=None)  # parsing is fast; no flaky timing failures on a loaded machine
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: MAGIC + b"\x01\x01" + b),
        st.binary(max_size=300).map(lambda b: MAGIC + b"\x01\x01\x0c" + bytes(16) + b),
    )
)
def test_parse_arbitrary_bytes_raises_only_format_error(data: bytes) -> None:
    try:
        header = StreamHeader.parse(data)
    except FormatError:
        return
    assert data.startswith(header.to_bytes())


@settings(deadline=None)  # parsing is fast; no flaky timing failures on a loaded machine
@given(headers)
def test_header_round_trip(header: StreamHeader) -> None:
    assert StreamHeader.parse(header.to_bytes()) == header
    assert StreamHeader.parse(header.to_bytes() + b"trailing chunk bytes") == header


@settings(deadline=None)  # parsing is fast; no flaky timing failures on a loaded machine
@given(headers, st.data())
def test_header_with_one_byte_changed(header: StreamHeader, data: st.DataObject) -> None:
    raw = bytearray(header.to_bytes())
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]))
    try:
        parsed = StreamHeader.parse(bytes(raw))
    except FormatError:
        return
    assert parsed != header
    assert bytes(raw).startswith(parsed.to_bytes())


def test_real_header_round_trip(sample: bytes) -> None:
    header = StreamHeader.parse(sample)
    assert (header.key_name, header.key_version, header.chunk_size) == ("default", 1, CHUNK)
    assert sample.startswith(header.to_bytes())
