"""privet.dp.sgd.transfer: freeze, LoRA adapters and their merge, and the clipper on partly frozen models.

Clipped per-sample gradients are checked against a naive loop (one backward per example, float64) on a small
randomly initialised Hugging Face BertModel and on privet's reference CNN; the real all-MiniLM-L6-v2 is covered
in tests/models/test_pretrained.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from privet.dp.sgd import LowRankAdapter, PerSampleClipper, add_adapters, freeze, make_private, merge_adapters
from privet.errors import UsageError
from privet.models.pretrained import TextClassifier
from privet.models.reference import ModelSpec

CLIP = 0.5


def _tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers", reason="needs the transfer extra")
    config = transformers.BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertModel(config, add_pooling_layer=False)


@pytest.fixture
def classifier() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier(_tiny_bert(), 3).double()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 60, (5, 7), generator=gen)
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 4:] = 0  # padded rows: the clipper must keep the examples apart under the attention mask
    mask[3, 2:] = 0
    return torch.stack([ids, mask], 1), torch.randint(0, 3, (5,), generator=gen)


def _perturb_adapters(model: nn.Module) -> None:
    # up starts at zero, which would make every down gradient zero: give both factors values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("up.weight", "down.weight")):
                p.normal_(0, 0.3)


def _naive(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Sum of per-example gradients clipped to CLIP, one backward per example."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    per = [
        torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), list(params.values()))
        for i in range(len(x))
    ]
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in grads)) for grads in per])
    factor = (CLIP / (norms + 1e-6)).clamp(max=1.0)
    total = {n: sum(factor[i] * per[i][k] for i in range(len(x))) for k, n in enumerate(params)}
    return total, norms


def _check_against_naive(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    expected, norms = _naive(model, x, y)
    assert min(norms) > CLIP  # every example is actually clipped
    with PerSampleClipper(model, CLIP, loss_reduction="sum") as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(clipper.last_norms, norms, rtol=1e-10, atol=0)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
            continue
        relative = ((p.grad - expected[name]).norm() / expected[name].norm()).item()
        assert relative <= 1e-10, (name, relative)


# -- freeze ------------------------------------------------------------------------------------------------------
def test_freeze_keeps_only_the_named_modules(classifier: TextClassifier) -> None:
    kept = freeze(classifier, ["head", "encoder.encoder.layer.1.output"])
    assert kept == [
        "encoder.encoder.layer.1.output.dense.weight",
        "encoder.encoder.layer.1.output.dense.bias",
        "encoder.encoder.layer.1.output.LayerNorm.weight",
        "encoder.encoder.layer.1.output.LayerNorm.bias",
        "head.weight",
        "head.bias",
    ]
    assert [n for n, p in classifier.named_parameters() if p.requires_grad] == kept
    assert freeze(classifier, "head") == ["head.weight", "head.bias"]  # a bare string is one name


def test_freeze_never_unfreezes(classifier: TextClassifier) -> None:
    classifier.head.bias.requires_grad_(False)
    assert freeze(classifier, ["head"]) == ["head.weight"]
    with pytest.raises(UsageError, match=r"no parameter of 'encoder\.embeddings' is trainable"):
        freeze(classifier, ["encoder.embeddings"])


def test_freeze_refuses_unknown_names_with_close_ones(classifier: TextClassifier) -> None:
    with pytest.raises(UsageError, match="no module named 'haed'") as info:
        freeze(classifier, ["haed"])
    assert "Close names: head" in info.value.hint
    with pytest.raises(UsageError, match=r"'head\.weight' is a parameter") as info:
        freeze(classifier, ["head.weight"])
    assert "'head'" in info.value.hint
    assert all(p.requires_grad for p in classifier.parameters())  # a refusal changes nothing


def test_head_only_clipping_matches_naive_on_bert(classifier: TextClassifier, batch: tuple) -> None:
    freeze(classifier, ["head"])
    _check_against_naive(classifier, *batch)


def test_head_only_clipping_matches_naive_on_the_reference_cnn() -> None:
    torch.manual_seed(0)
    model = ModelSpec("cnn", 784, 10, 32).build().double()
    freeze(model, ["7", "9"])  # the last two Linear layers
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=gen)
    with torch.no_grad():
        model[9].weight.mul_(20)  # larger gradients, so that every example is clipped
    _check_against_naive(model, x, y)


# -- adapters ----------------------------------------------------------------------------------------------------
def test_adapters_start_as_the_base_model(classifier: TextClassifier, batch: tuple) -> None:
    x, _ = batch
    before = classifier(x)
    names = add_adapters(classifier, rank=4)
    assert names == [f"encoder.encoder.layer.{i}.attention.self.{k}" for i in (0, 1) for k in ("query", "value")]
    torch.testing.assert_close(classifier(x), before, rtol=0, atol=0)
    adapter = classifier.get_submodule(names[0])
    assert isinstance(adapter, LowRankAdapter)
    assert adapter.scale == 4.0 and adapter.down.weight.shape == (4, 16) and adapter.up.weight.shape == (16, 4)
    assert not any(p.requires_grad for p in adapter.base.parameters())
    assert classifier.head.weight.requires_grad  # other parameters are left as they were


def test_adapter_clipping_matches_naive_on_3d_inputs() -> None:
    torch.manual_seed(0)
    adapter = LowRankAdapter(nn.Linear(6, 5, dtype=torch.float64), rank=3, alpha=6.0)
    _perturb_adapters(adapter)
    model = nn.Sequential(adapter, nn.Flatten(), nn.Linear(4 * 5, 3, dtype=torch.float64))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 6, generator=gen, dtype=torch.float64) * 5  # [B, L, d]
    y = torch.randint(0, 3, (6,), generator=gen)
    _check_against_naive(model, x, y)


def test_adapter_and_head_clipping_matches_naive_on_bert(classifier: TextClassifier, batch: tuple) -> None:
    names = add_adapters(classifier, ("query", "value"), rank=4)
    kept = freeze(classifier, ["head", *names])
    assert len(kept) == 2 * len(names) + 2  # down, up per adapter; head weight and bias
    _perturb_adapters(classifier)
    _check_against_naive(classifier, *batch)


def test_merge_adapters_computes_the_same_function(classifier: TextClassifier, batch: tuple) -> None:
    x, _ = batch
    with torch.no_grad():
        plain = classifier(x)
    names = add_adapters(classifier, ("attention.self.query", "output.dense"), rank=2, alpha=3.0)
    assert len(names) == 6  # per layer: query, attention.output.dense, output.dense
    _perturb_adapters(classifier)
    with torch.no_grad():
        adapted = classifier(x)
        assert (adapted - plain).abs().max() > 1e-3  # the adapters do change the function
        assert merge_adapters(classifier) == names
        merged = classifier(x)
    assert not any(isinstance(m, LowRankAdapter) for m in classifier.modules())
    assert all(type(classifier.get_submodule(n)) is nn.Linear for n in names)
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-12)


def test_add_adapters_matches_dotted_suffixes_only(classifier: TextClassifier) -> None:
    with pytest.raises(UsageError, match=r"no nn\.Linear layer of the model matches 'uery'") as info:
        add_adapters(classifier, "uery")
    assert "query" in info.value.hint and "value" in info.value.hint


def test_add_adapters_refuses_multihead_attention_projections() -> None:
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    with pytest.raises(UsageError, match=r"belongs to an nn\.MultiheadAttention"):
        add_adapters(model, "out_proj")
    assert type(model[0].out_proj) is not LowRankAdapter


def test_add_adapters_refuses_a_model_made_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVET_TEST_SEEDS", "1")
    from privet.crypto.prg import Randomness

    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    data = (torch.randn(100, 4), torch.randint(0, 2, (100,)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    make_private(
        model,
        optimizer,
        data,
        target_epsilon=3.0,
        target_delta=1e-3,
        epochs=1,
        max_grad_norm=1.0,
        batch_size=10,
        accountant="rdp",  # calibrates faster than PLD; the accountant does not matter here
        randomness=Randomness.for_tests(0),
    )
    with pytest.raises(UsageError, match="already made private"):
        add_adapters(model, "0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rank": 0}, "rank"), ({"alpha": -1.0}, "alpha"), ({"dropout": 1.0}, "dropout"), ({"rank": 2.0}, "rank")],
)
def test_adapter_arguments_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LowRankAdapter(nn.Linear(3, 3), **kwargs)


def test_merge_refuses_a_root_adapter() -> None:
    adapter = LowRankAdapter(nn.Linear(3, 2))
    with pytest.raises(UsageError, match="itself is a LowRankAdapter"):
        merge_adapters(adapter)
    assert type(adapter.merged()) is nn.Linear


def test_trainable_position_embeddings_are_refused(classifier: TextClassifier, batch: tuple) -> None:
    # Why TextClassifier's docs say the embeddings stay frozen: BERT looks positions up with batch dimension 1.
    freeze(classifier, ["head", "encoder.embeddings.position_embeddings"])
    x, y = batch
    with PerSampleClipper(classifier, CLIP), pytest.raises(UsageError, match="different batch sizes"):
        F.cross_entropy(classifier(x), y).backward()
