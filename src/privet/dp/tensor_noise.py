"""Gaussian noise for whole tensors (model gradients and updates), seeded from a CSPRNG.

Per call and per device, 8 bytes from :class:`privet.crypto.prg.Randomness` (AES-256-CTR keyed from the OS
CSPRNG by :meth:`~privet.crypto.prg.Randomness.system`; tests pass ``Randomness.for_tests(seed)``, which is
refused outside test mode) seed a ``torch.Generator`` on the tensor's device, which draws the normal noise with
``torch.normal`` (mt19937 on CPU, Philox on CUDA). Why this and not privet's exact samplers: a model has
millions of coordinates per step and the noise must be generated on the accelerator to keep the step cheap; the
seed is secret and fresh for every release (so no generator stream spans two releases), and the generator's raw
outputs are never released (only parameters after the optimiser's own arithmetic), so predicting the noise
means guessing a 64-bit seed per release. Limitations, stated plainly: the security of the noise is
computational (seed size 64 bits), and the floating-point normal sampler is not hardened against the
floating-point attacks on textbook Gaussian samplers (Jin et al. 2022); the same holds for Opacus without its
``secure_mode``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from privet.crypto.prg import Randomness

__all__ = ["NoiseSource"]


class NoiseSource:
    """Draws ``N(0, std^2)`` tensors for one release (one optimiser step, one federated round).

    Each device's generator is seeded from ``randomness`` on first use; make a new source for every release.
    """

    def __init__(self, randomness: Randomness) -> None:
        self._randomness = randomness
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        generator = self._generators.get(device)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(int.from_bytes(self._randomness.bytes(8), "little"))
            self._generators[device] = generator
        return generator

    def gaussian(self, like: Tensor, std: float) -> Tensor:
        """A tensor of ``like``'s shape and device, entries i.i.d. ``N(0, std^2)`` (float32 for half types)."""
        dtype = torch.float32 if like.dtype in (torch.float16, torch.bfloat16) else like.dtype
        noise = torch.empty(like.shape, device=like.device, dtype=dtype)
        return noise.normal_(0.0, std, generator=self._generator(like.device))
