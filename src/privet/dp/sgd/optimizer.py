"""The noising half of DP-SGD: :class:`DPOptimizer` wraps a torch optimizer.

It expects each trainable parameter's ``.grad`` to hold the *sum* of clipped per-sample gradients (what
:class:`~privet.dp.sgd.engine.PerSampleClipper` leaves there). :meth:`DPOptimizer.step` then, once per logical
batch:

1. adds the sums accumulated by :meth:`~DPOptimizer.virtual_step` (physical chunks of one logical batch);
2. adds Gaussian noise ``N(0, (noise_multiplier * max_grad_norm)^2)`` independently to every coordinate;
3. divides by the **expected** batch size ``q N`` (Poisson sampling), not the realised one: the realised size is
   itself data-dependent (it says whether a record was sampled), so dividing by it would make the released
   update depend on membership in a way the subsampled-Gaussian accounting does not cover; a constant divisor is
   post-processing. This is the estimator Opacus and the DP-SGD analyses (Abadi et al. 2016) use;
4. runs the wrapped optimizer's ``step``.

An empty Poisson batch (no forward/backward at all, every ``.grad`` ``None``) still takes a step with a zero sum
plus noise: the accounting assumes every step releases a noisy update.

Noise generation
    :class:`privet.dp.tensor_noise.NoiseSource`, a fresh one per step: a ``torch.Generator`` per device seeded
    with 8 bytes of the OS CSPRNG (see that module for why, and for the limits of this choice).

``zero_grad`` clears both ``.grad`` and the virtual-step accumulators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from privet.crypto.prg import Randomness
from privet.dp.tensor_noise import NoiseSource
from privet.errors import UsageError

__all__ = ["DPOptimizer"]


def _positive(name: str, value: object, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise UsageError(f"{name} must be a finite number > 0, got {value!r}", hint)
    return float(value)


class DPOptimizer(torch.optim.Optimizer):
    """Noise, average and apply clipped gradient sums with ``optimizer`` (which it shares state with).

    ``noise_multiplier`` is the noise std over the clipping bound ``max_grad_norm``; ``expected_batch_size`` is
    ``sample_rate * dataset_size`` (may be fractional). ``randomness`` defaults to a fresh
    ``Randomness.system()``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        randomness: Randomness | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, DPOptimizer):
            raise UsageError(
                f"DPOptimizer wraps a torch.optim.Optimizer, got {type(optimizer).__name__}",
                "Pass e.g. torch.optim.SGD(model.parameters(), lr=0.1), not yet wrapped.",
            )
        self.noise_multiplier = _positive(
            "noise_multiplier", noise_multiplier, "noise_multiplier is the noise std divided by max_grad_norm."
        )
        self.max_grad_norm = _positive("max_grad_norm", max_grad_norm, "max_grad_norm is the clipping bound C.")
        self.expected_batch_size = _positive(
            "expected_batch_size",
            expected_batch_size,
            "expected_batch_size is the Poisson sample rate times the data set size.",
        )
        if randomness is None:
            randomness = Randomness.system()
        elif not isinstance(randomness, Randomness):
            raise UsageError(
                f"randomness must be a privet Randomness, got {type(randomness).__name__}",
                "Pass Randomness.system() (or nothing); tests use Randomness.for_tests(seed).",
            )
        self.randomness = randomness
        self.original_optimizer = optimizer
        # Share, not copy: LR schedulers and checkpoints see the wrapped optimizer's groups and state.
        self.param_groups = optimizer.param_groups
        self.defaults = optimizer.defaults
        self.state = optimizer.state
        self._accumulated: dict[Tensor, Tensor] = {}
        self.steps = 0
        self.physical_batches = 0

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to the clipped *sum*: ``noise_multiplier * max_grad_norm``."""
        return self.noise_multiplier * self.max_grad_norm

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def virtual_step(self) -> None:
        """End a physical chunk of the current logical batch: move ``.grad`` into the accumulator (no noise)."""
        for p in self._params():
            if p.grad is None:
                continue
            held = self._accumulated.get(p)
            if held is None:
                self._accumulated[p] = p.grad.detach().clone()
            else:
                held.add_(p.grad)
            p.grad = None
        self.physical_batches += 1

    @torch.no_grad()
    def add_noise(self) -> None:
        """Replace each ``.grad`` by ``(accumulated + grad + N(0, noise_std^2)) / expected_batch_size``."""
        params = self._params()
        source = NoiseSource(self.randomness)
        std = self.noise_std
        for p in params:
            total = self._accumulated.pop(p, None)
            if p.grad is not None:
                total = p.grad.detach() if total is None else total.add_(p.grad)
            if total is None:
                total = torch.zeros_like(p)
            total.add_(source.gaussian(total, std).to(total.dtype)).div_(self.expected_batch_size)
            p.grad = total
        self._accumulated.clear()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Noise the accumulated clipped sums, divide by the expected batch size, and step the wrapped optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.add_noise()
        self.original_optimizer.step()
        self.steps += 1
        self.physical_batches += 1
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear ``.grad`` and the virtual-step accumulators."""
        self.original_optimizer.zero_grad(set_to_none=set_to_none)
        self._accumulated.clear()

    def state_dict(self) -> dict[str, Any]:
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.original_optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.original_optimizer.add_param_group(param_group)

    def __repr__(self) -> str:
        return (
            f"DPOptimizer({type(self.original_optimizer).__name__}, noise_multiplier={self.noise_multiplier:g}, "
            f"max_grad_norm={self.max_grad_norm:g}, expected_batch_size={self.expected_batch_size:g})"
        )
