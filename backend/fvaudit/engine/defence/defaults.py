"""The one set of pruning names and defaults (SPEC §5), shared by the engine's
:func:`~fvaudit.engine.defence.prune.prune`, the CLI (``fvaudit prune`` / ``sweep``), the
service's ``prune`` and ``sweep`` jobs and, through ``GET /job-kinds``, the dashboard.

Torch-free on purpose: the API's job specs import it without loading torch.
"""
from __future__ import annotations

import math
from typing import Mapping

#: the pruning methods, in the order tables and forms list them
METHODS = ("norm", "oto_filter", "oto_weight", "vulnerability")
#: how every table, log line and page names a method
METHOD_LABELS = {"norm": "norm", "oto_filter": "OTO filter", "oto_weight": "OTO weight",
                 "vulnerability": "vulnerability"}
#: the thesis' fine-tune, which the scaled schedule below stands in for (recorded with each result)
THESIS_SCHEDULE = "Adam, lr 1e-5 for 10 epochs then 1e-6 for 10 epochs (thesis §4)"

#: the fine-tune after pruning and OTO's HESSO training: the thesis' two-phase schedule scaled
#: to ``finetune_steps`` (two equal phases, the second at lr · lr_drop)
PRUNE_DEFAULTS: Mapping[str, float | int | None] = {
    "finetune_steps": 200,   # optimizer steps in all (0 = no fine-tune)
    "lr": 1e-4,              # Adam learning rate of the first phase (and of HESSO)
    "lr_drop": 0.1,          # the second phase's lr is lr · lr_drop (thesis: 0.1)
    "batch_size": 64,
    "oto_steps": 200,        # HESSO training steps that reach the target group sparsity
    "train_limit": None,     # fine-tune (and HESSO) on a seeded class-stratified sample of N images
    "seed": 0,
}


def finetune_phases(steps: int, lr: float, lr_drop: float) -> list[tuple[int, float]]:
    """The thesis' fine-tune schedule scaled to ``steps``: two equal phases, the second at
    lr · lr_drop (thesis: 10 epochs at 1e-5, then 10 at 1e-6); empty phases dropped."""
    first = (steps + 1) // 2
    return [(s, r) for s, r in ((first, lr), (steps - first, float(f"{lr * lr_drop:.6g}"))) if s > 0]


def n_channels(rate: float, units: int) -> int:
    """Channels removed for a fraction of a layer: round half up, as the thesis' 32…224 of 256."""
    return int(math.floor(rate * units + 0.5))


def label(method: str | None, rate: float | None) -> str:
    """A sweep point's name: ``unpruned``, ``OTO filter 12.5%``."""
    return "unpruned" if method is None else f"{METHOD_LABELS[method]} {100 * rate:g}%"


def top_channels(clip_delta: Mapping[int, float | None], units: int, n: int) -> list[int]:
    """The ``n`` channels with the highest CLIP-δ (ties: lower index; unmeasured ones, e.g.
    dead units, after every measured one): what vulnerability pruning removes."""
    ranked = sorted(range(units), key=lambda u: (clip_delta.get(u) is None, -(clip_delta.get(u) or 0.0), u))
    return sorted(ranked[:n])
