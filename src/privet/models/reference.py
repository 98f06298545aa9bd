"""Small reference models, described by a :class:`ModelSpec` that travels in an artifact's metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
from torch import nn

from privet.errors import FormatError, UsageError
from privet.files import atomic_file

KINDS = ("logreg", "mlp")


@dataclass(frozen=True)
class ModelSpec:
    """Enough to rebuild a reference model's architecture before loading its weights."""

    kind: str
    in_features: int
    classes: int
    hidden: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"model kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.in_features < 1 or self.classes < 2 or (self.kind == "mlp" and self.hidden < 1):
            raise UsageError("model sizes must be positive (and classes >= 2)")

    def to_metadata(self) -> dict[str, str | int]:
        return {
            "model.kind": self.kind,
            "model.in": self.in_features,
            "model.classes": self.classes,
            "model.hidden": self.hidden,
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, object]) -> ModelSpec:
        try:
            kind, width, classes, hidden = (
                metadata[k] for k in ("model.kind", "model.in", "model.classes", "model.hidden")
            )
        except KeyError as exc:
            raise FormatError(f"the model metadata lacks {exc.args[0]!r}") from None
        if not isinstance(kind, str) or not all(isinstance(v, int) for v in (width, classes, hidden)):
            raise FormatError("the model metadata has values of the wrong type")
        return cls(kind, width, classes, hidden)  # type: ignore[arg-type]

    def build(self) -> nn.Module:
        if self.kind == "logreg":
            return nn.Sequential(nn.Linear(self.in_features, self.classes))
        return nn.Sequential(nn.Linear(self.in_features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.classes))


def save_weights(model: nn.Module, path: Path) -> None:
    """Write the model's parameters to a ``.safetensors`` file, atomically."""
    data = safetensors.torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    with atomic_file(Path(path), mode=0o644) as handle:
        handle.write(data)


def load_weights(spec: ModelSpec, data: bytes) -> nn.Module:
    """Build ``spec``'s model and load weights from safetensors bytes; names and shapes must match exactly."""
    model = spec.build()
    try:
        model.load_state_dict(safetensors.torch.load(data), strict=True)
    except (RuntimeError, safetensors.SafetensorError) as exc:
        raise FormatError(f"the weights do not fit a {spec.kind} model ({type(exc).__name__})") from None
    return model.eval()
