"""privet.crypto.keyed: known-answer vectors (RFC 5869, RFC 4231, RFC 5297), round trips, and tampering."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from privet.crypto import Aead, DeterministicAead, KeyedStream, derive_key, keyed_digest
from privet.crypto.keyed import NONCE_SIZE
from privet.errors import IntegrityError, UsageError

KEY = bytes(range(32))


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# -- derive_key: HKDF-SHA256 ---------------------------------------------------------------------------------------
def test_derive_key_rfc5869_case_3_no_salt() -> None:
    # No salt and no info: HKDF uses a zero-filled salt, which is what "salt=None" means here.
    okm = derive_key(b"\x0b" * 22, b"", 42)
    assert okm == h("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")


def test_derive_key_rfc5869_case_1_with_salt() -> None:
    okm = derive_key(b"\x0b" * 22, h("f0f1f2f3f4f5f6f7f8f9"), 42, salt=h("000102030405060708090a0b0c"))
    assert okm == h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_derive_key_separates_by_info_and_length() -> None:
    assert len(derive_key(KEY, b"a")) == 32
    assert derive_key(KEY, b"a") != derive_key(KEY, b"b")
    assert len(derive_key(KEY, b"a", 64)) == 64


# -- keyed_digest: HMAC-SHA256 -------------------------------------------------------------------------------------
def test_keyed_digest_rfc4231_case_2() -> None:
    assert keyed_digest(b"Jefe", b"what do ya want for nothing?") == h(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_keyed_digest_rfc4231_case_1() -> None:
    assert keyed_digest(b"\x0b" * 20, b"Hi There") == h(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


# -- KeyedStream: HMAC counter mode --------------------------------------------------------------------------------
def test_keyed_stream_is_hmac_of_counter_under_seed() -> None:
    seed = hmac.new(KEY, b"msg", hashlib.sha256).digest()
    expected = b"".join(hmac.new(seed, i.to_bytes(8, "big"), hashlib.sha256).digest() for i in range(3))
    assert KeyedStream(KEY, b"msg").read(96) == expected
    # Pinned: surrogates (and so every pseudonym ever issued) depend on these bytes.
    assert KeyedStream(KEY, b"msg").read(16) == h("dc66a576435f01714f111aee1f0811cc")


def test_keyed_stream_reads_are_contiguous_and_bound_to_key_and_message() -> None:
    whole = KeyedStream(KEY, b"m").read(100)
    stream = KeyedStream(KEY, b"m")
    assert b"".join(stream.read(n) for n in (1, 5, 31, 0, 33, 30)) == whole
    assert KeyedStream(KEY, b"n").read(100) != whole
    assert KeyedStream(bytes(32), b"m").read(100) != whole
    assert "<secret>" in repr(stream)


# -- DeterministicAead: AES-SIV ------------------------------------------------------------------------------------
def test_deterministic_aead_rfc5297_a1() -> None:
    key = h("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff")
    ad = h("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627")
    plaintext = h("11223344 55667788 99aabbcc ddee")
    expected = h("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c")
    siv = DeterministicAead(key)
    assert siv.encrypt(plaintext, [ad]) == expected
    assert siv.decrypt(expected, [ad]) == plaintext


def test_deterministic_aead_rfc5297_a2_several_associated_data() -> None:
    key = h("7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f")
    ads = [
        h("00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 77665544 33221100"),
        h("10203040 50607080 90a0"),
        h("09f91102 9d74e35b d84156c5 635688c0"),
    ]
    plaintext = b"this is some plaintext to encrypt using SIV-AES"
    expected = h(
        "7bdb6e3b 432667eb 06f4d14b ff2fbd0f cb900f2f ddbe4043 26601965 c889bf17"
        "dba77ceb 094fa663 b7a3f748 ba8af829 ea64ad54 4a272e9c 485b62a3 fd5c0d"
    )
    assert DeterministicAead(key).encrypt(plaintext, ads) == expected


def test_deterministic_aead_is_deterministic_and_fails_closed() -> None:
    siv = DeterministicAead(derive_key(KEY, b"siv", 64))
    sealed = siv.encrypt(b"John Smith", [b"ctx", b"PERSON"])
    assert siv.encrypt(b"John Smith", [b"ctx", b"PERSON"]) == sealed
    assert siv.encrypt(b"John Smith", [b"ctx", b"EMAIL"]) != sealed
    assert siv.decrypt(sealed, [b"ctx", b"PERSON"]) == b"John Smith"
    assert DeterministicAead(KEY).decrypt(DeterministicAead(KEY).encrypt(b"")) == b""
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(IntegrityError):
            siv.decrypt(bytes(tampered), [b"ctx", b"PERSON"])
    with pytest.raises(IntegrityError):
        siv.decrypt(sealed, [b"ctx", b"EMAIL"])
    with pytest.raises(IntegrityError):
        DeterministicAead(derive_key(KEY, b"other", 64)).decrypt(sealed, [b"ctx", b"PERSON"])
    with pytest.raises(IntegrityError):
        siv.decrypt(sealed[:10], [b"ctx", b"PERSON"])


@pytest.mark.parametrize("size", [0, 16, 31, 33, 65])
def test_deterministic_aead_refuses_bad_key_sizes(size: int) -> None:
    with pytest.raises(UsageError):
        DeterministicAead(bytes(size))


# -- Aead: AES-256-GCM with random nonces --------------------------------------------------------------------------
def test_aead_round_trip_with_fresh_nonces() -> None:
    aead = Aead(KEY)
    first, second = aead.seal(b"value", b"ad"), aead.seal(b"value", b"ad")
    assert first != second and first[:NONCE_SIZE] != second[:NONCE_SIZE]
    assert len(first) == NONCE_SIZE + len(b"value") + 16
    assert aead.open(first, b"ad") == aead.open(second, b"ad") == b"value"
    assert aead.open(aead.seal(b"")) == b""
    assert "<secret>" in repr(aead) and KEY.hex() not in repr(aead)


def test_aead_interoperates_with_plain_aes_gcm() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = bytes(NONCE_SIZE)
    sealed = nonce + AESGCM(KEY).encrypt(nonce, b"value", b"ad")
    assert Aead(KEY).open(sealed, b"ad") == b"value"


def test_aead_fails_closed() -> None:
    aead = Aead(KEY)
    sealed = aead.seal(b"secret value", b"ad")
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x80
        with pytest.raises(IntegrityError):
            aead.open(bytes(tampered), b"ad")
    with pytest.raises(IntegrityError):
        aead.open(sealed, b"other ad")
    with pytest.raises(IntegrityError):
        aead.open(sealed)
    with pytest.raises(IntegrityError):
        Aead(bytes(32)).open(sealed, b"ad")
    for short in (b"", sealed[:5], sealed[: NONCE_SIZE + 15]):
        with pytest.raises(IntegrityError):
            aead.open(short, b"ad")


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_aead_refuses_keys_other_than_256_bits(size: int) -> None:
    with pytest.raises(UsageError):
        Aead(bytes(size))
