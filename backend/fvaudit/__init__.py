"""fvaudit: audit the feature visualizations of image classifiers.

The torchvision guard runs first so that ``import fvaudit`` makes torchvision importable
on a CPU-only torch next to a CUDA torchvision wheel (see ``fvaudit._tv_guard``).
"""
from fvaudit import _tv_guard  # noqa: F401  (must run before any torchvision import)

__version__ = "0.1.0"
