"""CKKS aggregation: sums decrypt to the plain sum within 1e-4; the server's public context holds no key and cannot
decrypt; malformed, mismatched or foreign ciphertexts are refused with privet's errors, never decoded as garbage."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.errors import FormatError, IntegrityError, UsageError
from privet.he import ckks
from privet.he.ckks import FLOOD, MAX_ABS, MAX_TERMS, HEKeys, add, decrypt, encrypt

TOLERANCE = 1e-4  # the module's promise for sums of up to 1,000 updates in [-1, 1]
RAW_TOLERANCE = 1e-6  # without the flood: CKKS's own error at scale 2**40 is ~1e-8 for these sums
SLOTS = 4096  # at degree 8192
HEADER = struct.Struct(">4s16sIII")  # magic, key id, terms, length, count
KEYS_HEADER = 20  # magic and key id before TenSEAL's context


@pytest.fixture(scope="module")
def keys() -> HEKeys:
    """A client's keys, loaded the way a client loads them."""
    return HEKeys.from_secret_bytes(HEKeys.generate().secret_bytes())


@pytest.fixture(scope="module")
def server(keys: HEKeys) -> HEKeys:
    """The server's keys: only the public bytes, loaded the way the server loads them."""
    return HEKeys.from_public_bytes(keys.public_bytes())


def _updates(n: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, length))


def _reframe(data: bytes, **fields: int | bytes) -> bytes:
    """``data`` with header fields (magic, key_id, terms, length, count) replaced."""
    values = dict(zip(("magic", "key_id", "terms", "length", "count"), HEADER.unpack_from(data), strict=True))
    values.update(fields)
    return HEADER.pack(*values.values()) + data[HEADER.size :]


