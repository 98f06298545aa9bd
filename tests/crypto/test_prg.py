"""Tests for privet.crypto.prg: the AES-CTR CSPRNG, its test-mode seeding, and its statistical quality."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest
from scipy import stats

from privet.crypto.prg import TEST_SEEDS_ENV, Randomness, default_randomness
from privet.errors import UsageError

ALPHA = 1e-4  # fixed significance for every statistical test in this file


@pytest.fixture
def test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")


# -- seeding is a test-mode privilege ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "0", "true", "yes", " 1"])
def test_for_tests_is_refused_outside_test_mode(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(TEST_SEEDS_ENV, raising=False)
    else:
        monkeypatch.setenv(TEST_SEEDS_ENV, value)
    with pytest.raises(UsageError) as caught:
        Randomness.for_tests(1)
    assert "test mode" in caught.value.message
    assert TEST_SEEDS_ENV in caught.value.hint


def test_the_constructor_does_not_take_a_key_from_callers() -> None:
    with pytest.raises(UsageError):
        Randomness(bytes(32), bytes(16), seeded=False)


def test_for_tests_rejects_a_non_int_seed(test_mode: None) -> None:
    for seed in ("1", 1.0, True):
        with pytest.raises(UsageError):
            Randomness.for_tests(seed)  # type: ignore[arg-type]


def test_same_seed_same_stream(test_mode: None) -> None:
    a, b = Randomness.for_tests(42), Randomness.for_tests(42)
    assert a.bytes(100) == b.bytes(100)
    assert np.array_equal(a.uint64(1000), b.uint64(1000))
    assert np.array_equal(a.uniform(10), b.uniform(10))
    assert np.array_equal(a.integers_below(7, 50), b.integers_below(7, 50))
    assert a.seeded and b.seeded


def test_the_stream_is_one_keystream_however_it_is_split(test_mode: None) -> None:
    whole = Randomness.for_tests(7).bytes(8 * 1000)
    pieces = Randomness.for_tests(7)
    joined = pieces.bytes(3) + pieces.bytes(5) + pieces.uint64(999).tobytes()
    assert joined == whole


def test_different_seeds_differ(test_mode: None) -> None:
    streams = {Randomness.for_tests(seed).bytes(32) for seed in (0, 1, 2, -1, 2**70)}
    assert len(streams) == 5


def test_system_streams_differ_and_are_not_seeded() -> None:
    a, b = Randomness.system(), Randomness.system()
    assert a.bytes(32) != b.bytes(32)
    assert not a.seeded
    assert repr(a) == "Randomness(system)"  # the key never appears


def test_randomness_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Randomness.system())


def test_default_randomness_is_one_system_instance_even_under_contention() -> None:
    seen: list[Randomness] = []
    threads = [threading.Thread(target=lambda: seen.append(default_randomness())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(r) for r in seen}) == 1
    assert seen[0] is default_randomness()
    assert not seen[0].seeded


def test_concurrent_draws_get_disjoint_parts_of_the_stream(test_mode: None) -> None:
    shared = Randomness.for_tests(3)
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def draw() -> None:
        for _ in range(50):
            words = shared.uint64(100)
            with lock:
                results.append(words)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drawn = np.sort(np.concatenate(results))
    expected = np.sort(Randomness.for_tests(3).uint64(4 * 50 * 100))
    assert np.array_equal(drawn, expected)  # every word exactly once: no overlap, nothing lost


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_the_parents_stream() -> None:
    rng = Randomness.system()
    rng.uint64(1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next 32 bytes, then leave without running pytest's teardown
        try:
            os.write(write_end, rng.bytes(32))
        finally:
            os._exit(0)
    os.close(write_end)
    child_bytes = os.read(read_end, 32)
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_bytes = rng.bytes(32)
    assert len(child_bytes) == 32
    assert child_bytes != parent_bytes


# -- output formats and ranges -------------------------------------------------------------------------------------


def test_shapes_types_and_writability(test_mode: None) -> None:
    rng = Randomness.for_tests(5)
    assert len(rng.bytes(17)) == 17 and rng.bytes(0) == b""
    words = rng.uint64(10)
    assert words.dtype == np.uint64 and words.shape == (10,)
    words[0] = 1  # callers may modify what they get
    assert rng.uint64(0).shape == (0,)
    assert rng.uniform(3).dtype == np.float64
    assert rng.integers_below(10, 4).dtype == np.int64
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(UsageError):
            rng.uint64(bad)  # type: ignore[arg-type]


def test_uniform_is_on_the_53_bit_grid_in_unit_interval(test_mode: None) -> None:
    u = Randomness.for_tests(11).uniform(200_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert np.all(np.floor(u * 2.0**53) == u * 2.0**53)  # k * 2**-53 exactly
    assert stats.kstest(u, "uniform").pvalue > ALPHA
    # The lowest grid bit is used too (a 52-bit generator would leave it always 0).
    assert 0.4 < np.mean((u * 2.0**53).astype(np.int64) & 1) < 0.6


def test_uint64_bits_are_balanced(test_mode: None) -> None:
    words = Randomness.for_tests(12).uint64(100_000)
    bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    ones = bits.sum(axis=0).astype(np.int64)
    # Every bit position is Binomial(n, 1/2); Bonferroni over 64 positions.
    pvalues = [stats.binomtest(int(k), words.size, 0.5).pvalue for k in ones]
    assert min(pvalues) > ALPHA / 64


@pytest.mark.parametrize("bound", [6, 10, 1000])
def test_integers_below_is_unbiased(test_mode: None, bound: int) -> None:
    draws = Randomness.for_tests(bound).integers_below(bound, 60 * bound + 200_000)
    assert draws.min() >= 0 and draws.max() < bound
    counts = np.bincount(draws, minlength=bound)
    assert stats.chisquare(counts).pvalue > ALPHA


def test_integers_below_a_huge_bound_has_no_modulo_bias(test_mode: None) -> None:
    # bound = 3 * 2**61: "word mod bound" would make the lowest third twice as likely as the others.
    bound = 3 << 61
    draws = Randomness.for_tests(99).integers_below(bound, 90_000)
    assert draws.min() >= 0 and int(draws.max()) < bound
    thirds = np.bincount(draws // (1 << 61), minlength=3)
    assert stats.chisquare(thirds).pvalue > ALPHA


def test_integers_below_edges(test_mode: None) -> None:
    rng = Randomness.for_tests(1)
    assert np.array_equal(rng.integers_below(1, 5), np.zeros(5, dtype=np.int64))
    top = rng.integers_below(1 << 63, 1000)
    assert top.min() >= 0  # fits int64 without wrapping
    for bad in (0, -3, (1 << 63) + 1, 2.0):
        with pytest.raises(UsageError):
            rng.integers_below(bad, 1)  # type: ignore[arg-type]


def test_the_uniformity_test_has_power(test_mode: None) -> None:
    """Guards the KS test above: at this size and ALPHA it rejects uniforms distorted by u -> u**1.05."""
    u = Randomness.for_tests(11).uniform(200_000)
    assert stats.kstest(u**1.05, "uniform").pvalue < ALPHA
