"""privet.crypto.shamir: round trips, threshold behaviour, batched reconstruction, the wire format."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privet.crypto.shamir import (
    PRIME,
    combine,
    combine_many,
    limbs_for,
    shares_from_bytes,
    shares_to_bytes,
    split,
)
from privet.errors import FormatError, IntegrityError, UsageError


@st.composite
def sharings(draw: st.DrawFn) -> tuple[list[bytes], int, list[int], list[int]]:
    """Secrets, a threshold, holders, and the positions of exactly ``threshold`` of them."""
    length = draw(st.integers(1, 40))
    secrets = draw(st.lists(st.binary(min_size=length, max_size=length), min_size=1, max_size=5))
    holders = draw(st.lists(st.integers(1, PRIME - 1), min_size=1, max_size=12, unique=True))
    threshold = draw(st.integers(1, len(holders)))
    chosen = draw(st.permutations(range(len(holders))))[:threshold]
    return secrets, threshold, holders, chosen


@settings(max_examples=60, deadline=None)
@given(sharings())
def test_any_threshold_holders_reconstruct(case: tuple[list[bytes], int, list[int], list[int]]) -> None:
    secrets, threshold, holders, chosen = case
    shares = split(secrets, threshold, holders)
    assert shares.shape == (len(holders), len(secrets), limbs_for(len(secrets[0])))
    assert shares.dtype == np.int64 and shares.min() >= 0 and shares.max() < PRIME
    length = len(secrets[0])
    assert combine(shares[chosen], [holders[i] for i in chosen], length=length) == secrets


def test_more_than_threshold_shares_also_reconstruct() -> None:
    secrets = [os.urandom(32) for _ in range(3)]
    shares = split(secrets, 4, range(1, 11))
    assert combine(shares, range(1, 11)) == secrets


def test_garbled_share_is_detected() -> None:
    secrets = [os.urandom(32) for _ in range(4)]
    shares = split(secrets, 5, range(1, 9))
    tampered = shares[:5].copy()
    tampered[2] = np.random.default_rng(3).integers(0, PRIME, size=tampered[2].shape)
    with pytest.raises(IntegrityError):
        combine(tampered, range(1, 6))


def test_share_of_another_secret_is_detected() -> None:
    shares = split([os.urandom(32), os.urandom(32)], 3, [1, 2, 3])
    mixed = shares[:, 0, :].copy()
    mixed[1] = shares[1, 1]
    with pytest.raises(IntegrityError):
        combine(mixed[:, None, :], [1, 2, 3])


def test_small_error_in_a_share_shifts_the_secret_by_its_lagrange_multiple() -> None:
    # Documented limit: the 16-bit check does not catch a small change (lambda_3 = 10 for holders 1..5).
    secret = bytes(32)
    shares = split([secret], 5, range(1, 6))
    shares[2, 0, 15] = (shares[2, 0, 15] + 1) % PRIME
    assert combine(shares, range(1, 6)) == [bytes(31) + b"\x0a"]


def test_share_labelled_with_the_wrong_holder_is_detected() -> None:
    secrets = [os.urandom(32)]
    shares = split(secrets, 3, [1, 2, 3, 4])
    with pytest.raises(IntegrityError):
        combine(shares[[0, 1, 3]], [1, 2, 3])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.data())
def test_fewer_than_threshold_shares_do_not_reveal_the_secret(threshold: int, data: st.DataObject) -> None:
    secret = os.urandom(32)
    holders = list(range(1, threshold + 3))
    shares = split([secret], threshold, holders)
    # t - 1 true shares plus a guessed one (the honest value of a non-holder would be unknown to an attacker).
    guess = np.array([[data.draw(st.integers(0, PRIME - 1)) for _ in range(shares.shape[2])]], dtype=np.int64)
    forged = np.concatenate([shares[: threshold - 1], guess[None]], axis=0)
    with pytest.raises(IntegrityError):  # a wrong limb fits 16 bits with probability 2**-15, all 16: 2**-240
        combine(forged, [*holders[: threshold - 1], holders[-1]])
    # And t - 1 shares on their own are interpolated as a lower-degree polynomial: not the secret.
    with pytest.raises(IntegrityError):
        combine(shares[: threshold - 1], holders[: threshold - 1])


def test_threshold_minus_one_shares_are_uniform() -> None:
    # Perfect secrecy, checked empirically: with t = 2 one share of a fixed secret is uniform in the field.
    shares = split([b"\x00\x01"] * 20000, 2, [5, 9])[0, :, 0]
    counts = np.histogram(shares, bins=16, range=(0, PRIME))[0]
    assert stats.chisquare(counts).pvalue > 1e-4


def test_odd_length_secrets() -> None:
    secrets = [b"abc", b"xyz"]
    shares = split(secrets, 2, [1, 2, 3])
    assert shares.shape[2] == 2
    assert combine(shares[1:], [2, 3], length=3) == secrets
    assert combine(shares[1:], [2, 3]) == [b"abc\x00", b"xyz\x00"]


def test_combine_many_each_secret_with_its_own_holders() -> None:
    rng = np.random.default_rng(7)
    items: list[tuple[np.ndarray, list[int]]] = []
    truth: list[bytes] = []
    for n in range(60):
        secret = os.urandom(32)
        threshold = int(rng.integers(1, 6))
        holders = (rng.choice(50, size=threshold + 2, replace=False) + 1).tolist()
        shares = split([secret], threshold, holders)
        pick = rng.choice(len(holders), size=threshold, replace=False)
        if n % 3 == 0 and items and len(items[-1][1]) == threshold:  # reuse a holder set, in another row order
            prev_shares, prev_holders = items[-1]
            items.append((prev_shares[::-1], prev_holders[::-1]))
            truth.append(truth[-1])
            continue
        items.append((shares[pick, 0, :], [holders[i] for i in pick]))
        truth.append(secret)
    assert combine_many(items) == truth
    assert combine_many([]) == []


def test_combine_many_groups_one_holder_set() -> None:
    secrets = [os.urandom(32) for _ in range(5)]
    shares = split(secrets, 3, [4, 8, 15, 16])
    items = [(shares[[0, 2, 3], s, :], [4, 15, 16]) for s in range(5)]
    assert combine_many(items) == secrets
    assert combine(shares[[0, 2, 3]], [4, 15, 16]) == secrets


def test_combine_many_detects_a_wrong_item() -> None:
    secrets = [os.urandom(32) for _ in range(3)]
    shares = split(secrets, 2, [1, 2, 3])
    items = [(shares[:2, s, :], [1, 2]) for s in range(3)]
    bad = items[1][0].copy()
    bad[0] = shares[0, 2]  # holder 1's share of secret 2 in place of its share of secret 1
    items[1] = (bad, [1, 2])
    with pytest.raises(IntegrityError):
        combine_many(items)


@pytest.mark.parametrize(
    "call",
    [
        lambda: split([], 1, [1]),
        lambda: split([b"ab", b"abc"], 1, [1]),
        lambda: split([b""], 1, [1]),
        lambda: split([b"ab"], 0, [1]),
        lambda: split([b"ab"], 3, [1, 2]),
        lambda: split([b"ab"], 1, [0]),
        lambda: split([b"ab"], 1, [PRIME]),
        lambda: split([b"ab"], 1, [1, 1]),
        lambda: split([b"ab"], 1, [True]),
        lambda: combine(np.zeros((2, 1, 1), dtype=np.int64), [1]),
        lambda: combine(np.zeros((1, 1, 1), dtype=np.float64), [1]),
        lambda: combine(np.full((1, 1, 1), PRIME, dtype=np.int64), [1]),
        lambda: combine(np.zeros((1, 1, 2), dtype=np.int64), [1], length=5),
        lambda: combine_many([(np.zeros((1, 2), dtype=np.int64), [1]), (np.zeros((1, 3), dtype=np.int64), [1])]),
    ],
)
def test_usage_errors(call: object) -> None:
    with pytest.raises(UsageError):
        call()  # type: ignore[operator]


def test_wire_round_trip_and_refusals() -> None:
    shares = split([os.urandom(32) for _ in range(3)], 2, [1, 2, 3])
    data = shares_to_bytes(shares[1])
    assert len(data) == 12 + 4 * 3 * 16
    assert np.array_equal(shares_from_bytes(data), shares[1])
    with pytest.raises(FormatError):
        shares_from_bytes(data[:-1])
    with pytest.raises(FormatError):
        shares_from_bytes(b"XXXX" + data[4:])
    with pytest.raises(FormatError):
        shares_from_bytes(data[:5])
    with pytest.raises(FormatError):
        shares_from_bytes(data[:12] + b"\xff\xff\xff\xff" + data[16:])  # not a field element
