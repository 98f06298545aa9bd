"""Registry models as the gateway serves them: verified when loaded, kept in memory, refused when not trusted.

A model is loaded from the registry the first time it is asked for (or at start-up), through
:func:`privet.models.artifact.read`: the signature must verify under a key of this keyring, every file and tensor
digest must match, the payload must decrypt, and pickle formats are refused. Anything else is a
:class:`ModelRefusedError` and the model is not served; nothing falls back to loading the weights some other way.
A refusal is remembered for ``retry_seconds`` so a bad artifact is not re-read on every request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch
from torch import nn

from privet.crypto import Keyring
from privet.errors import NotFoundError, PrivetError
from privet.models import artifact
from privet.models.reference import ModelSpec, load_weights
from privet.models.registry import Registry

__all__ = ["LoadedModel", "ModelRefusedError", "Models"]


class ModelRefusedError(PrivetError):
    """The model's artifact failed verification: it is not served."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    digest: str  # the artifact's SHA-256, as audit records name it
    module: nn.Module
    in_features: int

    def predict(self, rows: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.module(rows), dim=1)


class Models:
    """Verified models of ``registry`` by reference (``name`` or ``name:version``)."""

    def __init__(self, registry: Registry, keyring: Keyring, *, retry_seconds: float = 30.0) -> None:
        self._registry, self._keyring, self._retry = registry, keyring, retry_seconds
        self._loaded: dict[str, LoadedModel] = {}
        self._refused: dict[str, tuple[float, PrivetError]] = {}
        self._lock = threading.Lock()

    def get(self, reference: str) -> LoadedModel:
        model = self._loaded.get(reference)
        if model is not None:
            return model
        with self._lock:  # one load per model, however many requests ask at once
            model = self._loaded.get(reference)
            if model is not None:
                return model
            refused = self._refused.get(reference)
            if refused is not None and time.monotonic() - refused[0] < self._retry:
                raise refused[1]
            try:
                model = self._load(reference)
            except ModelRefusedError as exc:
                self._refused[reference] = (time.monotonic(), exc)
                raise
            self._loaded[reference] = model
            return model

    def _load(self, reference: str) -> LoadedModel:
        try:
            entry = self._registry.resolve(reference)
        except NotFoundError:
            hint = "List them: privet model list"
            raise NotFoundError("no such model in the registry", hint) from None
        try:
            verified = artifact.read(entry.path, self._keyring.verify_key, self._keyring)
            spec = ModelSpec.from_metadata(verified.manifest.metadata)
            module = load_weights(spec, verified.files["model.safetensors"])
        except (PrivetError, KeyError) as exc:
            detail = exc.message if isinstance(exc, PrivetError) else "it holds no model.safetensors"
            hint = "Re-pack it with privet model pack; unverified weights are never served."
            raise ModelRefusedError(f"model {entry.name}:{entry.version} is refused: {detail}", hint) from None
        module.eval()
        return LoadedModel(entry.name, entry.version, entry.sha256, module, spec.in_features)
