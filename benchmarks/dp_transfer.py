"""DP transfer learning: fine-tuning a model pre-trained on public data beside DP-SGD from scratch, same run.

Every DP run is (epsilon 3, delta 1e-5)-DP on its private training set: PLD accountant, Poisson sampling, noise
calibrated by :func:`privet.dp.sgd.make_private` and steps run by :func:`privet.dp.sgd.train_private` (no
ledger: ``plan.ledger is None``; a benchmark charges nobody's budget). All DP runs on the same private set share
its size, expected batch, epochs and clipping bound, hence the noise multiplier: they differ only in which
parameters train. One recipe per part, not tuned per run.

(a) Images: privet's reference ``cnn`` (Tramer & Boneh's end-to-end CNN, 26 k parameters), in both directions,
Fashion-MNIST -> MNIST and MNIST -> Fashion-MNIST: which public set gives features that help the other is an
empirical question (an exploratory run found the answer to be the less obvious one, MNIST -> Fashion-MNIST),
so both are measured in every run. Each private set is used whole (60,000 images) and as its first 6,000
images, since public pre-training matters most when private data is scarce. For each direction:

- pre-train non-privately on the public set's training split (Adam, lr 1e-3, batch 128, 2 epochs);
- DP from scratch: a fresh CNN, every parameter trained;
- DP head only: the pre-trained CNN, only the last Linear (32 -> 10, 330 parameters) trained;
- DP last two Linear layers (512 -> 32 -> 10, 16.7 k parameters);
- DP whole model: the pre-trained CNN, every parameter trained (what the pre-trained start alone brings);
- non-private fine-tune of the whole pre-trained CNN (Adam, lr 5e-4, batch 128, 2 epochs of the full set's
  steps at every size), for reference.

DP recipe: expected batch 512, 8 epochs, SGD lr 0.5 momentum 0.9, clipping 0.1 (privet's MNIST recipe in
docs/benchmarks.md, not re-tuned), the same for every DP run. Head-only and last-two runs train the trailing
layers on the frozen layers' outputs, computed once per image: exactly what :func:`privet.dp.sgd.freeze` on the
whole CNN leaves to train (no dropout, no batch statistics), at a fraction of the time. Pixels map to [-1, 1]
by a fixed affine map (no statistics of the private data). Accuracies are on the private set's official test
split. Bar: on Fashion-MNIST with 6,000 private images, DP training of the last two layers of the
MNIST-pre-trained CNN beats DP from scratch (set after the exploratory run; Fashion-MNIST -> MNIST, where it
did not, is reported without a bar).

(b) Text: all-MiniLM-L6-v2 (:mod:`privet.models.pretrained`, 6-layer BERT, 22.6 M parameters, pinned, offline)
classifies what kind of personal field a short string is: person name, street address, city, company, job
title, country, date, phone number, or a free-text sentence (9 classes). Strings are generated with Faker
(seeded): training from locale en_US, test from en_GB, en_AU, en_IE, en_NZ and en_IN, so the test measures
generalisation to other conventions (names, address and phone formats; dates are written month-first in
training and day-first in test). Sentences use Faker's English word list in every locale (the non-US locales
would otherwise give Latin lorem ipsum). Token length 16 (truncated). Runs:

- non-private head: ``nn.Linear(384, 9)`` on the frozen mean-pooled features (Adam, lr 1e-2, batch 128, 20 epochs);
- DP head only; the features are computed once by the frozen encoder (allowed: it is the same function at
  every step, as the encoder has no dropout here);
- DP LoRA: adapters of rank 8 (alpha 16) on every attention query and value projection
  (:func:`privet.dp.sgd.add_adapters`) plus the head, trained through the whole encoder
  (:class:`~privet.models.pretrained.TextClassifier` on token ids), 77.2 k trainable parameters.

DP recipe: expected batch 256, 2 epochs, Adam (lr 3e-2 for the head, 5e-3 for the adapters, picked from
{1e-2, 3e-2, 1e-1} and {5e-3, 2e-2} in an exploratory run on this task), clipping 1.0. Each DP setting runs 3
times, alternating, from the same initial weights (28 noisy steps vary: LoRA's accuracy spread over single runs
by about 5 points); figures are the median, with the min and max. Bar: the median DP head is within 5 points of
the non-private head. Part (a) runs each setting once (over four full runs, no DP setting moved by more than
2.4 points).

Figures ``*_seconds_per_step`` are the wall time of a DP run over its steps: forward, backward with clipping,
noise, optimizer, Poisson batch assembly, and ``train_private``'s epsilon report at each epoch end (which
weighs on runs of few, cheap steps).

``--quick`` (under a minute): subsets of the data, fewer epochs; its figures are a smoke test, not results.

Run::

    .venv/bin/python -m pip install -e '.[transfer]'
    .venv/bin/python benchmarks/dp_transfer.py [--quick] [--data-root ../shared/data] --json
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs
from privet.data.images import load_mnist_like
from privet.dp.sgd import add_adapters, freeze, make_private, train_private
from privet.dp.sgd.private import TrainResult
from privet.models.reference import ModelSpec

BENCHMARK = "dp_transfer"
EPSILON, DELTA, ACCOUNTANT = 3.0, 1e-5, "pld"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DIRECTIONS = (("fashion-mnist", "mnist"), ("mnist", "fashion-mnist"))
SHORT = {"mnist": "mnist", "fashion-mnist": "fmnist"}
HEAD_ONLY, LAST_TWO = 9, 7  # index of the first trained layer of the reference CNN (nn.Sequential)

FIELDS = (
    "person name",
    "street address",
    "city",
    "company",
    "job title",
    "country",
    "date",
    "phone number",
    "sentence",
)
TRAIN_LOCALE = "en_US"
TEST_LOCALES = ("en_GB", "en_AU", "en_IE", "en_NZ", "en_IN")
TOKENS = 16
HEAD_LR, ADAPTER_LR = 3e-2, 5e-3  # DP-Adam learning rates of part (b)


@dataclass(frozen=True)
class Sizes:
    public_images: int | None  # public training images (None: all 60,000)
    private_sizes: tuple[int, ...]  # private training set sizes, each the first n images of the official split
    image_tests: int | None  # test images (None: all 10,000)
    pretrain_epochs: int
    dp_epochs: float
    finetune_epochs: int
    image_batch: int
    text_train_per_class: int
    text_test_per_class: int  # per test locale
    text_epochs: float
    text_batch: int
    text_repeats: int  # DP runs of part (b), each setting; the median accuracy is the figure


FULL = Sizes(None, (60_000, 6_000), None, 2, 8, 2, 512, 400, 40, 2, 256, 3)
QUICK = Sizes(1_000, (500,), 500, 1, 1, 1, 256, 40, 4, 1, 64, 1)


# -- shared ------------------------------------------------------------------------------------------------------
def batches(n: int, size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(size)


def accuracy(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch: int = 1000) -> float:
    with torch.no_grad():
        hits = sum(int((predict(x[i]).argmax(1) == y[i]).sum()) for i in batches(len(x), batch))
    return hits / len(x)


def apply(function: Callable[[Tensor], Tensor], x: Tensor, batch: int = 1000) -> Tensor:
    """``function(x)`` without gradients, a batch at a time (bounded memory)."""
    with torch.no_grad():
        return torch.cat([function(x[i]) for i in batches(len(x), batch)])


def fit(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch: int, seed: int) -> None:
    """Non-private training: Adam, shuffled mini-batches."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in batches(len(x), batch, generator):
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    model.eval()


