"""Image parameterisations (Olah et al. 2017): a scaled Fourier basis (spectrum scaled by
1/f^decay) and, for RGB models, a decorrelated colour space, squashed to valid pixels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

#: Square root of the ImageNet colour correlation matrix (Lucid's constant): maps
#: decorrelated colour channels to RGB so that each parameter moves a natural colour axis.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def _generators(gens: torch.Generator | Sequence[torch.Generator], batch: int) -> list[torch.Generator] | None:
    if isinstance(gens, torch.Generator):
        return None
    gens = list(gens)
    if len(gens) != batch:
        raise ValueError(f"expected {batch} generators (one per image), got {len(gens)}")
    return gens


class FourierImage(torch.nn.Module):
    """A batch of images parameterised by a scaled spectrum (and decorrelated colour).

    ``generator``: one generator for the whole batch, or one per image (then image ``b``'s
    starting noise depends only on ``generator[b]``).
    """

    def __init__(self, batch: int, channels: int, h: int, w: int, decay: float,
                 generator: torch.Generator | Sequence[torch.Generator], sd: float = 0.01,
                 decorrelate: bool = True):
        super().__init__()
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        # the 1/4 output scale of Lucid is folded into the spectrum scale
        self.register_buffer("scale", (1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay) / 4.0)
        shape = (channels, h, w // 2 + 1, 2)
        per_image = _generators(generator, batch)
        if per_image is None:
            spec = torch.randn((batch, *shape), generator=generator) * sd
        else:
            spec = torch.stack([torch.randn(shape, generator=g) for g in per_image]) * sd
        self.spectrum = torch.nn.Parameter(spec)
        self.h, self.w, self.channels = h, w, channels
        color = None
        if channels == 3 and decorrelate:
            c = COLOR_CORRELATION_SVD_SQRT
            color = c / c.norm(dim=0).max()
        self.register_buffer("color", color)

    def forward(self) -> torch.Tensor:
        return self.pixels(self.spectrum)

    def pixels(self, spectrum: torch.Tensor) -> torch.Tensor:
        """``η(q)``: the images of any spectra ``[B, C, H, W//2+1, 2]`` under this
        parameterisation (the render's own map; Gradient Slingshots differentiates through it)."""
        spec = torch.view_as_complex(spectrum.contiguous()) * self.scale
        x = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho")
        if self.color is not None:
            x = torch.einsum("bchw,dc->bdhw", x, self.color)
        return torch.sigmoid(x)

    def inverse(self, images: torch.Tensor, margin: float = 0.005) -> torch.Tensor:
        """``η⁻¹``: the spectra ``[B, C, H, W//2+1, 2]`` whose :meth:`pixels` are ``images``
        ``[B, C, H, W]`` (values in [0, 1]) squeezed into ``[margin, 1 − margin]``.

        Why the squeeze: the sigmoid reaches 0 and 1 only at ±∞, so a black or white pixel has no
        finite parameter (SPEC §8.1 divides by 1.01 for the white end; the black end needs the
        margin too). ``pixels(inverse(x))`` equals the squeezed ``x`` to float precision.
        """
        x = images.to(self.scale.dtype).clamp(0, 1) * (1 - 2 * margin) + margin
        z = torch.logit(x)
        if self.color is not None:
            z = torch.einsum("bdhw,cd->bchw", z, torch.linalg.inv(self.color))
        spec = torch.fft.rfft2(z, norm="ortho") / self.scale
        return torch.view_as_real(spec).contiguous()

    def live_mask(self) -> torch.Tensor:
        """``[C, H, W//2+1, 2]`` bool: the spectrum entries the image depends on. The imaginary
        parts of the self-conjugate frequencies (DC and, for even sizes, the Nyquist rows and
        columns) never reach the pixels (``irfft2`` drops them): a loss on the gradient there
        could never be met."""
        probe = torch.zeros((1, self.channels, self.h, self.w // 2 + 1, 2), requires_grad=True)
        with torch.enable_grad():
            spec = torch.view_as_complex(probe) * self.scale
            x = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho")
            g = torch.Generator().manual_seed(0)
            (x * torch.randn(x.shape, generator=g)).sum().backward()
        return (probe.grad[0].abs() > 0)


@dataclass(frozen=True)
class FourierParam:
    """Scaled-Fourier, decorrelated-colour parameterisation (Olah et al. 2017), as a value."""

    decay: float = 1.0
    sd: float = 0.01
    decorrelate: bool = True

    def build(self, shape: tuple[int, int, int], generators: Sequence[torch.Generator]) -> FourierImage:
        c, h, w = shape
        return FourierImage(len(generators), c, h, w, self.decay, generators, self.sd, self.decorrelate)
