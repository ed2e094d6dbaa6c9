"""What a synthetic visualization is asked for (SPEC §4): the objective, the steps, the
image size and regularisers (:class:`SynthesisConfig`), and what it gives back."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Objective names a :class:`SynthesisConfig` accepts (SPEC §4).
OBJECTIVES = ("score", "channel_mean")


@dataclass
class SynthesisConfig:
    steps: int = 256
    lr: float = 0.05
    batch_units: int = 32         # images (units × seeds) optimised together in one batch
    seed: int = 0
    decay: float = 1.0            # Fourier spectrum scaled by 1 / f^decay
    jitter: float = 0.06          # max translation, fraction of the image size
    scale: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0
    tv_weight: float = 0.0        # λ of the total-variation penalty
    objective: str = "score"      # "score": a_j of SPEC §1; "channel_mean": mean of the channel (SPEC §4)
    device: str = "cpu"
    channels_last: bool = True    # feed the model channels_last inputs (faster oneDNN convs and pools, measured)
    fold_bn: bool = True          # fold eval BatchNorms into their convs for the render (same outputs, fewer ops)
    own_channel_only: bool = True  # compute only each image's own channel of the objective's conv layer
    #: on a CPU, at most this many pixels per batch (0: no cap). Measured with
    #: EfficientNet-Lite0 at 224 px on 1 thread: 27–39 ms per image-step with 1–8 images
    #: per batch, 42–51 ms with 16 (large batches overflow the caches, and a batch of a
    #: whole layer ran 1.5× slower per image than one unit at a time); the demo CNN's
    #: 28 px images are far below the cap. Accelerators keep ``batch_units``.
    cpu_pixels_per_batch: int = 4 * 224 * 224

    def validate(self) -> None:
        for name in ("steps", "batch_units"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not isinstance(self.cpu_pixels_per_batch, int) or self.cpu_pixels_per_batch < 0:
            raise ValueError(f"cpu_pixels_per_batch: must be an integer ≥ 0, got {self.cpu_pixels_per_batch!r}")
        if self.tv_weight < 0:
            raise ValueError(f"tv_weight: must be ≥ 0, got {self.tv_weight}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale: must be 0 < low ≤ high, got {self.scale}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: must be score or channel_mean, got {self.objective!r}")


@dataclass
class SynthesisResult:
    """Synthetic images of some units of one layer, one seed (SPEC §4: each image records
    its objective, seed, steps and size)."""

    layer: str
    units: list[int]
    images: np.ndarray            # [U, H, W, C] uint8
    activation: np.ndarray        # [U] objective value of its own image, untransformed, at the end
    activation_start: np.ndarray  # [U] the same for the starting image
    seconds: float                # wall time of the render; a batched synthesize_many splits it over seeds
    config: dict = field(default_factory=dict)
    objective: str = "score"
    seed: int = 0
    steps: int = 0
    size: tuple[int, int] = (0, 0)  # (H, W) of the images
