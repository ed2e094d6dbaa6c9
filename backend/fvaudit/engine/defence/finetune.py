"""Fine-tuning a pruned model on the labels (SPEC §5), with its masks holding the pruned
weights at zero; the training batches of one step are seeded by (seed, step), like the
attacks', and come through the same input pipeline (:class:`~fvaudit.engine.data.pipeline.StepFeed`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from fvaudit.engine.data.pipeline import Batches, StepFeed
from fvaudit.engine.models.surgery import PruneError, module_of
from fvaudit.engine.progress import Cancelled, NullReporter


class StepBatches:
    """The labelled training batch of every step: ``default_rng([seed, step])`` picks it
    (so a step's batch never depends on the steps before it, like the attacks'), decoded
    ahead by the input pipeline (:class:`~fvaudit.engine.data.pipeline.StepFeed`); a set
    that fits in memory is decoded once. Iterating gives ``(x, y)`` for steps 0..steps-1."""

    def __init__(self, model: Any, train_set: Any, steps: int, seed: int, batch_size: int,
                 workers: int | None = None):
        self.ids = np.asarray(train_set.ids, dtype=np.int64)
        if len(self.ids) == 0:
            raise PruneError("train_set: it is empty")
        self.labels = torch.as_tensor(np.asarray(train_set.labels), dtype=torch.long)
        self.size = min(int(batch_size), len(self.ids))
        self.seed, self.steps = int(seed), int(steps)
        self.source = Batches(train_set, self.ids, model, workers=workers)

    def draw(self, step: int) -> tuple[np.ndarray, None]:
        rng = np.random.default_rng([self.seed, step])
        return np.sort(rng.choice(len(self.ids), size=self.size, replace=False)), None

    def __iter__(self):
        try:
            for _step, (pos, x), _ in StepFeed(self.draw, self.source, None, 0, self.steps):
                yield x, self.labels[torch.as_tensor(self.ids[pos])]
        finally:
            self.source.close()


def finetune(model: Any, train_set: Any, phases: Iterable[tuple[int, float]], batch_size: int = 64,
             seed: int = 0, device: str = "cpu", reporter: Any = None) -> list[dict]:
    """Fine-tune a pruned model on the labels (cross-entropy, Adam), in place (SPEC §5).

    ``phases`` is the learning-rate schedule as ``(steps, lr)`` pairs: the thesis' is 10
    epochs at 1e-5 then 10 at 1e-6, scaled down for small models by the caller, who records
    it. Attached masks hold pruned weights at zero after every step. Batches come from
    ``numpy.random.default_rng([seed, step])`` like the attacks'. Returns the per-step
    history (step, lr, loss). ``model`` is a LoadedModel (its preprocessing reads the set).
    """
    phases = [(int(s), float(lr)) for s, lr in phases]
    if not phases:
        raise PruneError("finetune phases: at least one (steps, lr) phase is required")
    for i, (s, lr) in enumerate(phases):
        if s <= 0 or not (math.isfinite(lr) and lr > 0):
            raise PruneError(f"finetune phases[{i}]: steps must be > 0 and lr > 0, got ({s}, {lr})")
    reporter = reporter or NullReporter()
    module = module_of(model).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=phases[0][1])
    total = sum(s for s, _ in phases)
    batches = iter(StepBatches(model, train_set, total, seed, batch_size))
    history: list[dict] = []
    reporter.stage("fine-tune", total=total)
    was_training = module.training
    module.train()
    try:
        step = 0
        for steps, lr in phases:
            for g in opt.param_groups:
                g["lr"] = lr
            for _ in range(steps):
                if reporter.cancelled():
                    raise Cancelled(f"at fine-tune step {step}")
                x, y = next(batches)
                loss = nn.functional.cross_entropy(module(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                history.append({"step": step, "lr": lr, "loss": float(loss.detach())})
                reporter.advance(step, total, loss=history[-1]["loss"])
    finally:
        batches.close()
        module.train(was_training)
    return history
