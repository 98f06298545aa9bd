"""FF1 (NIST SP 800-38G): the NIST sample vectors, round trips over several radixes, and the domain rules."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.crypto import fpe
from privet.crypto.fpe import ALNUM, DIGITS, FF1, LOWER_ALNUM, min_length
from privet.errors import UsageError

# NIST FF1 samples (FF1samples.pdf): keys, tweaks and radix 10 / 36 plaintexts shared by the 9 samples.
KEY_128 = "2B7E151628AED2A6ABF7158809CF4F3C"
KEY_192 = KEY_128 + "EF4359D8D580AA4F"
KEY_256 = KEY_192 + "7F036D6F04FC6A94"
TWEAK_10 = "39383736353433323130"
TWEAK_11 = "3737373770717273373737"
PT_10 = "0123456789"
PT_36 = "0123456789abcdefghi"

NIST_SAMPLES = [
    (KEY_128, "", 10, PT_10, "2433477484"),
    (KEY_128, TWEAK_10, 10, PT_10, "6124200773"),
    (KEY_128, TWEAK_11, 36, PT_36, "a9tv40mll9kdu509eum"),
    (KEY_192, "", 10, PT_10, "2830668132"),
    (KEY_192, TWEAK_10, 10, PT_10, "2496655549"),
    (KEY_192, TWEAK_11, 36, PT_36, "xbj3kv35jrawxv32ysr"),
    (KEY_256, "", 10, PT_10, "6657667009"),
    (KEY_256, TWEAK_10, 10, PT_10, "1001623463"),
    (KEY_256, TWEAK_11, 36, PT_36, "xs8a0azh2avyalyzuwd"),
]


@pytest.mark.parametrize(
    ("key", "tweak", "radix", "plaintext", "ciphertext"), NIST_SAMPLES, ids=[f"sample-{i}" for i in range(1, 10)]
)
def test_nist_sample(key: str, tweak: str, radix: int, plaintext: str, ciphertext: str) -> None:
    cipher = FF1(bytes.fromhex(key), radix)
    assert cipher.encrypt(plaintext, bytes.fromhex(tweak)) == ciphertext
    assert cipher.decrypt(ciphertext, bytes.fromhex(tweak)) == plaintext


@pytest.mark.parametrize(("key", "tweak", "radix", "plaintext", "ciphertext"), NIST_SAMPLES[:3])
def test_nist_sample_as_numerals(key: str, tweak: str, radix: int, plaintext: str, ciphertext: str) -> None:
    cipher = FF1(bytes.fromhex(key), radix)
    numerals = [int(c, 36) for c in plaintext]
    assert cipher.encrypt_numerals(numerals, bytes.fromhex(tweak)) == [int(c, 36) for c in ciphertext]


KEY = os.urandom(32)
CIPHERS = {radix: FF1(KEY, radix) for radix in (10, 36, 62)}


@st.composite
def radix_and_text(draw: st.DrawFn) -> tuple[int, str]:
    radix = draw(st.sampled_from(sorted(CIPHERS)))
    text = draw(st.text(alphabet=ALNUM[:radix], min_size=min_length(radix), max_size=48))
    return radix, text


@settings(max_examples=150, deadline=None)
@given(radix_and_text(), st.binary(max_size=24))
def test_round_trip(case: tuple[int, str], tweak: bytes) -> None:
    radix, text = case
    cipher = CIPHERS[radix]
    encrypted = cipher.encrypt(text, tweak)
    assert len(encrypted) == len(text)
    assert set(encrypted) <= set(ALNUM[:radix])
    assert cipher.decrypt(encrypted, tweak) == text


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([16, 24, 32]), st.integers(min_value=0, max_value=10**12 - 1))
def test_round_trip_key_sizes(size: int, number: int) -> None:
    cipher = FF1(bytes(range(size)), 10)
    text = f"{number:012d}"
    assert cipher.decrypt(cipher.encrypt(text, b"t"), b"t") == text


@pytest.mark.parametrize("radix", [2, 3, 255, 256, 1000, 65535, 65536])
def test_round_trip_numerals_other_radixes(radix: int) -> None:
    cipher = FF1(KEY, radix)
    n = min_length(radix) + 5
    numerals = [(i * 7919 + 3) % radix for i in range(n)]
    encrypted = cipher.encrypt_numerals(numerals, b"tweak")
    assert len(encrypted) == n
    assert all(0 <= x < radix for x in encrypted)
    assert cipher.decrypt_numerals(encrypted, b"tweak") == numerals


def test_custom_alphabet() -> None:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, O
    cipher = FF1(KEY, alphabet=alphabet)
    assert cipher.radix == 24
    out = cipher.encrypt("HELLOWRLD".replace("O", "P"))
    assert set(out) <= set(alphabet)
    assert cipher.decrypt(out) == "HELLOWRLD".replace("O", "P")


def test_tweak_and_key_change_the_ciphertext() -> None:
    text = "12345678901234"
    base = FF1(KEY, 10).encrypt(text, b"a")
    assert FF1(KEY, 10).encrypt(text, b"b") != base
    assert FF1(os.urandom(32), 10).encrypt(text, b"a") != base
    assert FF1(KEY, 10).encrypt(text, b"a") == base  # deterministic


@pytest.mark.parametrize(("radix", "expected"), [(2, 20), (10, 6), (16, 5), (36, 4), (62, 4), (1000, 2), (65536, 2)])
def test_min_length_follows_rev1_domain_rule(radix: int, expected: int) -> None:
    assert min_length(radix) == expected
    assert radix**expected >= 1_000_000
    assert expected == 2 or radix ** (expected - 1) < 1_000_000


def test_too_short_is_refused_without_showing_the_value() -> None:
    cipher = FF1(KEY, 10)
    with pytest.raises(UsageError) as info:
        cipher.encrypt("98765")
    assert "98765" not in str(info.value.one_line())
    assert "6" in info.value.message
    assert len(cipher.encrypt("987654")) == 6
    with pytest.raises(UsageError):
        FF1(KEY, 2).encrypt_numerals([0, 1] * 9 + [1])  # 19 bits < 10**6


def test_max_length_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fpe, "MAX_LENGTH", 10)
    cipher = FF1(KEY, 10)
    assert cipher.decrypt(cipher.encrypt("0123456789")) == "0123456789"
    with pytest.raises(UsageError, match="longer"):
        cipher.encrypt("01234567890")


def test_character_outside_alphabet_is_refused_without_showing_it() -> None:
    with pytest.raises(UsageError) as info:
        FF1(KEY, 10).encrypt("12345Q789")
    assert "Q" not in info.value.one_line()
    with pytest.raises(UsageError):
        FF1(KEY, 36).encrypt("ABCDEFG")  # the radix-36 alphabet is lower case


@pytest.mark.parametrize("key", [b"", b"x" * 15, b"x" * 20, b"x" * 64])
def test_bad_key_sizes(key: bytes) -> None:
    with pytest.raises(UsageError):
        FF1(key, 10)


@pytest.mark.parametrize("radix", [0, 1, 65537])
def test_bad_radix(radix: int) -> None:
    with pytest.raises(UsageError):
        FF1(KEY, radix)


def test_alphabet_checks_and_large_radix_without_alphabet() -> None:
    with pytest.raises(UsageError):
        FF1(KEY, alphabet="0123456789A1")
    cipher = FF1(KEY, 100)
    assert cipher.alphabet is None
    with pytest.raises(UsageError):
        cipher.encrypt("1234")
    with pytest.raises(UsageError):
        cipher.encrypt_numerals([1, 2, 100, 4])  # numeral outside [0, radix)
    assert FF1(KEY, 10).alphabet == DIGITS
    assert FF1(KEY, 36).alphabet == LOWER_ALNUM


def test_repr_hides_the_key() -> None:
    assert KEY.hex() not in repr(FF1(KEY, 10))
    assert "secret" in repr(FF1(KEY, 10))
