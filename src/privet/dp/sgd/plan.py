"""The privacy plan of a DP-SGD run: what it will spend, fixed before the first step.

A :class:`PrivacyPlan` is derived from the sampler that will actually draw the batches (its rate and step count),
so the accounting cannot describe some other sampling than the one used. The noise multiplier is the smallest
that meets the target epsilon for exactly that sampler (:func:`~privet.dp.accounting.calibrate_gaussian`), and
the plan carries the :class:`~privet.dp.accounting.Guarantee` that noise actually reaches, with the accountant
that computed it and any fallback. :meth:`PrivacyPlan.as_manifest` is what a trained model's signed manifest
records.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Protocol

from privet.dp.accounting import Accountant, GaussianEvent, Guarantee, calibrate_gaussian, compose_epsilon
from privet.errors import UsageError
from privet.models.manifest import PrivacyGuarantee, Scalar

__all__ = ["PrivacyPlan", "SamplerLike", "plan_privacy"]


class SamplerLike(Protocol):
    """What a plan needs of a sampler: its size and an accountant event (which a non-Poisson sampler refuses)."""

    num_samples: int
    sample_rate: float
    steps: int

    def event(self, noise_multiplier: float) -> GaussianEvent: ...


@dataclass(frozen=True)
class PrivacyPlan:
    """Parameters and guarantee of one DP-SGD run (add-or-remove-one neighbours, one record = one example)."""

    target_epsilon: float
    target_delta: float
    accountant: str  # requested; guarantee.accountant is the one that produced the number
    sample_rate: float
    steps: int
    dataset_size: int
    noise_multiplier: float
    max_grad_norm: float
    guarantee: Guarantee  # epsilon actually reached by noise_multiplier over all steps, at target_delta
    sampler: str = "poisson"
    clipping: str = "flat"  # per-sample clipping of the whole gradient to max_grad_norm
    physical_batch_size: int | None = None
    ledger: str | None = None  # "tenant/dataset" charged before training, or None when no ledger was used
    ledger_note: str = "no ledger was charged: the caller did not pass one"

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.dataset_size

    @property
    def epochs(self) -> float:
        return self.steps * self.sample_rate

    @property
    def epsilon(self) -> float:
        return self.guarantee.epsilon

    def event(self, steps: int | None = None) -> GaussianEvent:
        """The accountant event of the whole run, or of its first ``steps`` steps."""
        return GaussianEvent(self.noise_multiplier, self.sample_rate, self.steps if steps is None else steps)

    def epsilon_after(self, steps: int) -> float:
        """Epsilon (at ``target_delta``) spent by the first ``steps`` steps; 0 before the first. Costs ~0.1-1 s."""
        if steps <= 0:
            return 0.0
        requested: Accountant = "rdp" if self.accountant == "rdp" else "pld"
        return compose_epsilon([self.event(min(steps, self.steps))], self.target_delta, requested).epsilon

    def as_manifest(self) -> dict[str, object]:
        """The guarantee and its parameters, as a model manifest's ``privacy`` record (see :meth:`privacy`)."""
        details: dict[str, Scalar] = {
            "mechanism": "dp-sgd",
            "sampler": self.sampler,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "epochs": self.epochs,
            "dataset_size": self.dataset_size,
            "expected_batch_size": self.expected_batch_size,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "clipping": self.clipping,
            "neighbouring": "add-or-remove-one",
            "target_epsilon": self.target_epsilon,
            "requested_accountant": self.accountant,
            "fallback_reason": self.guarantee.fallback_reason,
            "ledger": self.ledger,
        }
        return {
            "epsilon": self.guarantee.epsilon,
            "delta": self.guarantee.delta,
            "accountant": self.guarantee.accountant,
            "details": details,
        }

    def privacy(self) -> PrivacyGuarantee:
        """:meth:`as_manifest` as the manifest model that :func:`privet.models.artifact.pack` signs."""
        return PrivacyGuarantee.model_validate(self.as_manifest())

    def with_ledger(self, name: str | None, note: str) -> PrivacyPlan:
        return dataclasses.replace(self, ledger=name, ledger_note=note)


def _positive(name: str, value: object, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name} must be a finite number > 0, got {value!r}", hint)
    return float(value)


def plan_privacy(
    sampler: SamplerLike,
    *,
    target_epsilon: float,
    target_delta: float,
    max_grad_norm: float,
    accountant: str = "pld",
    clipping: str = "flat",
    physical_batch_size: int | None = None,
) -> PrivacyPlan:
    """Calibrate the noise for ``sampler`` so that its run is (target_epsilon, target_delta)-DP.

    ``target_delta`` must be below ``1 / dataset_size``: a larger delta allows releasing a record outright.
    A sampler without an accountant event (a fixed-size shuffled one) is refused.
    """
    epsilon = _positive("target epsilon", target_epsilon, "Pass the epsilon this training may spend, e.g. 3.")
    delta = _positive("target delta", target_delta, "Pass a delta below 1/records, e.g. 1e-5.")
    if delta >= 1 / sampler.num_samples:
        raise UsageError(
            f"delta {delta:g} is not below 1/{sampler.num_samples} (one over the number of training records)",
            "A delta that large allows releasing some record in the clear; pass a smaller --delta.",
        )
    norm = _positive("max_grad_norm", max_grad_norm, "It is the per-sample clipping norm C, e.g. 1.0.")
    if accountant not in ("pld", "rdp"):
        raise UsageError(f"accountant {accountant!r} is not one of pld, rdp")
    requested: Accountant = "rdp" if accountant == "rdp" else "pld"
    sampler.event(1.0)  # fails closed for a sampler with no accountant event, before any calibration work
    noise = calibrate_gaussian(
        epsilon, delta, sample_rate=sampler.sample_rate, steps=sampler.steps, accountant=requested
    )
    guarantee = compose_epsilon([sampler.event(noise)], delta, requested)
    return PrivacyPlan(
        target_epsilon=epsilon,
        target_delta=delta,
        accountant=requested,
        sample_rate=sampler.sample_rate,
        steps=sampler.steps,
        dataset_size=sampler.num_samples,
        noise_multiplier=noise,
        max_grad_norm=norm,
        guarantee=guarantee,
        clipping=clipping,
        physical_batch_size=physical_batch_size,
    )