def dp_fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    epochs: float,
    batch: int,
    clip: float,
    average: float | None = None,
) -> TrainResult:
    model, private_optimizer, loader, plan = make_private(
        model,
        optimizer,
        (x, y),
        target_epsilon=EPSILON,
        target_delta=DELTA,
        epochs=epochs,
        max_grad_norm=clip,
        batch_size=batch,
        accountant=ACCOUNTANT,
    )
    assert plan.ledger is None
    return train_private(model, private_optimizer, loader, plan, average=average)


def record(figures: dict, prefix: str, runs: list[TrainResult]) -> None:
    """The plan's figures (the same for every run of a setting) and the median wall time per step."""
    figures[f"{prefix}_epsilon"] = round(max(r.plan.epsilon for r in runs), 4)
    figures[f"{prefix}_noise_multiplier"] = round(runs[0].plan.noise_multiplier, 4)
    figures[f"{prefix}_steps"] = runs[0].steps
    figures[f"{prefix}_seconds_per_step"] = round(statistics.median(r.seconds / max(r.steps, 1) for r in runs), 4)


# -- (a) images --------------------------------------------------------------------------------------------------
def load_images(root: Path, name: str, train: int | None, test: int | None) -> tuple[Tensor, ...]:
    split = load_mnist_like(root / name, name=name)
    return split.x_train[:train] * 2 - 1, split.y_train[:train], split.x_test[:test] * 2 - 1, split.y_test[:test]