@pytest.mark.parametrize("length", [1, 100, SLOTS, SLOTS + 1, 3 * SLOTS - 7])
def test_the_sum_decrypts_to_the_plain_sum(keys: HEKeys, server: HEKeys, length: int) -> None:
    updates = _updates(6, length, seed=length)
    total = add([encrypt(u, keys) for u in updates], server)
    expected = updates.sum(axis=0)
    result = decrypt(total, keys)
    assert result.dtype == np.float64 and result.shape == (length,)
    assert np.abs(result - expected).max() < TOLERANCE
    assert np.abs(decrypt(total, keys, flood=0.0) - expected).max() < RAW_TOLERANCE
    assert HEADER.unpack_from(total)[2:] == (6, length, -(-length // SLOTS))


def test_extreme_values_and_a_thousand_terms_stay_within_tolerance(keys: HEKeys, server: HEKeys) -> None:
    updates = _updates(1000, 64, seed=1)
    updates[:, :8], updates[:, 8:16] = 1.0, -1.0  # sums of +-1000 in some coordinates
    total = add([encrypt(u, keys) for u in updates], server)
    assert np.abs(decrypt(total, keys) - updates.sum(axis=0)).max() < TOLERANCE
    edge = np.full(5, MAX_ABS)
    assert np.abs(decrypt(add([encrypt(edge, keys)] * 3, server), keys) - 3 * edge).max() < TOLERANCE


def test_sums_of_sums_add_up_and_count_their_terms(keys: HEKeys, server: HEKeys) -> None:
    updates = _updates(5, 300, seed=2)
    ciphertexts = [encrypt(u, keys) for u in updates]
    partial = add(ciphertexts[:2], server), add(ciphertexts[2:], server)
    total = add(list(partial), server)
    assert HEADER.unpack_from(total)[2] == 5
    assert np.abs(decrypt(total, keys) - updates.sum(axis=0)).max() < TOLERANCE
    assert np.abs(decrypt(add(ciphertexts[:1], server), keys) - updates[0]).max() < TOLERANCE  # a single update


def test_the_flood_is_fresh_gaussian_noise_of_the_stated_deviation(keys: HEKeys, server: HEKeys) -> None:
    update = _updates(1, 2 * SLOTS, seed=3)[0]
    total = add([encrypt(update, keys)], server)
    first, second = decrypt(total, keys), decrypt(total, keys)
    assert not np.array_equal(first, second)
    noise = first - update
    assert 0.9 * FLOOD < noise.std() < 1.1 * FLOOD  # 8,192 samples: the estimate is within ~2 % at 3 sigma
    assert abs(noise.mean()) < 5 * FLOOD / np.sqrt(noise.size)


def test_another_degree_works_and_has_half_as_many_slots() -> None:
    small = HEKeys.generate(4096)
    assert small.slots == 2048
    update = _updates(1, 5000, seed=4)[0]
    total = add([encrypt(update, small)] * 2, HEKeys.from_public_bytes(small.public_bytes()))
    assert HEADER.unpack_from(total)[4] == 3
    assert np.abs(decrypt(total, small) - 2 * update).max() < TOLERANCE
    with pytest.raises(UsageError, match="poly_modulus_degree 2048"):
        HEKeys.generate(2048)


def test_the_public_context_has_no_secret_key_and_cannot_decrypt(keys: HEKeys, server: HEKeys) -> None:
    public = keys.public_bytes()
    context = ts.context_from(public[KEYS_HEADER:])
    assert not context.has_secret_key() and context.is_public()
    assert not server.has_secret_key and server.key_id == keys.key_id
    assert len(public) < 200  # the parameters alone: symmetric encryption has no public key to ship
    assert repr(keys) == f"HEKeys(key_id={keys.key_id.hex()[:8]}..., degree=8192, secret)"  # no key material
    total = add([encrypt(np.ones(10), keys)], server)
    # TenSEAL itself refuses: the context has no secret key to decrypt with, nor any key to encrypt with.
    chunk = ts.ckks_vector_from(context, total[HEADER.size + 4 :])
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        chunk.decrypt()
    with pytest.raises(ValueError, match="doesn't support encryption"):
        ts.ckks_vector(context, [1.0])
    with pytest.raises(UsageError, match="decrypting needs the secret key"):
        decrypt(total, server)
    with pytest.raises(UsageError, match="encrypting needs the secret key"):
        encrypt(np.ones(10), server)
    with pytest.raises(UsageError, match="hold no secret key"):
        server.secret_bytes()


def test_loaders_refuse_garbage_and_the_wrong_kind_of_keys(keys: HEKeys) -> None:
    secret, public = keys.secret_bytes(), keys.public_bytes()
    with pytest.raises(UsageError, match="hold no secret key"):
        HEKeys.from_secret_bytes(public)
    with pytest.raises(UsageError, match="server must never have"):
        HEKeys.from_public_bytes(secret)
    for garbage in (b"", b"garbage", b"PHK1" + bytes(16), b"XXXX" + public[4:], public[:KEYS_HEADER] + b"\x00" * 64,
                    secret[: len(secret) // 2], "text"):  # fmt: skip
        with pytest.raises(FormatError):
            HEKeys.from_secret_bytes(garbage)  # type: ignore[arg-type]
        with pytest.raises(FormatError):
            HEKeys.from_public_bytes(garbage)  # type: ignore[arg-type]
    other = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    other.global_scale = 2.0**40
    with pytest.raises(FormatError, match="not privet's CKKS parameters"):
        HEKeys.from_public_bytes(public[:KEYS_HEADER] + other.serialize(save_secret_key=False))


def test_encrypt_refuses_what_it_cannot_sum_safely(keys: HEKeys) -> None:
    for bad, message in [(np.array([1.0, np.nan]), "NaN or infinite"), (np.array([np.inf]), "NaN or infinite"),
                         (np.ones((2, 3)), "1-D"), (np.array([]), "1-D"), (np.array(["a"]), "1-D"),
                         (np.array([MAX_ABS * 1.01]), "beyond")]:  # fmt: skip
        with pytest.raises(UsageError, match=message):
            encrypt(bad, keys)
    assert np.abs(decrypt(encrypt(np.arange(3, dtype=np.int32), keys), keys) - [0, 1, 2]).max() < TOLERANCE


def test_add_refuses_mismatched_and_malformed_ciphertexts(keys: HEKeys, server: HEKeys) -> None:
    short, long = encrypt(np.ones(10), keys), encrypt(np.ones(SLOTS + 10), keys)
    with pytest.raises(UsageError, match="no ciphertexts"):
        add([], server)
    with pytest.raises(FormatError, match="10 and 4106 coordinates"):
        add([short, long], server)
    with pytest.raises(FormatError, match="inconsistent"):
        add([_reframe(long, count=1)], server)  # chunk count does not match the length
    with pytest.raises(FormatError, match="inconsistent"):
        add([_reframe(long, count=3)], server)
    with pytest.raises(FormatError, match="holds 10 values, not 4096"):
        add([_swap_chunks(long)], server)  # the frame is consistent, its first chunk is not
    with pytest.raises(FormatError, match="not a privet CKKS ciphertext"):
        add([_reframe(short, magic=b"XXXX")], server)
    with pytest.raises(FormatError, match="bytes after"):
        add([short + b"\x00"], server)
    with pytest.raises(FormatError, match="truncated"):
        add([short[:-1]], server)
    with pytest.raises(FormatError, match="does not parse"):
        add([short[: HEADER.size + 4] + b"\x00" * (len(short) - HEADER.size - 4)], server)
    with pytest.raises(UsageError, match=f"exceeds the {MAX_TERMS}"):
        add([_reframe(short, terms=MAX_TERMS), short], server)
    with pytest.raises(FormatError, match="inconsistent"):
        add([_reframe(short, terms=0)], server)


def _swap_chunks(data: bytes) -> bytes:
    """A two-chunk ciphertext with its chunks in the other order: the short last chunk comes first."""
    offset, chunks = HEADER.size, []
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        chunks.append(data[offset : offset + 4 + size])
        offset += 4 + size
    return data[: HEADER.size] + b"".join(reversed(chunks))


@pytest.fixture(scope="module")
def two_chunks(keys: HEKeys) -> bytes:
    return encrypt(np.ones(SLOTS + 3), keys)


@settings(max_examples=40, deadline=None)
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_any_truncation_is_a_format_error(two_chunks: bytes, server: HEKeys, cut: float) -> None:
    with pytest.raises(FormatError):
        add([two_chunks[: int(cut * len(two_chunks))]], server)


def test_a_ciphertext_under_another_key_is_refused_not_decoded(keys: HEKeys, server: HEKeys) -> None:
    stranger = HEKeys.generate()
    foreign = encrypt(np.full(50, 0.5), stranger)
    with pytest.raises(IntegrityError, match="another federation's key"):
        add([foreign], server)
    with pytest.raises(IntegrityError, match="another federation's key"):
        decrypt(foreign, keys)
    # With the key id forged, TenSEAL decodes it under the wrong key to values around 1e7 (CKKS has no integrity);
    # decrypt refuses them because no sum of MAX_ABS-bounded updates reaches them.
    forged = _reframe(foreign, key_id=keys.key_id)
    context = ts.context_from(keys.secret_bytes()[KEYS_HEADER:])
    garbage = np.array(ts.ckks_vector_from(context, forged[HEADER.size + 4 :]).decrypt())
    assert np.abs(garbage).min() > 1e3 * MAX_ABS
    with pytest.raises(IntegrityError, match="does not decrypt to a sum of 1 updates"):
        decrypt(add([forged], server), keys)
    with pytest.raises(FormatError):  # another degree: the chunk does not even parse under these parameters
        add([_reframe(encrypt(np.ones(10), HEKeys.generate(4096)), key_id=keys.key_id)], server)


def test_decrypt_refuses_a_bad_flood(keys: HEKeys) -> None:
    total = encrypt(np.ones(3), keys)
    for flood in (-1.0, 1.0, True, float("nan")):
        with pytest.raises(UsageError, match="flood"):
            decrypt(total, keys, flood=flood)
    assert ckks.FLOOD == 2.0**-20
