"""DP-SGD for PyTorch: per-sample clipping in one backward pass (:mod:`.engine`, :mod:`.layers`), noise
(:mod:`.optimizer`), Poisson sampling (:mod:`.sampler`), calibration and the ledger charge (:mod:`.plan`,
:mod:`.private`). :func:`make_private` is the safe entry point; the pieces below it are for custom loops.

Typical use (loss averaged over the batch)::

    clipper = PerSampleClipper(model, max_grad_norm=1.0)
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.1,
                            max_grad_norm=1.0, expected_batch_size=256)
    for x, y in poisson_batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()   # .grad now holds the sum of clipped per-sample gradients
        optimizer.step()                  # + N(0, (1.1 * 1.0)^2), / 256, then SGD
"""

from privet.dp.sgd.attention import MultiheadAttention, replace_attention
from privet.dp.sgd.engine import PerSampleClipper
from privet.dp.sgd.layers import LayerGrads, check_supported, replace_batch_norm
from privet.dp.sgd.optimizer import DPOptimizer
from privet.dp.sgd.plan import PrivacyPlan, plan_privacy
from privet.dp.sgd.private import make_private, train_private
from privet.dp.sgd.sampler import PoissonSampler, ShuffledSampler
from privet.dp.sgd.transfer import LowRankAdapter, add_adapters, freeze, merge_adapters

__all__ = [
    "DPOptimizer",
    "LayerGrads",
    "LowRankAdapter",
    "MultiheadAttention",
    "PerSampleClipper",
    "PoissonSampler",
    "PrivacyPlan",
    "ShuffledSampler",
    "add_adapters",
    "check_supported",
    "freeze",
    "make_private",
    "merge_adapters",
    "plan_privacy",
    "replace_attention",
    "replace_batch_norm",
    "train_private",
]
