"""A fixed wavelet feature extractor for small images: the 2-D scattering transform (Mallat 2012; Bruna and
Mallat 2013), as Tramer and Boneh (2021, "Differentially private learning needs better features") used it in
front of a linear model trained with DP-SGD.

The transform cascades complex Morlet wavelet convolutions and moduli and ends with a Gaussian low-pass and
subsampling by ``2**J``: order 0 is the low-passed image, order 1 ``|x * psi_{j1,t1}| * phi``, order 2
``||x * psi_{j1,t1}| * psi_{j2,t2}| * phi`` for ``j2 > j1``. With ``J`` scales and ``L`` angles a grey-scale image
gives ``1 + J L + L**2 J (J - 1) / 2`` channels (81 for ``J=2, L=8``) of ``H / 2**J x W / 2**J`` (7 x 7 for 28 x 28).

Why it matters for privacy: the filters are fixed functions of the image size, never fitted to data, so the
features cost no privacy budget, and DP-SGD only has to learn a linear map on top; with fewer parameters to
noise, the same epsilon buys more accuracy than an end-to-end CNN.

The filter bank follows the parameters of Kymatio's Scattering2D (sigma ``0.8 * 2**j``, centre frequency
``3 pi / 4 / 2**j``, slant ``4 / L``; low-pass sigma ``0.8 * 2**(J-1)``; reflect padding to a multiple of
``2**J`` with a margin, and the margin cropped from the output). Convolutions are products in the Fourier
domain; each modulus is taken at the coarsest resolution its signal's band allows (subsampling by aliasing the
spectrum), as Kymatio does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from privet.errors import UsageError

__all__ = ["ScatterFeatures", "Scattering2D", "scatter_channels"]

_SIGMA0 = 0.8
_XI0 = 3.0 * math.pi / 4.0


def scatter_channels(j: int, angles: int) -> int:
    """Output channels per input channel of a scattering transform with ``j`` scales and ``angles`` angles."""
    return 1 + j * angles + angles * angles * j * (j - 1) // 2


def _gabor(size: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A 2-D Gabor filter on a ``size x size`` periodic grid (periodised over neighbouring copies)."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    curvature = rotation @ np.diag([1.0, slant * slant]) @ rotation.T / (2 * sigma * sigma)
    out = np.zeros((size, size), dtype=np.complex128)
    for ex in range(-2, 3):
        for ey in range(-2, 3):
            xx, yy = np.mgrid[ex * size : (ex + 1) * size, ey * size : (ey + 1) * size].astype(np.float64)
            arg = -(
                curvature[0, 0] * xx * xx + (curvature[0, 1] + curvature[1, 0]) * xx * yy + curvature[1, 1] * yy * yy
            ) + 1j * xi * (xx * math.cos(theta) + yy * math.sin(theta))
            out += np.exp(arg)
    return out / (2 * math.pi * sigma * sigma / slant)


def _morlet(size: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A Gabor filter minus the Gaussian that makes its mean zero (a wavelet must not respond to constants)."""
    wave = _gabor(size, sigma, theta, xi, slant)
    envelope = _gabor(size, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


class Scattering2D(nn.Module):
    """Scattering coefficients of ``(N, C, H, W)`` images (or ``(N, H, W)``): ``(N, C * K, H / 2**J, W / 2**J)``.

    It has no parameters (its filters are buffers), so DP-SGD never touches it and it costs no privacy.
    """

    def __init__(self, shape: tuple[int, int] = (28, 28), j: int = 2, angles: int = 8) -> None:
        super().__init__()
        height, width = shape
        if j < 1 or angles < 1:
            raise UsageError(f"scattering needs j >= 1 and angles >= 1, got j={j}, angles={angles}")
        step = 2**j
        if height != width or height % step:
            raise UsageError(f"scattering takes square images whose side divides by 2**j={step}, got {shape}")
        self.side, self.j, self.angles = height, j, angles
        # Reflect-pad to a multiple of 2**j with one output pixel of margin on each side, cropped at the end:
        # the periodic convolutions then never wrap one border onto the other.
        self.padded = (height + step) // step * step + step
        self.pad = (self.padded - height) // 2
        size = self.padded
        wavelets = [
            _morlet(size, _SIGMA0 * 2**scale, (angles // 2 - 1 - a) * math.pi / angles, _XI0 / 2**scale, 4.0 / angles)
            for scale in range(j)
            for a in range(angles)
        ]
        # The Fourier transforms of these filters are real (they are symmetric about the origin); keeping the
        # real part makes every product a real-by-complex multiply.
        psi = torch.tensor(np.stack([np.fft.fft2(w).real for w in wavelets]), dtype=torch.float32)
        phi = torch.tensor(np.fft.fft2(_gabor(size, _SIGMA0 * 2 ** (j - 1), 0.0, 0.0, 1.0)).real, dtype=torch.float32)
        # Each filter is also kept at every coarser resolution a signal reaches (its spectrum periodised), so
        # that signals are convolved at the resolution they were subsampled to, as Kymatio does.
        for res in range(j):
            self.register_buffer(f"psi{res}", _periodise(psi, 2**res), persistent=False)
        for res in range(j):
            self.register_buffer(f"phi{res}", _periodise(phi, 2**res), persistent=False)

    def _filters(self, kind: str, res: int) -> Tensor:
        return getattr(self, f"{kind}{res}")

    def _low(self, spectrum: Tensor, res: int) -> Tensor:
        """Low-pass a signal held at resolution ``res``, subsample to ``2**j`` and crop the margin."""
        out = torch.fft.ifft2(_subsample(spectrum * self._filters("phi", res), 2 ** (self.j - res))).real
        margin = self.pad // 2**self.j
        return out[..., margin : out.shape[-2] - margin, margin : out.shape[-1] - margin]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[-2:] != (self.side, self.side):
            raise UsageError(f"scattering expects (N, C, {self.side}, {self.side}) images, got {tuple(x.shape)}")
        n, c = x.shape[:2]
        x = F.pad(x.reshape(n * c, 1, self.side, self.side).float(), (self.pad,) * 4, mode="reflect")[:, 0]
        spectrum = torch.fft.fft2(x)  # (B, P, P)
        angles = self.angles
        order0: list[Tensor] = [self._low(spectrum, 0)[:, None]]
        order1: list[Tensor] = []
        order2: list[Tensor] = []
        for j1 in range(self.j):
            band = slice(j1 * angles, (j1 + 1) * angles)
            # |x * psi_j1| is band-limited enough to live at resolution j1.
            u1 = torch.fft.ifft2(_subsample(spectrum[:, None] * self.psi0[band], 2**j1)).abs()  # (B, L, P/2^j1, .)
            u1_spectrum = torch.fft.fft2(u1)
            order1.append(self._low(u1_spectrum, j1))
            for j2 in range(j1 + 1, self.j):
                second = self._filters("psi", j1)[j2 * angles : (j2 + 1) * angles]  # (L, P/2^j1, P/2^j1)
                u2 = torch.fft.ifft2(_alias_product(u1_spectrum, second, 2 ** (j2 - j1))).abs()  # (B, L, L, ., .)
                order2.append(self._low(torch.fft.fft2(u2), j2).flatten(1, 2))
        out = torch.cat(order0 + order1 + order2, dim=1)
        return out.reshape(n, c * out.shape[1], *out.shape[-2:])


def _subsample(spectrum: Tensor, factor: int) -> Tensor:
    """The spectrum of the signal subsampled by ``factor`` in each direction (the mean of its aliased blocks)."""
    if factor == 1:
        return spectrum
    *lead, rows, cols = spectrum.shape
    blocks = spectrum.reshape(*lead, factor, rows // factor, factor, cols // factor)
    return blocks.mean(dim=(-4, -2))


def _alias_product(spectra: Tensor, filters: Tensor, factor: int) -> Tensor:
    """``_subsample(spectra[:, :, None] * filters, factor)`` without forming the full-resolution products: the
    mean over aliased blocks is a contraction over the block index, done as one matrix product per frequency.
    """
    batch, channels, rows, cols = spectra.shape
    count, small = filters.shape[0], (rows // factor, cols // factor)
    blocks = factor * factor
    a = spectra.reshape(batch, channels, factor, small[0], factor, small[1]).permute(0, 1, 3, 5, 2, 4)
    a = a.reshape(batch * channels, small[0] * small[1], 1, blocks)
    f = filters.reshape(count, factor, small[0], factor, small[1]).permute(2, 4, 1, 3, 0)
    f = f.reshape(small[0] * small[1], blocks, count).to(spectra.dtype) / blocks
    out = torch.matmul(a, f)  # (B C, pixels, 1, count)
    return out.reshape(batch, channels, small[0], small[1], count).permute(0, 1, 4, 2, 3)


def _periodise(spectrum: Tensor, factor: int) -> Tensor:
    """A filter's spectrum at a resolution ``factor`` times coarser: its aliased blocks summed."""
    return _subsample(spectrum, factor) * factor * factor


class ScatterFeatures(nn.Module):
    """Scattering, then per-image group normalisation (no learned scale), flattened: fixed features for a linear
    head. Normalising each image by itself (not by data-set statistics) keeps the features free of privacy cost.
    """

    def __init__(self, side: int = 28, j: int = 2, angles: int = 8, groups: int = 27) -> None:
        super().__init__()
        self.scattering = Scattering2D((side, side), j, angles)
        channels = scatter_channels(j, angles)
        if channels % groups:
            raise UsageError(f"{groups} groups do not divide the {channels} scattering channels")
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.out_features = channels * (side // 2**j) ** 2

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.scattering(x)).flatten(1)