def cnn() -> nn.Sequential:
    model = ModelSpec("cnn", 784, 10, 32).build()
    assert isinstance(model, nn.Sequential)
    return model


def dp_sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.5, momentum=0.9)


def image_direction(root: Path, public: str, private: str, sizes: Sizes, figures: dict) -> dict[str, float]:
    """Pre-train on ``public``, then every run on each private size of ``private``; returns test accuracies."""
    tag = f"a_{SHORT[public]}_to_{SHORT[private]}"
    px, py, ptx, pty = load_images(root, public, sizes.public_images, sizes.image_tests)
    x, y, tx, ty = load_images(root, private, max(sizes.private_sizes), sizes.image_tests)
    torch.manual_seed(0)
    pretrained = cnn()
    started = time.perf_counter()
    fit(pretrained, px, py, epochs=sizes.pretrain_epochs, lr=1e-3, batch=128, seed=1)
    figures[f"{tag}_pretrain_seconds"] = round(time.perf_counter() - started, 1)
    figures[f"{tag}_pretrain_public_test_accuracy"] = accuracy(pretrained, ptx, pty)
    log(f"{tag}: pre-trained on {public}: {figures[f'{tag}_pretrain_public_test_accuracy']:.4f} on its test split")
    # Frozen fronts of the pre-trained CNN: what freeze(model, [trained layers]) leaves fixed, run once per image.
    fronts = {}
    for name, first in (("dp_head", HEAD_ONLY), ("dp_last2", LAST_TWO)):
        model = copy.deepcopy(pretrained)
        freeze(model, [str(i) for i in range(first, len(model))])
        fronts[name] = (apply(model[:first], x), apply(model[:first], tx), model[first:])
    results: dict[str, float] = {}
    for n in sizes.private_sizes:
        key = f"n{n}"
        common = {"epochs": sizes.dp_epochs, "batch": sizes.image_batch, "clip": 0.1}
        torch.manual_seed(2)
        scratch = cnn()
        result = dp_fit(scratch, dp_sgd(list(scratch.parameters())), x[:n], y[:n], **common)
        record(figures, f"{tag}_{key}_dp_scratch", [result])
        results[f"{key}_dp_scratch"] = accuracy(scratch, tx, ty)
        for name, (features, test_features, layers) in fronts.items():
            trained = copy.deepcopy(layers)
            result = dp_fit(trained, dp_sgd(list(trained.parameters())), features[:n], y[:n], **common)
            record(figures, f"{tag}_{key}_{name}", [result])
            results[f"{key}_{name}"] = accuracy(trained, test_features, ty)
        whole = copy.deepcopy(pretrained)
        result = dp_fit(whole, dp_sgd(list(whole.parameters())), x[:n], y[:n], **common)
        record(figures, f"{tag}_{key}_dp_all", [result])
        results[f"{key}_dp_all"] = accuracy(whole, tx, ty)
        tuned = copy.deepcopy(pretrained)
        epochs = max(1, round(sizes.finetune_epochs * max(sizes.private_sizes) / n))  # the same number of steps
        fit(tuned, x[:n], y[:n], epochs=epochs, lr=5e-4, batch=128, seed=3)
        results[f"{key}_nonprivate_finetune"] = accuracy(tuned, tx, ty)
    for name, value in results.items():
        figures[f"{tag}_{name}_test_accuracy"] = value
        log(f"{tag}: {name}: test accuracy {value:.4f}")
    return results


