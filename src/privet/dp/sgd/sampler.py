"""Batch samplers for training: Poisson subsampling for DP-SGD, shuffled fixed-size batches for plain training.

DP-SGD's accounting (:class:`~privet.dp.accounting.GaussianEvent` with ``sample_rate=q``) assumes *Poisson*
subsampling: in every step, every record joins the batch independently with probability ``q``, so batch sizes
vary (Binomial(N, q)) and a batch may be empty. Shuffling and cutting fixed-size batches is a different
mechanism whose privacy that event does not bound, so the two samplers here differ in what they will say:

- :class:`PoissonSampler` draws one uniform number per record per step from :class:`~privet.crypto.prg.Randomness`
  (the OS-keyed AES-CTR CSPRNG unless a test passes a seeded one), and its :meth:`PoissonSampler.event` gives the
  accountant event of exactly the sampling it does: same rate, same number of steps. Its rate is the true
  inclusion probability: the requested rate rounded up to the 2**-53 grid the uniforms live on.
- :class:`ShuffledSampler` refuses to give an event at all (fail closed).

Both are iterables of index lists, usable as a ``torch.utils.data.DataLoader``'s ``batch_sampler``. A
:class:`PoissonSampler` runs its steps once: a second pass would use the data again beyond what its event covers,
so it is refused.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np

from privet.crypto.prg import Randomness
from privet.dp.accounting import GaussianEvent
from privet.errors import UsageError

__all__ = ["PoissonSampler", "ShuffledSampler"]

_GRID = 2.0**53  # Randomness.uniform returns k * 2**-53


def _records(num_samples: object) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or int(num_samples) < 1:
        raise UsageError(f"the data set size must be a positive integer, got {num_samples!r}", "Pass len(dataset).")
    return int(num_samples)


def _positive_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _epochs(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"epochs must be a finite number > 0, got {value!r}")
    return float(value)


class PoissonSampler:
    """``steps`` batches, each holding every record independently with probability ``sample_rate``.

    Give either ``steps`` or ``epochs`` (then ``steps = round(epochs / sample_rate)``, at least 1).
    """

    poisson = True

    def __init__(
        self,
        num_samples: int,
        sample_rate: float,
        *,
        steps: int | None = None,
        epochs: float | None = None,
        randomness: Randomness | None = None,
    ) -> None:
        self.num_samples = _records(num_samples)
        hint = "sample_rate is each record's probability of joining a batch: 0 < sample_rate <= 1."
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or not math.isfinite(sample_rate):
            raise UsageError(f"sample_rate must be a finite number, got {sample_rate!r}", hint)
        if not 0 < sample_rate <= 1:
            raise UsageError(f"sample_rate must be in (0, 1], got {sample_rate!r}", hint)
        # P(u < q) for u uniform on {k * 2**-53} is ceil(q * 2**53) / 2**53 (exact in floats): account for that.
        self.sample_rate = math.ceil(float(sample_rate) * _GRID) / _GRID
        if (steps is None) == (epochs is None):
            raise UsageError("give exactly one of steps and epochs", "epochs = steps * sample_rate.")
        if steps is not None:
            self.steps = _positive_count("steps", steps)
        else:
            self.steps = max(1, round(_epochs(epochs) / self.sample_rate))
        if randomness is not None and not isinstance(randomness, Randomness):
            raise UsageError(
                "the sampler's randomness must be a privet.crypto.prg.Randomness",
                "Leave it out (the OS CSPRNG is used) or pass Randomness.for_tests(seed) in tests.",
            )
        self.randomness = randomness if randomness is not None else Randomness.system()
        self._started = False
        self.steps_drawn = 0

    @classmethod
    def from_batch_size(
        cls, num_samples: int, batch_size: float, *, epochs: float, randomness: Randomness | None = None
    ) -> PoissonSampler:
        """A sampler whose expected batch size is ``batch_size`` (``sample_rate = batch_size / num_samples``)."""
        records = _records(num_samples)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Real) or not 0 < batch_size <= records:
            raise UsageError(
                f"the expected batch size must be in (0, {records}] (the data set size), got {batch_size!r}"
            )
        return cls(records, float(batch_size) / records, epochs=epochs, randomness=randomness)

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.num_samples

    @property
    def epochs(self) -> float:
        """Expected passes over the data: ``steps * sample_rate``."""
        return self.steps * self.sample_rate

    @property
    def steps_per_epoch(self) -> int:
        return min(self.steps, max(1, round(1 / self.sample_rate)))

    def event(self, noise_multiplier: float) -> GaussianEvent:
        """The accountant event of this sampler's run with Gaussian noise ``noise_multiplier`` per step."""
        return GaussianEvent(noise_multiplier, self.sample_rate, self.steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        if self._started:
            raise UsageError(
                "this Poisson sampler has already run its steps",
                "Its accountant event covers one pass of `steps` batches; build a new sampler (and charge for it).",
            )
        self._started = True
        return self._batches()

    def _batches(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            chosen = np.flatnonzero(self.randomness.uniform(self.num_samples) < self.sample_rate)
            self.steps_drawn += 1
            yield chosen.tolist()

    def __repr__(self) -> str:
        return (
            f"PoissonSampler(num_samples={self.num_samples}, sample_rate={self.sample_rate:.6g}, "
            f"steps={self.steps}, randomness={self.randomness!r})"
        )


class ShuffledSampler:
    """Fixed-size batches from a fresh random permutation each epoch: for non-private training only.

    It has no accountant event: :meth:`event` raises, so it cannot be mistaken for a DP sampler.
    """

    poisson = False

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        epochs: int = 1,
        drop_last: bool = False,
        randomness: Randomness | None = None,
    ) -> None:
        self.num_samples = _records(num_samples)
        self.batch_size = _positive_count("batch_size", batch_size)
        self.epochs = _positive_count("epochs", epochs)
        self.drop_last = drop_last
        self.randomness = randomness if randomness is not None else Randomness.system()

    @property
    def steps_per_epoch(self) -> int:
        if self.drop_last:
            return max(1, self.num_samples // self.batch_size)
        return math.ceil(self.num_samples / self.batch_size)

    def event(self, noise_multiplier: float) -> GaussianEvent:
        raise UsageError(
            "a shuffled fixed-size sampler has no differential-privacy accounting",
            "Use PoissonSampler for DP-SGD: the accountant's guarantee assumes Poisson subsampling.",
        )

    def __len__(self) -> int:
        return self.epochs * self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.epochs):
            # A uniform permutation: sort by random 64-bit keys (ties, of probability ~N**2 / 2**65, are harmless).
            order = np.argsort(self.randomness.uint64(self.num_samples), kind="stable")
            for step in range(self.steps_per_epoch):
                batch = order[step * self.batch_size : (step + 1) * self.batch_size]
                if len(batch):
                    yield batch.tolist()

    def __repr__(self) -> str:
        return f"ShuffledSampler(num_samples={self.num_samples}, batch_size={self.batch_size}, epochs={self.epochs})"
