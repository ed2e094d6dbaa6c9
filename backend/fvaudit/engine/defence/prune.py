"""The one pruning path (SPEC §5): prune a copy of a model by a method, fine-tune it with the
pruned weights held at zero, and measure and record what it cost.

The service's ``prune`` job, the CLI's ``fvaudit prune`` and every point of a sweep (the
engine's :mod:`fvaudit.engine.defence.sweep` and the service's ``sweep`` job, which creates
``prune`` jobs) all call :func:`prune`, so the method dispatch, the channel count, the
CLIP-δ ranking, the fine-tune schedule, the training subset and the record are written once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from fvaudit.engine.attack.run import evaluate_accuracy
from fvaudit.engine.data.images import ImageSet, stratified_ids, subset
from fvaudit.engine.defence.defaults import (METHOD_LABELS, METHODS, PRUNE_DEFAULTS, THESIS_SCHEDULE, finetune_phases,
                                             n_channels, top_channels)
from fvaudit.engine.defence.finetune import finetune
from fvaudit.engine.defence.masks import PruneReport
from fvaudit.engine.defence.methods import norm_prune, oto_prune, vulnerability_prune
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.models.sources import clone_model
from fvaudit.engine.models.surgery import PruneError
from fvaudit.engine.progress import NullReporter, Reporter, check_cancel


@dataclass(frozen=True)
class FinetuneSettings:
    """The fine-tune after pruning (and OTO's HESSO training): defaults from
    :data:`~fvaudit.engine.defence.defaults.PRUNE_DEFAULTS`."""

    steps: int = PRUNE_DEFAULTS["finetune_steps"]
    lr: float = PRUNE_DEFAULTS["lr"]
    lr_drop: float = PRUNE_DEFAULTS["lr_drop"]
    batch_size: int = PRUNE_DEFAULTS["batch_size"]
    oto_steps: int = PRUNE_DEFAULTS["oto_steps"]
    #: fine-tune on a seeded class-stratified sample of this many training images (None = all)
    train_limit: int | None = PRUNE_DEFAULTS["train_limit"]
    seed: int = PRUNE_DEFAULTS["seed"]

    def phases(self) -> list[tuple[int, float]]:
        return finetune_phases(self.steps, self.lr, self.lr_drop)

    def training_set(self, train: ImageSet) -> ImageSet:
        """``train``, or its stratified sample of ``train_limit`` images (the rule of every limited set)."""
        if self.train_limit is None or self.train_limit >= len(train):
            return train
        return subset(train, stratified_ids(np.asarray(train.labels), int(self.train_limit), self.seed))


@dataclass
class Pruned:
    """A pruned, fine-tuned copy of a model and what it cost (``record``: JSON, the sweep
    tables' and the model row's ``prune`` field)."""

    model: LoadedModel
    report: PruneReport
    channels: list[int] | None
    record: dict = field(default_factory=dict)


def resolve_channels(model: LoadedModel, layer: str | None, rate: float | None, channels: Sequence[int] | None,
                     clip_delta: Mapping[int, float | None] | None) -> tuple[list[int], float]:
    """Vulnerability pruning's channels of ``layer``: the given ones, or the ``rate`` share
    with the highest CLIP-δ of a push-down of that layer. Returns (channels, rate)."""
    if not layer:
        raise PruneError("layer: vulnerability pruning needs the layer whose channels are removed")
    units = model.layer(layer).units
    if channels is not None:
        chans = [int(c) for c in channels]
        return chans, (rate if rate is not None else len(chans) / units)
    if rate is None:
        raise PruneError("rate: give a fraction strictly between 0 and 1 (or the channels)")
    if clip_delta is None or not any(v is not None for v in clip_delta.values()):
        raise PruneError(f"vulnerability pruning of {layer} needs the per-unit CLIP-δ of a push-down run")
    return top_channels(clip_delta, units, n_channels(rate, units)), rate


def prune(model: LoadedModel, method: str, rate: float | None, train: ImageSet, val: ImageSet, *,
          layer: str | None = None, channels: Sequence[int] | None = None,
          clip_delta: Mapping[int, float | None] | None = None, settings: FinetuneSettings = FinetuneSettings(),
          device: str = "cpu", reporter: Reporter | None = None) -> Pruned:
    """Prune a copy of ``model`` (``model`` stays as it is), fine-tune it and measure it.

    ``rate`` means, by method: norm, the fraction of conv/linear weights zeroed; oto_*, the
    target group sparsity; vulnerability, the fraction of ``layer``'s channels removed (the
    top ones by ``clip_delta``), unless ``channels`` names them. Accuracy on all of ``val``
    is measured before pruning, after pruning and after fine-tuning.
    """
    reporter = reporter or NullReporter()
    if method not in METHODS:
        raise PruneError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")
    if method == "vulnerability":
        channels, rate = resolve_channels(model, layer, rate, channels, clip_delta)
    elif rate is None:
        raise PruneError("rate: give a fraction strictly between 0 and 1")
    train = settings.training_set(train)
    val_ids = np.arange(len(val))

    def accuracy(of: LoadedModel, stage: str) -> float:
        reporter.stage(stage)
        check_cancel(reporter)
        return evaluate_accuracy(of, val, val_ids, device=device)

    acc_parent = accuracy(model, "accuracy of the parent")
    what = f"{len(channels)} channels" if channels is not None and method == "vulnerability" else f"{100 * rate:g}%"
    reporter.stage(f"prune: {METHOD_LABELS[method]} {what}")
    pm = clone_model(model)
    if method == "norm":
        report = norm_prune(pm, rate)
    elif method in ("oto_filter", "oto_weight"):
        report = oto_prune(pm, train, rate, mode=method.removeprefix("oto_"), steps=settings.oto_steps,
                           lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed, device=device,
                           reporter=reporter)
    else:
        report = vulnerability_prune(pm, layer, channels)
    acc_pruned = accuracy(pm, "accuracy after pruning")
    phases = settings.phases()
    history = finetune(pm, train, phases, batch_size=settings.batch_size, seed=settings.seed, device=device,
                       reporter=reporter) if phases else []
    acc_ft = accuracy(pm, "accuracy after fine-tuning")
    record = {"method": method, "rate": rate, "layer": layer if method == "vulnerability" else None,
              "channels": list(channels) if method == "vulnerability" else None,
              "report": report.to_json(), "weight_rate": report.weight_rate, "filter_rate": report.filter_rate,
              "finetune": {"phases": [[s, lr] for s, lr in phases], "steps": settings.steps,
                           "batch_size": settings.batch_size, "train_images": len(train),
                           "train_limit": settings.train_limit, "seed": settings.seed, "optimizer": "Adam",
                           "loss": "cross-entropy on the labels", "thesis": THESIS_SCHEDULE,
                           "final_loss": history[-1]["loss"] if history else None},
              "parent_acc": acc_parent, "pruned_acc": acc_pruned, "finetuned_acc": acc_ft,
              "acc_n_images": len(val_ids)}
    return Pruned(pm, report, record["channels"], record)


def summary(record: dict, label: str) -> str:
    """One log line for a pruning record."""
    return (f"{label}: weights pruned {100 * record['weight_rate']:.1f}%, filters {100 * record['filter_rate']:.1f}%; "
            f"accuracy {record['parent_acc']:.2f} → {record['pruned_acc']:.2f} (pruned) → "
            f"{record['finetuned_acc']:.2f} (fine-tuned, {record['acc_n_images']} images)")

