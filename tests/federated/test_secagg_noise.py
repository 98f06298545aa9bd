"""Distributed discrete Gaussian noise: the sum carries the planned noise, the accounting matches, nothing wraps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privet.dp.accounting import ZCDPEvent, compose_epsilon
from privet.errors import IntegrityError, UsageError
from privet.federated.quantize import MAX_MODULUS_BITS
from privet.federated.secagg.noise import DistributedNoise, calibrate
from privet.federated.secagg.plan import plan
from privet.federated.secagg.protocol import Client, Round, Server


def _secure_sum(noise: DistributedNoise, inputs: list[np.ndarray], dropped: int = 0) -> tuple[np.ndarray, int]:
    """The protocol's unmasked sum of the clients' encodings (the last ``dropped`` drop before masking)."""
    n = len(inputs)
    secure = Round(plan(n, colluding=1, dropout=0.3), noise.dimension, noise.modulus_bits)
    clients = [Client(i, secure) for i in range(n)]
    server = Server(secure)
    routed = server.collect_keys({c.index: c.advertise() for c in clients})
    sealed = {c.index: c.share(routed[c.index]) for c in clients}
    relayed = server.collect_shares(sealed, {c.index: c.commitment for c in clients})
    kept = clients[: n - dropped]
    masked = {c.index: c.mask(noise.encode(inputs[c.index]), relayed[c.index], server.shared) for c in kept}
    request = server.collect_masked(masked)
    return server.finish({c.index: c.unmask(request) for c in kept}), len(kept)


def test_the_secure_sum_is_the_survivors_sum_plus_the_planned_noise() -> None:
    rng = np.random.default_rng(0)
    n, d = 6, 20_000
    noise = DistributedNoise(clip=1.0, bits=12, clients=n, minimum=4, sigma=40.0, dimension=d)
    inputs = [rng.normal(size=d) * 0.004 for _ in range(n)]  # norms about 0.57: under the clip, not clipped
    total, count = _secure_sum(noise, inputs, dropped=1)
    error = noise.decode_sum(total, count) - sum(inputs[:count])
    # count clients' discrete Gaussians (std ~ sigma) plus stochastic rounding (std <= 1/2 step each).
    expected = noise.gamma * math.sqrt(count * (noise.sigma**2 + 1 / 6))
    assert abs(error.mean()) < 4 * expected / math.sqrt(d)
    assert error.std() == pytest.approx(expected, rel=0.03)


def test_clipping_and_conditional_rounding_bound_each_client() -> None:
    noise = DistributedNoise(clip=0.5, bits=10, clients=3, minimum=2, sigma=1.0, dimension=1000)
    big = np.full(1000, 3.0)  # norm ~95: clipped to 0.5
    encoded = noise.encode(big).astype(np.int64)
    signed = np.where(encoded >= 1 << (noise.modulus_bits - 1), encoded - (1 << noise.modulus_bits), encoded)
    # Less this client's noise (std 1 step), the rounded update's norm is within the sensitivity.
    assert np.linalg.norm(signed) <= noise.sensitivity + 6 * math.sqrt(1000)
    assert noise.sensitivity == pytest.approx(0.5 / noise.gamma, rel=0.1)
    with pytest.raises(UsageError, match="NaN or infinite"):
        noise.encode(np.array([np.nan] * 1000))
    with pytest.raises(UsageError, match="1000"):
        noise.encode(np.zeros(10))


def test_rho_follows_kairouz_et_al_and_more_survivors_mean_less_privacy_loss() -> None:
    noise = DistributedNoise(clip=1.0, bits=16, clients=10, minimum=5, sigma=30_000.0, dimension=100_000)
    s = noise.sensitivity / (math.sqrt(5) * noise.sigma)
    assert noise.rho(5) == pytest.approx(s * s / 2, rel=1e-12)  # tau is negligible at this sigma
    assert noise.rho(10) < noise.rho(5) == noise.planned_rho
    assert noise.event(7) == ZCDPEvent(noise.rho(7))
    with pytest.raises(UsageError, match=r"outside 5\.\.10"):
        noise.rho(4)
    tiny = DistributedNoise(clip=1.0, bits=4, clients=50, minimum=2, sigma=0.5, dimension=10)
    tau_free = tiny.sensitivity**2 / (2 * 50 * 0.25)
    assert tiny.rho(50) > tau_free  # at sigma 0.5 the sum is not a discrete Gaussian: tau is charged


def test_calibration_spends_the_target_and_no_more() -> None:
    noise = calibrate(4.0, 1e-5, rounds=20, clip=1.0, bits=16, clients=20, minimum=12, dimension=5000)
    spent = compose_epsilon([ZCDPEvent(noise.planned_rho, 20)], 1e-5, "rdp").epsilon
    assert 3.99 < spent <= 4.0
    looser = calibrate(8.0, 1e-5, rounds=20, clip=1.0, bits=16, clients=20, minimum=12, dimension=5000)
    assert looser.sigma < noise.sigma


def test_sums_never_wrap_and_an_impossible_sum_is_refused() -> None:
    noise = DistributedNoise(clip=1.0, bits=8, clients=4, minimum=2, sigma=5.0, dimension=50)
    at_clip = np.full(50, 1 / math.sqrt(50))
    total, count = _secure_sum(noise, [at_clip, -at_clip, at_clip, at_clip])
    assert np.abs(noise.decode_sum(total, count) - 2 * at_clip).max() < 40 * noise.gamma
    with pytest.raises(IntegrityError, match="exceeds what 4 clients"):
        noise.decode_sum(np.full(50, 1 << (noise.modulus_bits - 1), dtype=np.uint32), 4)
    with pytest.raises(UsageError, match="more than 32"):
        DistributedNoise(clip=1.0, bits=24, clients=1000, minimum=2, sigma=2.0**20, dimension=10)
    assert noise.modulus_bits <= MAX_MODULUS_BITS
    with pytest.raises(UsageError, match=r"below 0\.5"):
        DistributedNoise(clip=1.0, bits=8, clients=4, minimum=2, sigma=0.1, dimension=50)