# -- (b) text ----------------------------------------------------------------------------------------------------
def field_texts(locale: str, per_class: int, seed: int) -> tuple[list[str], list[int]]:
    from faker import Faker
    from faker.providers.lorem.en_US import Provider as EnglishLorem

    fake = Faker(locale)
    fake.seed_instance(seed)
    date_formats = ("%B %d, %Y", "%m/%d/%Y") if locale == "en_US" else ("%d %B %Y", "%d/%m/%Y")
    make: dict[str, Callable[[], str]] = {
        "person name": fake.name,
        "street address": lambda: fake.street_address().replace("\n", ", "),
        "city": fake.city,
        "company": fake.company,
        "job title": fake.job,
        "country": fake.country,
        "date": lambda: fake.date_object().strftime(fake.random.choice(date_formats)),
        "phone number": fake.phone_number,
        "sentence": lambda: fake.sentence(nb_words=8, ext_word_list=EnglishLorem.word_list),
    }
    texts, labels = [], []
    for label, field in enumerate(FIELDS):
        texts += [make[field]() for _ in range(per_class)]
        labels += [label] * per_class
    return texts, labels


def pooled(model: nn.Module, x: Tensor) -> Tensor:
    return apply(model.features, x, batch=128)


def lora_classifier(encoder: nn.Module, head: nn.Linear) -> tuple[nn.Module, list[dict]]:
    """A classifier on a copy of ``encoder`` with LoRA on query/value and a copy of ``head``; its Adam groups."""
    from privet.models.pretrained import TextClassifier

    model = TextClassifier(copy.deepcopy(encoder), head.out_features)
    model.head.load_state_dict(head.state_dict())
    freeze(model, ["head", *add_adapters(model, ("query", "value"), rank=8, alpha=16.0)])
    adapters = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    return model, [{"params": adapters}, {"params": list(model.head.parameters()), "lr": HEAD_LR}]


