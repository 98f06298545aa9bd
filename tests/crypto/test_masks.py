"""privet.crypto.masks: seed derivation, deterministic uniform expansion, and exact bit packing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privet.crypto.masks import expand, pack, packed_size, pair_seed, self_seed, unpack
from privet.errors import FormatError, UsageError

ALPHA = 1e-4  # fixed significance for the statistical tests in this file
SEED = bytes(range(32))


# -- expand --------------------------------------------------------------------------------------------------------


def test_expand_is_the_aes_ctr_keystream() -> None:
    encryptor = Cipher(algorithms.AES(SEED), modes.CTR(bytes(16))).encryptor()
    words = np.frombuffer(encryptor.update(bytes(40)), dtype="<u4")
    assert np.array_equal(expand(SEED, 10, 32), words)
    assert np.array_equal(expand(SEED, 10, 12), words & 0xFFF)


def test_expand_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    a = expand(SEED, 1000, 26)
    assert a.dtype == np.uint32
    assert np.array_equal(a, expand(SEED, 1000, 26))
    assert np.array_equal(a[:10], expand(SEED, 10, 26))  # a prefix of the same stream
    assert (a != expand(bytes(32), 1000, 26)).mean() > 0.99


@pytest.mark.parametrize("bits", [1, 7, 26, 31, 32])
def test_expand_stays_below_two_to_the_bits(bits: int) -> None:
    values = expand(os.urandom(32), 5000, bits)
    assert int(values.max()) < 1 << bits
    assert expand(SEED, 0, bits).shape == (0,)


def test_expand_is_uniform() -> None:
    values = expand(os.urandom(32), 200_000, 20)
    counts = np.bincount(values >> 14, minlength=64)  # 64 equal bins
    assert stats.chisquare(counts).pvalue > ALPHA
    assert stats.kstest(values / 2.0**20, "uniform").pvalue > ALPHA


def test_masked_fixed_value_is_uniform() -> None:
    bits = 10
    masked = (np.uint32(777) + expand(os.urandom(32), 100_000, bits)) & np.uint32((1 << bits) - 1)
    counts = np.bincount(masked, minlength=1 << bits)
    assert stats.chisquare(counts).pvalue > ALPHA


@pytest.mark.parametrize(
    "call",
    [
        lambda: expand(bytes(31), 1, 8),
        lambda: expand("x" * 32, 1, 8),
        lambda: expand(SEED, -1, 8),
        lambda: expand(SEED, 1, 0),
        lambda: expand(SEED, 1, 33),
    ],
)
def test_expand_refusals(call: object) -> None:
    with pytest.raises(UsageError):
        call()  # type: ignore[operator]


# -- seeds ---------------------------------------------------------------------------------------------------------


def test_pair_seed_is_symmetric_and_bound_to_round_and_pair() -> None:
    secret = os.urandom(32)
    seed = pair_seed(secret, b"round-1", 3, 9)
    assert len(seed) == 32
    assert seed == pair_seed(secret, b"round-1", 9, 3)
    others = {
        pair_seed(secret, b"round-2", 3, 9),
        pair_seed(secret, b"round-1", 3, 10),
        pair_seed(secret, b"round-1", 2, 9),
        pair_seed(os.urandom(32), b"round-1", 3, 9),
        self_seed(secret, b"round-1", 3),
    }
    assert seed not in others and len(others) == 5


def test_self_seed_is_bound_to_round_and_client() -> None:
    secret = os.urandom(32)
    seed = self_seed(secret, b"r", 1)
    assert seed == self_seed(secret, b"r", 1)
    assert len({seed, self_seed(secret, b"s", 1), self_seed(secret, b"r", 2)}) == 3


def test_round_id_is_length_prefixed() -> None:
    # A round id cannot absorb the indices' bytes to collide with another (round, pair).
    secret = os.urandom(32)
    assert pair_seed(secret, b"r", 1, 2) != pair_seed(secret, b"r\x00", 1, 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: pair_seed(bytes(32), b"r", 1, 1),
        lambda: pair_seed(bytes(31), b"r", 1, 2),
        lambda: pair_seed(bytes(32), b"", 1, 2),
        lambda: pair_seed(bytes(32), "r", 1, 2),
        lambda: pair_seed(bytes(32), b"r", -1, 2),
        lambda: self_seed(bytes(16), b"r", 1),
    ],
)
def test_seed_refusals(call: object) -> None:
    with pytest.raises(UsageError):
        call()  # type: ignore[operator]


# -- pack / unpack -------------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 32), st.integers(0, 200), st.data())
def test_pack_round_trip(bits: int, count: int, data: st.DataObject) -> None:
    values = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=count, max_size=count)))
    values = values.astype(np.uint32)
    packed = pack(values, bits)
    assert len(packed) == packed_size(count, bits) == (count * bits + 7) // 8
    out = unpack(packed, bits, count)
    assert out.dtype == np.uint32 and np.array_equal(out, values)


def test_pack_layout_is_little_endian_bits() -> None:
    assert pack(np.array([1, 2, 3], dtype=np.uint32), 3) == bytes([0b11010001, 0b0])
    assert pack(np.array([0xABC], dtype=np.uint32), 12) == bytes([0xBC, 0x0A])
    assert pack(np.array([0x01020304], dtype=np.uint32), 32) == bytes([4, 3, 2, 1])


def test_unpack_refuses_wrong_lengths_and_padding() -> None:
    packed = pack(np.array([5, 6, 7], dtype=np.uint32), 5)  # 15 bits in 2 bytes
    with pytest.raises(FormatError):
        unpack(packed + b"\x00", 5, 3)
    with pytest.raises(FormatError):
        unpack(packed[:1], 5, 3)
    with pytest.raises(FormatError):
        unpack(packed, 5, 4)
    with pytest.raises(FormatError):
        unpack(packed[:1] + bytes([packed[1] | 0x80]), 5, 3)  # the padding bit set
    assert unpack(b"", 7, 0).shape == (0,)


def test_pack_refuses_values_out_of_range() -> None:
    with pytest.raises(UsageError):
        pack(np.array([8], dtype=np.uint32), 3)
    with pytest.raises(UsageError):
        pack(np.array([-1]), 3)
    with pytest.raises(UsageError):
        pack(np.zeros((2, 2), dtype=np.uint32), 3)
    with pytest.raises(UsageError):
        pack(np.zeros(2, dtype=np.float32), 3)
