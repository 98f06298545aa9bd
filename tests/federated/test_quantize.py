"""privet.federated.quantize: the fixed-point grid, unbiased rounding, exact sums, and refused configurations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.errors import IntegrityError, UsageError
from privet.federated.quantize import Quantizer


@settings(max_examples=50, deadline=None)
@given(
    st.floats(0.01, 100.0),
    st.integers(1, 24),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=50),
)
def test_encode_stays_on_the_grid(clip: float, bits: int, update: list[float]) -> None:
    q = Quantizer(clip, bits, 8)
    encoded = q.encode(np.array(update))
    assert encoded.dtype == np.uint32 and encoded.shape == (len(update),)
    if update:
        assert int(encoded.max()) <= (1 << bits) - 1
    # Decoding one client's encoding is within one grid step of the clipped value.
    decoded = q.decode_sum(encoded, 1)
    assert np.all(np.abs(decoded - np.clip(update, -clip, clip)) <= q.step * (1 + 1e-9))


def test_encode_keeps_shape_and_hits_the_ends() -> None:
    q = Quantizer(1.0, 8, 4)
    encoded = q.encode(np.array([[-5.0, -1.0], [1.0, 5.0]]))
    assert encoded.shape == (2, 2)
    assert encoded.tolist() == [[0, 0], [255, 255]]


def test_decode_sum_of_many_clients_is_close_to_the_true_sum() -> None:
    rng = np.random.default_rng(1)
    clients, dim = 100, 2000
    q = Quantizer(0.5, 16, clients)
    updates = rng.uniform(-0.6, 0.6, size=(clients, dim))  # some coordinates get clipped
    total = np.zeros(dim, dtype=np.uint64)
    for row in updates:
        total += q.encode(row)
    modulus = np.uint64(1 << q.modulus_bits)
    decoded = q.decode_sum((total % modulus).astype(np.uint32), clients)
    truth = np.clip(updates, -0.5, 0.5).sum(axis=0)
    # Independent rounding errors, each bounded by a step with variance at most step**2 / 4.
    assert np.abs(decoded - truth).max() < 6 * math.sqrt(clients) * q.step / 2
    assert np.abs(decoded - truth).max() <= clients * q.step


def test_rounding_is_unbiased() -> None:
    q = Quantizer(1.0, 4, 1)  # a coarse grid: step 2 / 15
    value = 0.3  # between grid points, 1.3 / step = 9.75 levels
    draws = 200_000
    encoded = q.encode(np.full(draws, value), rng=np.random.default_rng(2))
    assert set(np.unique(encoded).tolist()) == {9, 10}
    rounded = encoded.astype(np.float64) * q.step - 1.0
    standard_error = q.step * 0.5 / math.sqrt(draws)  # a two-point variable spaced one step apart
    assert abs(rounded.mean() - value) < 5 * standard_error


def test_rounding_with_the_system_csprng_is_unbiased() -> None:
    q = Quantizer(1.0, 3, 1)
    rounded = q.encode(np.full(100_000, -0.1)).astype(np.float64) * q.step - 1.0
    assert abs(rounded.mean() + 0.1) < 5 * q.step * 0.5 / math.sqrt(100_000)


def test_modulus_bits_and_overflow_refusal() -> None:
    assert Quantizer(1.0, 16, 1).modulus_bits == 16
    assert Quantizer(1.0, 16, 2).modulus_bits == 17
    assert Quantizer(1.0, 16, 1000).modulus_bits == 26
    assert Quantizer(1.0, 16, 1024).modulus_bits == 26
    assert Quantizer(1.0, 16, 1025).modulus_bits == 27
    assert Quantizer(1.0, 32, 1).modulus_bits == 32
    with pytest.raises(UsageError) as caught:
        Quantizer(1.0, 24, 1000)
    assert "24 bits" in caught.value.message and "1000 clients" in caught.value.message
    assert "34-bit" in caught.value.message
    assert "fewer bits or fewer clients per round" in caught.value.hint


def test_worst_case_sum_does_not_wrap() -> None:
    q = Quantizer(1.0, 22, 1000)  # modulus 32 bits
    top = q.encode(np.full(3, 9.0))
    total = top.astype(np.uint64) * 1000
    assert int(total.max()) < 1 << q.modulus_bits
    assert np.allclose(q.decode_sum(total.astype(np.uint32), 1000), 1000.0)


def test_check_count_and_impossible_sums() -> None:
    q = Quantizer(1.0, 8, 10)
    assert q.check_count(10) == 10
    for bad in (0, 11, -1, True, 2.0):
        with pytest.raises(UsageError):
            q.check_count(bad)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        q.decode_sum(np.array([3 * 255 + 1], dtype=np.uint32), 3)
    with pytest.raises(UsageError):
        q.decode_sum(np.array([1.0]), 3)


@pytest.mark.parametrize(
    "args", [(0.0, 8, 2), (-1.0, 8, 2), (math.inf, 8, 2), (math.nan, 8, 2), (1.0, 0, 2), (1.0, 8, 0), (1.0, 8.0, 2)]
)
def test_bad_configurations(args: tuple[float, int, int]) -> None:
    with pytest.raises(UsageError):
        Quantizer(*args)


def test_encode_refuses_non_finite_values() -> None:
    with pytest.raises(UsageError):
        Quantizer(1.0, 8, 2).encode(np.array([0.0, math.nan]))