def text_part(sizes: Sizes, figures: dict) -> dict[str, float]:
    from privet.models.pretrained import TextClassifier, encode_texts, text_encoder

    started = time.perf_counter()
    encoder, tokenizer = text_encoder()
    figures["b_load_seconds"] = round(time.perf_counter() - started, 1)
    texts, labels = field_texts(TRAIN_LOCALE, sizes.text_train_per_class, seed=0)
    test_texts: list[str] = []
    test_labels: list[int] = []
    for k, locale in enumerate(TEST_LOCALES, start=1):
        more, more_labels = field_texts(locale, sizes.text_test_per_class, seed=k)
        test_texts += more
        test_labels += more_labels
    x, y = encode_texts(tokenizer, texts, TOKENS), torch.tensor(labels)
    tx, ty = encode_texts(tokenizer, test_texts, TOKENS), torch.tensor(test_labels)
    figures["b_train_examples"], figures["b_test_examples"] = len(x), len(tx)
    log(f"b: {len(x)} training strings ({TRAIN_LOCALE}), {len(tx)} test strings ({', '.join(TEST_LOCALES)})")

    torch.manual_seed(0)
    probe = TextClassifier(encoder, len(FIELDS))
    started = time.perf_counter()
    features, test_features = pooled(probe, x), pooled(probe, tx)
    figures["b_feature_seconds"] = round(time.perf_counter() - started, 1)
    results: dict[str, float] = {}

    head = copy.deepcopy(probe.head)
    fit(head, features, y, epochs=20, lr=1e-2, batch=128, seed=1)
    results["nonprivate_head"] = accuracy(head, test_features, ty)

    common = {"epochs": sizes.text_epochs, "batch": sizes.text_batch, "clip": 1.0}
    runs: dict[str, list[tuple[float, TrainResult]]] = {"dp_head": [], "dp_lora": []}
    for _ in range(sizes.text_repeats):  # alternating; every repeat starts from the same weights
        head = copy.deepcopy(probe.head)
        result = dp_fit(head, torch.optim.Adam(head.parameters(), lr=HEAD_LR), features, y, **common)
        runs["dp_head"].append((accuracy(head, test_features, ty), result))
        model, groups = lora_classifier(encoder, probe.head)
        result = dp_fit(model, torch.optim.Adam(groups, lr=ADAPTER_LR), x, y, **common)
        runs["dp_lora"].append((accuracy(model, tx, ty, batch=128), result))
    figures["b_dp_lora_trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for name, pairs in runs.items():
        record(figures, f"b_{name}", [r for _, r in pairs])
        values = [a for a, _ in pairs]
        results[name] = statistics.median(values)
        figures[f"b_{name}_test_accuracy_min"], figures[f"b_{name}_test_accuracy_max"] = min(values), max(values)
    for name, value in results.items():
        figures[f"b_{name}_test_accuracy"] = value
        log(f"b: {name}: test accuracy {value:.4f}")
    return results


# -- main --------------------------------------------------------------------------------------------------------
def bar(value: float, limit: float, ok: bool) -> dict[str, object]:
    return {"value": round(value, 4), "limit": limit, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="subsets and fewer epochs (a smoke run, under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="holds mnist/ and fashion-mnist/")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    # dp_accounting warns for each Renyi order it drops from the RDP estimate that privet uses as a range check
    # before the PLD computation; the PLD epsilon is unaffected.
    logging.getLogger("absl").setLevel(logging.ERROR)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    figures: dict[str, float] = {}
    bars: dict[str, dict[str, object]] = {}
    images = {pair: image_direction(args.data_root, *pair, sizes, figures) for pair in DIRECTIONS}
    # Part (a)'s bar: where the exploratory run found transfer to help (see the module docstring).
    fashion, small = images[("mnist", "fashion-mnist")], min(sizes.private_sizes)
    gain = fashion[f"n{small}_dp_last2"] - fashion[f"n{small}_dp_scratch"]
    bars[f"a_mnist_to_fmnist_n{small}_dp_last2_minus_dp_scratch"] = bar(gain, 0.0, gain > 0)
    text = text_part(sizes, figures)
    gap = text["nonprivate_head"] - text["dp_head"]
    bars["b_nonprivate_minus_dp_head"] = bar(gap, 0.05, gap <= 0.05)
    epsilons = [v for k, v in figures.items() if k.endswith("_epsilon")]
    bars["max_epsilon_spent"] = bar(max(epsilons), EPSILON, max(epsilons) <= EPSILON + 1e-9)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    log_bars(BENCHMARK, bars)
    notes = (
        f"All DP runs: epsilon {EPSILON:g}, delta {DELTA:g}, {ACCOUNTANT.upper()} accountant, Poisson sampling, "
        "make_private/train_private without a ledger. (a) reference CNN, same DP recipe for scratch, head-only and "
        "last-two runs (batch 512, SGD 0.5 momentum 0.9, clip 0.1); head-only/last-two train on features of the "
        "frozen pre-trained layers computed once. (b) all-MiniLM-L6-v2; field-type classification, Faker en_US "
        "train, en_GB/AU/IE/NZ/IN test; DP head on precomputed features; LoRA rank 8 on query/value + head "
        "through the encoder." + (" --quick: subsets, 1 epoch: smoke figures only." if args.quick else "")
    )
    details = {"threads": torch.get_num_threads(), "sizes": sizes.__dict__, "torch": torch.__version__}
    if args.json:
        emit(BENCHMARK, figures, bars, notes, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
