"""The scattering transform: its structure, its fast paths against direct computation, and the scatternet model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from privet.errors import UsageError
from privet.models.reference import ModelSpec, load_weights, save_weights
from privet.models.scatter import ScatterFeatures, Scattering2D, _alias_product, _subsample, scatter_channels

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scattering() -> Scattering2D:
    return Scattering2D((28, 28), 2, 8)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=generator)


def test_shape_and_channel_count(scattering: Scattering2D) -> None:
    assert scatter_channels(2, 8) == 81 and scatter_channels(3, 8) == 1 + 24 + 192 and scatter_channels(1, 4) == 5
    assert scattering(_images(3)).shape == (3, 81, 7, 7)
    assert scattering(_images(2)[:, 0]).shape == (2, 81, 7, 7)  # (N, H, W) is taken as one channel
    deeper = Scattering2D((32, 32), 3, 4)
    assert deeper(torch.rand(2, 3, 32, 32)).shape == (2, 3 * scatter_channels(3, 4), 4, 4)


def test_wavelets_ignore_constants_and_the_low_pass_keeps_them(scattering: Scattering2D) -> None:
    out = scattering(torch.full((1, 1, 28, 28), 0.7))
    assert torch.allclose(out[0, 0], torch.full((7, 7), 0.7), atol=1e-5)
    assert float(out[0, 1:].abs().max()) < 1e-5  # every wavelet has zero mean


def test_coefficients_are_stable_to_small_translations(scattering: Scattering2D) -> None:
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 8:20, 10:14] = 1.0  # a bar, away from the border
    shifted = torch.roll(image, shifts=1, dims=-1)
    base, moved = scattering(image), scattering(shifted)
    assert float((base - moved).norm() / base.norm()) < 0.25
    different = torch.zeros_like(image)
    different[0, 0, 12:16, 6:22] = 1.0  # the same bar turned 90 degrees
    assert float((base - scattering(different)).norm() / base.norm()) > 0.5


def test_order_one_equals_direct_circular_convolution(scattering: Scattering2D) -> None:
    """|x * psi| * phi computed with explicit spatial filters and circular convolution, subsampled and cropped."""
    image = _images(1, seed=3)
    padded = F.pad(image, (scattering.pad,) * 4, mode="reflect")[0, 0].double()
    size = scattering.padded

    def circular(signal: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        kernel = torch.fft.ifft2(spectrum.double())  # the filter in space
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        out = torch.zeros(size, size, dtype=torch.complex128)
        for dr in range(size):  # sum over the kernel's support, wrapping around
            for dc in range(size):
                out += kernel[dr, dc] * signal[(rows - dr) % size, (cols - dc) % size]
        return out

    angle = 5  # scale 0, angle 5
    u1 = circular(padded.to(torch.complex128), scattering.psi0[angle]).abs()
    low = circular(u1.to(torch.complex128), scattering.phi0).real[::4, ::4][1:-1, 1:-1]
    assert torch.allclose(scattering(image)[0, 1 + angle].double(), low, rtol=1e-4, atol=1e-6)


def test_aliased_products_equal_subsampled_products() -> None:
    generator = torch.Generator().manual_seed(1)
    spectra = torch.randn(3, 4, 12, 12, dtype=torch.complex64, generator=generator)
    filters = torch.randn(5, 12, 12, generator=generator)
    direct = _subsample(spectra[:, :, None] * filters, 2)
    assert direct.shape == (3, 4, 5, 6, 6)
    assert torch.allclose(_alias_product(spectra, filters, 2), direct, atol=1e-5)
    assert torch.allclose(_subsample(spectra, 1), spectra)
    # Subsampling in frequency is subsampling in space.
    signal = torch.randn(2, 12, 12, generator=generator)
    assert torch.allclose(torch.fft.ifft2(_subsample(torch.fft.fft2(signal), 3)).real, signal[:, ::3, ::3], atol=1e-5)


def test_order_two_close_to_full_resolution_computation(scattering: Scattering2D) -> None:
    """Taking the second modulus at half resolution (as Kymatio does) changes the coefficients only slightly."""
    image = _images(2, seed=5)
    padded = F.pad(image, (scattering.pad,) * 4, mode="reflect")[:, 0]
    spectrum = torch.fft.fft2(padded)
    u1 = torch.fft.ifft2(spectrum[:, None] * scattering.psi0[:8]).abs()
    u2 = torch.fft.ifft2(torch.fft.fft2(u1)[:, :, None] * scattering.psi0[8:16]).abs()
    full = torch.fft.ifft2(torch.fft.fft2(u2) * scattering.phi0).real[..., ::4, ::4][..., 1:-1, 1:-1].flatten(1, 2)
    fast = scattering(image)[:, 17:]
    assert float((fast - full).norm() / full.norm()) < 0.05


def test_bad_shapes_are_usage_errors(scattering: Scattering2D) -> None:
    with pytest.raises(UsageError, match="expects"):
        scattering(torch.rand(2, 1, 27, 27))
    for args in (((28, 30), 2, 8), ((30, 30), 2, 8), ((28, 28), 0, 8)):
        with pytest.raises(UsageError):
            Scattering2D(*args)
    with pytest.raises(UsageError, match="groups"):
        ScatterFeatures(groups=10)


def test_scatternet_trains_only_its_head_and_survives_save_and_load(tmp_path: Path) -> None:
    spec = ModelSpec("scatternet", 784, 10)
    model = spec.build()
    features, head = spec.fixed_features(model)
    assert features is not None and not list(features.parameters())
    assert set(model.state_dict()) == {"1.weight", "1.bias"} and head.weight.shape == (10, 81 * 49)
    normalised = features(_images(4))
    assert normalised.shape == (4, 3969)
    groups = normalised.reshape(4, 27, -1)  # per-image group normalisation: no data-set statistics
    assert torch.allclose(groups.mean(-1), torch.zeros(4, 27), atol=1e-4)
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    loaded = load_weights(spec, path.read_bytes())
    images = _images(3)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    plain = ModelSpec("mlp", 784, 10, 8)
    assert plain.fixed_features(built := plain.build()) == (None, built)
    with pytest.raises(UsageError, match="scatternet takes"):
        ModelSpec("scatternet", 30, 2)
