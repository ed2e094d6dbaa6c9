"""Transformation robustness (Olah et al. 2017): every step sees a randomly jittered, scaled and
rotated copy of each image, drawn up front per image from its own seed."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

@dataclass(frozen=True)
class RandomAffine:
    """Jitter + scale + rotation in one resampling; borders padded with mid-grey.

    ``draw`` takes every random number a render needs for one image up front (``[steps, 4]``
    uniforms), so the per-step work is a few tensor ops on the whole batch.
    """

    jitter: float = 0.06
    scale: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0

    def draw(self, g: torch.Generator, steps: int) -> torch.Tensor:
        return torch.rand((steps, 4), generator=g)

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = u.to(x)
        ang = (u[:, 0] * 2 - 1) * math.radians(self.rotate_deg)
        sc = self.scale[0] + u[:, 1] * (self.scale[1] - self.scale[0])
        tr = (u[:, 2:] * 2 - 1) * self.jitter * 2  # grid coordinates span [-1, 1]
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.stack([torch.stack([cos, -sin, tr[:, 0]], 1), torch.stack([sin, cos, tr[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def image_seed(seed: int, unit: int) -> int:
    """The generator seed of one image: a function of (seed, unit) only (SPEC §4 pairs)."""
    return int(np.random.SeedSequence([int(seed), int(unit)]).generate_state(1, dtype=np.uint64)[0] >> 1)
