"""Small reference models, described by a :class:`ModelSpec` that travels in an artifact's metadata.

- ``logreg``: one linear layer on ``in_features`` inputs.
- ``mlp``: linear, ReLU, linear (``hidden`` units).
- ``cnn``: the end-to-end CNN of Tramer & Boneh (2021, "Differentially private learning needs better features")
  for 28x28 grey-scale images (MNIST, Fashion-MNIST), input ``(N, 1, 28, 28)``: conv 16 8x8 stride 2 padding 3,
  tanh, max-pool 2x2 stride 1, conv 32 4x4 stride 2, tanh, max-pool 2x2 stride 1, flatten, linear 32, tanh,
  linear ``classes``. tanh (not ReLU) is what that paper found best under DP-SGD. ``in_features`` is 784 and
  ``hidden`` the width of the first linear layer (32). It has no batch normalisation, which DP-SGD cannot use.
- ``scatternet``: the ScatterNet + linear model of the same paper for 28x28 grey-scale images: a fixed scattering
  transform (:class:`~privet.models.scatter.ScatterFeatures`, J=2, 8 angles, 81 x 7 x 7 features, per-image
  group normalisation) and one trained linear layer. Only the linear layer is trained (and noised); the
  features are data-independent, see :meth:`ModelSpec.fixed_features`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
from torch import nn

from privet.errors import FormatError, UsageError
from privet.files import atomic_file
from privet.models.scatter import ScatterFeatures

KINDS = ("logreg", "mlp", "cnn", "scatternet")
IMAGE_KINDS = ("cnn", "scatternet")  # take (N, 1, 28, 28) images rather than flat vectors
CNN_SIDE = 28  # the image models take 1 x 28 x 28 images


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
        if self.in_features < 1 or self.classes < 2 or (self.kind in ("mlp", "cnn") and self.hidden < 1):
            raise UsageError("model sizes must be positive (and classes >= 2)")
        if self.kind in IMAGE_KINDS and self.in_features != CNN_SIDE * CNN_SIDE:
            raise UsageError(
                f"the {self.kind} takes 1x{CNN_SIDE}x{CNN_SIDE} images "
                f"({CNN_SIDE * CNN_SIDE} inputs), not {self.in_features}",
                "Use mlp or logreg for other inputs.",
            )

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
        if self.kind == "scatternet":
            features = ScatterFeatures(CNN_SIDE)
            return nn.Sequential(features, nn.Linear(features.out_features, self.classes))
        if self.kind == "cnn":
            return nn.Sequential(
                nn.Conv2d(1, 16, 8, stride=2, padding=3),  # 28 -> 14
                nn.Tanh(),
                nn.MaxPool2d(2, stride=1),  # 14 -> 13
                nn.Conv2d(16, 32, 4, stride=2),  # 13 -> 5
                nn.Tanh(),
                nn.MaxPool2d(2, stride=1),  # 5 -> 4
                nn.Flatten(),
                nn.Linear(32 * 4 * 4, self.hidden),
                nn.Tanh(),
                nn.Linear(self.hidden, self.classes),
            )
        return nn.Sequential(nn.Linear(self.in_features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.classes))

    def fixed_features(self, model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
        """``model`` (built by :meth:`build`) as its data-independent feature extractor and the part to train.

        The extractor (``None`` when the model has none) has no parameters and never sees labels, so a trainer
        may compute its output once per record and train the rest on it: same model, same privacy, less work.
        """
        if self.kind == "scatternet":
            features, head = model.children()
            return features, head
        return None, model


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
