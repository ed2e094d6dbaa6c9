"""Push-down / push-up attacks on dataset-example visualizations (SPEC §2).

Fine-tune θ from θ_init with ``L = α·L_A + (1−α)·L_M``:

* ``L_M``: distillation from the frozen θ_init (softmax, temperature 1) on a training batch;
* push-down ``L_A``: mean over attacked units of the mean (normalised) score of the unit's
  initial top-k images ``D_attack(j)``, evaluated on a mini-batch of attack images;
* push-up ``L_A``: mean over units, training images and decoys of ``[s_j(x) − s_j(p)]_+``;
* ``score_norm``: ``none`` | ``init_mean`` | ``batch_mean`` (default), SPEC §2;
* α fixed (0 = plain fine-tuning, the baseline) or dynamic (start 0.1, divide by
  ``alpha_factor`` when the accuracy drop on the evaluation subset exceeds the budget
  ``acc_budget_pp``, else multiply, up to α_max): :class:`AlphaController`;
* the selected result is the latest evaluated state whose drop **on the full validation
  set** is within the budget (SPEC §2, "Accuracy budget"). The subset that drives α is
  noise, not truth, so :class:`BudgetSelector` confirms a subset "within" on the full set
  at once and keeps the states the subset called "over" as candidates, re-evaluated on
  the full set (latest first) at the end. The final state is kept and measured too,
  flagged when over budget. Every accuracy records on how many images it was measured.

Every step draws its batches from ``numpy.random.default_rng([seed, step])``, so a run
resumed from a checkpoint follows exactly the path of an uninterrupted one. Because the
draw depends on nothing else, the input pipeline (:mod:`fvaudit.engine.data.pipeline`) decodes
the next steps' batches in its worker processes while the current step trains
(:class:`StepFeed`); bf16 autocast + channels_last on CUDA (``amp``), off on the CPU.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvaudit.engine.scan.activations import LayerScan, layer_scores, scan
from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS
from fvaudit.engine.data.images import ImageSet, ImageSetError
from fvaudit.engine.data.pipeline import Batches, StepFeed, amp_enabled, autocast, prepare_module, to_device
from fvaudit.engine.models.checkpoints import load_state_dict_file, save_checkpoint
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.models.sources import clone_model
from fvaudit.engine.progress import Cancelled, NullReporter, Reporter

AttackKind = Literal["push_down", "push_up", "finetune"]
ScoreNorm = Literal["none", "init_mean", "batch_mean"]
LrSchedule = Literal["constant", "cosine"]


class AttackConfigError(ValueError):
    """An attack configuration is invalid (message names the field)."""


@dataclass
class Target:
    """Units of one layer to attack; ``units=None`` means every unit of the layer."""

    layer: str
    units: list[int] | None = None


@dataclass
class AttackConfig:
    """One attack; defaults are :data:`~fvaudit.engine.attack.defaults.ATTACK_DEFAULTS` (shared with
    the CLI, the API and the form). ``steps=None`` with ``epochs=None`` means the default steps."""

    kind: AttackKind = "push_down"
    targets: list[Target] = field(default_factory=list)
    k: int = ATTACK_DEFAULTS["k"]                              # |D_attack(j)|: the initial top-k pushed down
    alpha: float | None = None                   # fixed α in [0, 1]; None = dynamic α
    alpha_init: float = ATTACK_DEFAULTS["alpha_init"]
    alpha_max: float = ATTACK_DEFAULTS["alpha_max"]
    alpha_factor: float = ATTACK_DEFAULTS["alpha_factor"]      # dynamic α: ÷ over budget, × within (SPEC §2)
    acc_budget_pp: float = ATTACK_DEFAULTS["acc_budget_pp"]    # allowed drop on the full validation set (pp)
    eval_every: int = ATTACK_DEFAULTS["eval_every"]            # steps between evaluations (≤ one epoch)
    eval_size: int = ATTACK_DEFAULTS["eval_size"]              # images the α controller reads; 0 = the full set
    lr: float = ATTACK_DEFAULTS["lr"]
    lr_schedule: LrSchedule = ATTACK_DEFAULTS["lr_schedule"]
    anchor_weight: float = ATTACK_DEFAULTS["anchor_weight"]    # L2-SP variant: + w/2 · ‖θ − θ_init‖²
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = ATTACK_DEFAULTS["batch_size"]
    attack_batch_size: int = ATTACK_DEFAULTS["attack_batch_size"]
    decoy_batch_size: int = ATTACK_DEFAULTS["decoy_batch_size"]
    score_norm: ScoreNorm = ATTACK_DEFAULTS["score_norm"]
    decoy_class: int | str | None = None
    decoy_ids: list[int] | None = None
    n_decoys: int = ATTACK_DEFAULTS["n_decoys"]
    seed: int = ATTACK_DEFAULTS["seed"]
    device: str = "cpu"
    checkpoint_every: int = ATTACK_DEFAULTS["checkpoint_every"]
    max_candidates: int = 8                      # over-budget-on-subset states kept for the full-set check
    amp: bool | None = None                      # bf16 autocast + channels_last; None = on CUDA only
    workers: int | None = None                   # input pipeline worker processes; None = configured default

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            self.steps = ATTACK_DEFAULTS["steps"]

    def validate(self) -> None:
        def bad(field_name: str, why: str) -> None:
            raise AttackConfigError(f"{field_name}: {why}")

        if self.kind not in ("push_down", "push_up", "finetune"):
            bad("kind", f"must be push_down, push_up or finetune, not {self.kind!r}")
        if not self.targets:
            bad("targets", "at least one target layer is required")
        if not isinstance(self.k, int) or self.k <= 0:
            bad("k", f"must be a positive integer, got {self.k!r}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            bad("alpha", f"must lie in [0, 1], got {self.alpha}")
        if self.kind == "finetune" and self.alpha not in (None, 0.0):
            bad("alpha", "a finetune baseline has alpha = 0")
        if not 0.0 < self.alpha_init <= 1.0:
            bad("alpha_init", f"must lie in (0, 1], got {self.alpha_init}")
        if not 0.0 < self.alpha_max <= 1.0:
            bad("alpha_max", f"must lie in (0, 1], got {self.alpha_max}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            bad("lr", f"must be > 0, got {self.lr}")
        if (self.steps is None) == (self.epochs is None):
            bad("steps", "give exactly one of steps or epochs")
        if self.steps is not None and self.steps <= 0:
            bad("steps", f"must be > 0, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            bad("epochs", f"must be > 0, got {self.epochs}")
        for name in ("batch_size", "attack_batch_size", "decoy_batch_size", "eval_every",
                     "checkpoint_every", "n_decoys", "max_candidates"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(name, f"must be a positive integer, got {v!r}")
        if not isinstance(self.eval_size, int) or isinstance(self.eval_size, bool) or self.eval_size < 0:
            bad("eval_size", f"must be an integer ≥ 0 (0 = the full validation set), got {self.eval_size!r}")
        if not (isinstance(self.alpha_factor, (int, float)) and math.isfinite(self.alpha_factor)
                and self.alpha_factor > 1.0):
            bad("alpha_factor", f"must be a finite number > 1, got {self.alpha_factor!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            bad("lr_schedule", f"must be constant or cosine, not {self.lr_schedule!r}")
        if not (math.isfinite(self.anchor_weight) and self.anchor_weight >= 0):
            bad("anchor_weight", f"must be a finite number ≥ 0, got {self.anchor_weight!r}")
        if not (math.isfinite(self.acc_budget_pp) and self.acc_budget_pp >= 0):
            bad("acc_budget_pp", f"must be a finite number ≥ 0, got {self.acc_budget_pp}")
        if self.score_norm not in ("none", "init_mean", "batch_mean"):
            bad("score_norm", f"must be none, init_mean or batch_mean, not {self.score_norm!r}")
        if self.kind == "push_up" and self.decoy_class is None and not self.decoy_ids:
            bad("decoy_class", "push_up needs a decoy class or explicit decoy_ids")

    @property
    def effective_alpha(self) -> float | None:
        return 0.0 if self.kind == "finetune" else self.alpha

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "AttackConfig":
        d = dict(d)
        d["targets"] = [Target(**t) if isinstance(t, dict) else t for t in d.get("targets", [])]
        return cls(**d)


def all_conv_targets(model: LoadedModel, post_relu: bool = True) -> list[Target]:
    """Targets for "all conv layers": each conv's ReLU output when it has one, else the conv."""
    names = [i.name for i in model.layers]
    targets = []
    for info in model.layers:
        if info.module_type != "Conv2d":
            continue
        nxt = names.index(info.name) + 1
        if post_relu and nxt < len(names) and model.layers[nxt].module_type == "ReLU":
            targets.append(Target(model.layers[nxt].name))
        else:
            targets.append(Target(info.name))
    return targets


@dataclass
class AlphaEvent:
    """One evaluation point (SPEC §2). ``accuracy``/``drop_pp`` are what the α controller read, on
    ``n_images`` images (the evaluation subset); ``full_*`` are the same state on the full
    validation set, None when that state was never measured there (it could not be selected)."""

    step: int
    alpha_before: float
    alpha_after: float
    accuracy: float
    drop_pp: float
    within_budget: bool                  # the controller's reading (subset)
    n_images: int = 0
    full_accuracy: float | None = None
    full_drop_pp: float | None = None
    full_n_images: int | None = None


@dataclass
class AttackResult:
    config: dict
    attacked: dict[str, list[int]]        # layer -> attacked (live) units
    dead: dict[str, list[int]]            # layer -> dead units left out (SPEC §1)
    steps: int
    alpha_trajectory: list[AlphaEvent]
    history: list[dict]                   # per-step losses and α
    acc_init: float                       # top-1 % on the full validation set, θ_init
    acc_final: float                      # top-1 % of the last step's state, full set
    acc_selected: float                   # top-1 % of the selected state, full set
    selected_step: int                    # latest evaluated step within budget on the full set (0 = θ_init)
    final_over_budget: bool               # the final state's full-set drop exceeds the budget
    seconds: float
    acc_n_images: int = 0                 # images of the full validation set (every acc_* above)
    eval_n_images: int = 0                # images the α controller read at each evaluation
    acc_budget_pp: float = 0.5
    full_evaluations: int = 0             # full-set evaluations spent confirming candidates
    decoy_ids: list[int] | None = None
    selected_path: Path | None = None
    final_path: Path | None = None
    selected_model: LoadedModel | None = None
    final_model: LoadedModel | None = None

    @property
    def delta_selected(self) -> float:
        return self.acc_selected - self.acc_init

    @property
    def delta_final(self) -> float:
        return self.acc_final - self.acc_init

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("selected_model", "final_model", "history")}
        d["selected_path"] = str(self.selected_path) if self.selected_path else None
        d["final_path"] = str(self.final_path) if self.final_path else None
        return d


@torch.no_grad()
def evaluate_accuracy(model: LoadedModel, image_set: ImageSet, ids: Sequence[int], batch_size: int = 512,
                      device: str = "cpu", batches: Batches | None = None, amp: bool = False,
                      workers: int | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` on the given ids of a labelled image set.

    ``batches``: the same ids, preloaded or streamed by the input pipeline (an attack
    evaluates one set many times); without it the ids are streamed through the pipeline's
    ``workers``. Images that fail to decode are left out of the count."""
    module = model.module.eval()
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise ImageSetError("accuracy needs at least one image")
    if batches is None:
        batches = Batches(image_set, ids, model, preload_limit_mb=0, workers=workers,
                           pin_memory=torch.device(device).type == "cuda")
    correct = total = 0
    groups = [np.arange(s, min(s + batch_size, len(ids))) for s in range(0, len(ids), batch_size)]
    for pos, x in batches.stream(groups):
        if x is None:
            continue
        got = batches.ids[pos]
        with autocast(device, amp):
            pred = module(to_device(x, device, amp)).argmax(1).cpu().numpy()
        correct += int((pred == image_set.labels[got]).sum())
        total += len(got)
    if total == 0:
        raise ImageSetError(f"none of {len(ids)} images of {image_set.key} could be decoded")
    return 100.0 * correct / total


def _distillation(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """L_M = mean_x [ −Σ_c p_init(c|x) log p_θ(c|x) ] (SPEC §2, temperature 1)."""
    p_init = F.softmax(teacher_logits, dim=1)
    return -(p_init * F.log_softmax(logits, dim=1)).sum(dim=1).mean()



class AlphaController:
    """Dynamic α (SPEC §2, after Davari et al. 2022): when the measured drop exceeds the budget,
    α ← α / factor, otherwise α ← min(factor · α, α_max). The threshold is the budget itself
    (``acc_budget_pp``), never a second constant. A fixed α (``fixed`` not None) never moves."""

    def __init__(self, budget_pp: float, alpha_max: float, factor: float = 2.0, fixed: float | None = None):
        self.budget_pp, self.alpha_max, self.factor, self.fixed = budget_pp, alpha_max, factor, fixed

    def update(self, alpha: float, drop_pp: float) -> float:
        if self.fixed is not None:
            return alpha
        return alpha / self.factor if drop_pp > self.budget_pp + 1e-9 else min(self.factor * alpha, self.alpha_max)


Weights = dict  # str -> torch.Tensor, on the CPU


class BudgetSelector:
    """Which evaluated state is "within budget" (SPEC §2): decided on the full validation set.

    ``observe`` is called at each evaluation with the controller's (subset) reading:

    * subset says within → the state is measured on the full set now; within there → it
      becomes the selection (older candidates can no longer be the latest within: dropped);
      over there → it is not selectable (the case a subset-only rule gets wrong);
    * subset says over → the state may still be within on the full set: its weights are kept
      as a candidate (at most ``max_candidates``, the oldest dropped first).

    ``finish`` re-evaluates the candidates newer than the selection, latest first, and
    selects the first within budget. ``full_accuracy(weights)`` measures a state on the full
    set; when the subset *is* the full set, readings are used as they are (no re-evaluation).
    """

    def __init__(self, acc_init_full: float, budget_pp: float, full_accuracy, subset_is_full: bool,
                 n_full: int, max_candidates: int = 8):
        self.acc_init_full, self.budget_pp = acc_init_full, budget_pp
        self.full_accuracy, self.subset_is_full, self.n_full = full_accuracy, subset_is_full, n_full
        self.max_candidates = max_candidates
        self.selected_step, self.selected_acc = 0, acc_init_full
        self.selected_weights: Weights | None = None      # None = θ_init
        self.candidates: dict[int, Weights] = {}          # step -> weights, subset said over
        self.full_evaluations = 0

    def _measure(self, ev: AlphaEvent, weights: Weights) -> bool:
        if self.subset_is_full:
            acc = ev.accuracy
        else:
            acc = self.full_accuracy(weights)
            self.full_evaluations += 1
        ev.full_accuracy, ev.full_drop_pp, ev.full_n_images = acc, self.acc_init_full - acc, self.n_full
        return ev.full_drop_pp <= self.budget_pp + 1e-9

    def _select(self, ev: AlphaEvent, weights: Weights) -> None:
        self.selected_step, self.selected_acc, self.selected_weights = ev.step, ev.full_accuracy, weights
        self.candidates = {s: w for s, w in self.candidates.items() if s > ev.step}

    def observe(self, ev: AlphaEvent, weights: Weights) -> list[int]:
        """Record one evaluation; returns the candidate steps dropped for the size bound."""
        if ev.within_budget or self.subset_is_full:
            if self._measure(ev, weights):
                self._select(ev, weights)
            return []
        self.candidates[ev.step] = weights
        dropped = []
        while len(self.candidates) > self.max_candidates:
            oldest = min(self.candidates)
            dropped.append(oldest)
            del self.candidates[oldest]
        return dropped

    def finish(self, trajectory: list[AlphaEvent]) -> None:
        by_step = {e.step: e for e in trajectory}
        for step in sorted(self.candidates, reverse=True):
            if step <= self.selected_step:
                break
            ev = by_step[step]
            if ev.full_accuracy is None and self._measure(ev, self.candidates[step]):
                self._select(ev, self.candidates[step])
                break
        self.candidates = {}


class _State:
    """What a checkpoint holds besides weights and optimizer state."""

    def __init__(self, alpha: float):
        self.step = 0
        self.alpha = alpha
        self.trajectory: list[AlphaEvent] = []
        self.history: list[dict] = []

    def to_json(self, selector: BudgetSelector) -> dict:
        return {"step": self.step, "alpha": self.alpha, "trajectory": [asdict(e) for e in self.trajectory], "history": self.history,
                "selected_step": selector.selected_step, "selected_acc": selector.selected_acc,
                "candidates": sorted(selector.candidates), "full_evaluations": selector.full_evaluations}

    def load(self, d: dict, selector: BudgetSelector) -> None:
        self.step, self.alpha = int(d["step"]), float(d["alpha"])
        self.trajectory = [AlphaEvent(**e) for e in d["trajectory"]]
        self.history = list(d["history"])
        selector.selected_step, selector.selected_acc = int(d["selected_step"]), float(d["selected_acc"])
        selector.full_evaluations = int(d.get("full_evaluations", 0))


def _lr_at(cfg: AttackConfig, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based): constant, or a cosine decay to 0 at ``total``."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))
    return cfg.lr


def _weights(module: torch.nn.Module) -> Weights:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class _AttackLoss:
    """L_A of SPEC §2 for one step: push-down over a mini-batch of D_attack, push-up over the
    training batch against a decoy batch, nothing for the fine-tune baseline."""

    def __init__(self, cfg: AttackConfig, layers: list[str], attacked: dict[str, list[int]],
                 scans: dict[str, LayerScan], init_mean: dict[str, torch.Tensor], train_set: ImageSet,
                 model: LoadedModel, rng0: np.random.Generator, device: torch.device, amp: bool = False):
        self.cfg, self.layers, self.device, self.init_mean, self.amp = cfg, layers, device, init_mean, amp
        pin = device.type == "cuda"
        self.cols = {l: torch.as_tensor(attacked[l], dtype=torch.long, device=device) for l in layers}
        self.attack_b: Batches | None = None
        self.decoy_b: Batches | None = None
        self.decoy_ids: np.ndarray | None = None
        if cfg.kind == "push_down":
            self.attack_ids = np.unique(np.concatenate([scans[l].topk_ids[attacked[l], : cfg.k].reshape(-1)
                                                        for l in layers]))
            self.attack_b = Batches(train_set, self.attack_ids, model, workers=cfg.workers, pin_memory=pin)
            pos_of = {int(i): p for p, i in enumerate(self.attack_ids)}
            # membership[l]: [|U|, J_l] bool, image u in D_attack(j)
            self.membership = {}
            for l in layers:
                m = torch.zeros((len(self.attack_ids), len(attacked[l])), dtype=torch.bool)
                for c, u in enumerate(attacked[l]):
                    for i in scans[l].topk_ids[u, : cfg.k]:
                        m[pos_of[int(i)], c] = True
                self.membership[l] = m.to(device)
        elif cfg.kind == "push_up":
            if cfg.decoy_ids:
                self.decoy_ids = train_set.check_ids(cfg.decoy_ids, "decoy_ids:")
            else:
                cls = train_set.class_index(cfg.decoy_class)  # type: ignore[arg-type]
                pool = train_set.class_ids(cls)
                if len(pool) == 0:
                    raise AttackConfigError(f"decoy_class: no training image of class {cfg.decoy_class!r}")
                self.decoy_ids = np.sort(rng0.choice(pool, size=min(cfg.n_decoys, len(pool)), replace=False))
            self.decoy_b = Batches(train_set, self.decoy_ids, model, workers=cfg.workers, pin_memory=pin)

    @property
    def extra_b(self) -> "Batches | None":
        """Where this loss's per-step batch comes from: D_attack, D_decoy or nothing."""
        return self.attack_b if self.attack_b is not None else self.decoy_b

    def draw(self, rng: np.random.Generator) -> np.ndarray | None:
        """This step's positions in D_attack / D_decoy, drawn from the step's generator after the
        training batch (the order every run, resumed or not, draws in)."""
        cfg = self.cfg
        if self.attack_b is not None:
            return np.sort(rng.choice(len(self.attack_ids), size=min(cfg.attack_batch_size, len(self.attack_ids)),
                                      replace=False))
        if self.decoy_b is not None:
            return np.sort(rng.choice(len(self.decoy_ids), size=min(cfg.decoy_batch_size, len(self.decoy_ids)),
                                      replace=False))
        return None

    def normaliser(self, l: str, batch_scores: torch.Tensor) -> torch.Tensor:
        norm = self.cfg.score_norm
        if norm == "none":
            return torch.ones_like(self.init_mean[l])
        if norm == "init_mean":
            return self.init_mean[l].clamp_min(1e-12)
        # batch_mean: the unit's mean over the current training batch under θ; the small
        # init-mean term keeps a unit silent on this batch from dividing by zero
        return batch_scores.mean(dim=0) + 1e-3 * self.init_mean[l] + 1e-12

    def __call__(self, module: torch.nn.Module, sb: dict[str, torch.Tensor],
                 extra: tuple[np.ndarray, torch.Tensor] | None) -> torch.Tensor:
        """``extra``: this step's (positions, tensor) of D_attack / D_decoy (:meth:`draw`, loaded)."""
        dev = self.device
        per_unit: list[torch.Tensor] = []
        if self.attack_b is not None:
            apos, xa = extra  # type: ignore[misc]
            scores_a, _ = layer_scores(module, to_device(xa, dev, self.amp), self.layers)
            for l in self.layers:
                s = scores_a[l][:, self.cols[l]] / self.normaliser(l, sb[l])
                m = self.membership[l][torch.as_tensor(apos, device=dev)].float()
                cnt = m.sum(0)
                has = cnt > 0
                per_unit.append((s * m).sum(0)[has] / cnt[has])
        elif self.decoy_b is not None:
            _, xp = extra  # type: ignore[misc]
            scores_p, _ = layer_scores(module, to_device(xp, dev, self.amp), self.layers)
            for l in self.layers:
                n = self.normaliser(l, sb[l])
                s_x = sb[l] / n                                    # [B, J]
                s_p = scores_p[l][:, self.cols[l]] / n             # [P, J]
                per_unit.append(F.relu(s_x[:, None, :] - s_p[None, :, :]).mean(dim=(0, 1)))
        else:  # finetune baseline: L_A is 0
            per_unit.append(torch.zeros(1, device=dev))
        return torch.cat(per_unit).mean()

    def close(self) -> None:
        for b in (self.attack_b, self.decoy_b):
            if b is not None:
                b.close()


def run_attack(
    model: LoadedModel,
    train_set: ImageSet,
    eval_set: ImageSet,
    cfg: AttackConfig,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    init_scans: dict[str, LayerScan] | None = None,
    resume: bool = True,
) -> AttackResult:
    """Fine-tune a copy of ``model`` under the attack loss; ``model`` itself is not changed.

    ``eval_set`` is the validation set ΔAcc is reported on: the budget is decided on all of
    it (SPEC §2); ``cfg.eval_size`` images of it (0 = all) drive the α controller.
    ``init_scans``: the θ_init scan of ``train_set`` for the target layers (top-k ≥ cfg.k);
    computed here when missing. With ``out_dir``, checkpoints are written every
    ``checkpoint_every`` steps and a run with ``resume=True`` continues from the last one.
    """
    reporter = reporter or NullReporter()
    cfg.validate()
    t_start = time.perf_counter()
    device = torch.device(cfg.device)
    out = Path(out_dir) if out_dir is not None else None
    torch.manual_seed(cfg.seed)

    # ---- targets, D_attack, dead units
    layers: list[str] = []
    requested: dict[str, list[int]] = {}
    for t in cfg.targets:
        info = model.layer(t.layer)
        if info.name in requested:
            raise AttackConfigError(f"targets: layer {info.name} is listed twice")
        requested[info.name] = model.check_units(info.name, t.units)
        layers.append(info.name)
    need_scan = [l for l in layers if init_scans is None or l not in init_scans or init_scans[l].topk_ids.shape[1] < cfg.k]
    scans = dict(init_scans or {})
    if need_scan:
        reporter.stage("scan θ_init (attack set)")
        res = scan(model, train_set, need_scan, k=cfg.k, device=cfg.device, reporter=reporter, workers=cfg.workers,
                   amp=cfg.amp)
        scans.update(res.layers)
    attacked: dict[str, list[int]] = {}
    dead: dict[str, list[int]] = {}
    for l in layers:
        dead_l = set(scans[l].dead_units)
        attacked[l] = [u for u in requested[l] if u not in dead_l]
        dead[l] = [u for u in requested[l] if u in dead_l]
    if sum(len(v) for v in attacked.values()) == 0:
        raise AttackConfigError("targets: every requested unit is dead (scores 0 on all training images)")
    if dead_total := sum(len(v) for v in dead.values()):
        reporter.log(f"{dead_total} dead units left out of the attacked set", dead=dead_total)
    init_mean = {l: torch.from_numpy(np.nanmean(np.asarray(scans[l].scores)[:, attacked[l]], axis=0)).float().to(device)
                 for l in layers}

    # ---- data: the controller's subset and the full validation set
    rng0 = np.random.default_rng([cfg.seed, 2**31 - 1])
    full_ids = np.asarray(eval_set.ids)
    if len(full_ids) == 0:
        raise ImageSetError("validation set is empty")
    subset_is_full = cfg.eval_size == 0 or cfg.eval_size >= len(full_ids)
    eval_ids = full_ids if subset_is_full else np.sort(rng0.choice(full_ids, size=cfg.eval_size, replace=False))
    train_ids = train_set.ids
    if len(train_ids) == 0:
        raise ImageSetError("train set is empty")
    steps_per_epoch = max(1, math.ceil(len(train_ids) / cfg.batch_size))
    total_steps = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
    eval_every = min(cfg.eval_every, steps_per_epoch)

    use_amp = amp_enabled(device, cfg.amp)
    pin = device.type == "cuda"
    train_b = Batches(train_set, train_ids, model, workers=cfg.workers, pin_memory=pin)
    eval_b = Batches(eval_set, eval_ids, model, workers=cfg.workers, pin_memory=pin)
    full_b = eval_b if subset_is_full else Batches(eval_set, full_ids, model, workers=cfg.workers, pin_memory=pin)
    attack_loss = _AttackLoss(cfg, layers, attacked, scans, init_mean, train_set, model, rng0, device, use_amp)

    def draw(step: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Step ``step``'s batches, from its own generator only: the training batch, then L_A's."""
        rng = np.random.default_rng([cfg.seed, step])
        pos = np.sort(rng.choice(len(train_ids), size=min(cfg.batch_size, len(train_ids)), replace=False))
        return pos, attack_loss.draw(rng)

    # ---- models
    teacher = clone_model(model)
    prepare_module(teacher.module, device, use_amp).eval().requires_grad_(False)
    student = clone_model(model)
    prepare_module(student.module, device, use_amp).eval()  # eval mode: BN statistics and dropout stay as in θ_init
    module = student.module
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    anchor = ([p.detach().clone() for p in module.parameters()] if cfg.anchor_weight > 0 else None)
    fixed_alpha = cfg.effective_alpha
    controller = AlphaController(cfg.acc_budget_pp, cfg.alpha_max, cfg.alpha_factor, fixed_alpha)
    state = _State(cfg.alpha_init if fixed_alpha is None else fixed_alpha)

    reporter.stage("accuracy of θ_init")
    acc_init_sub = evaluate_accuracy(teacher, eval_set, eval_ids, device=cfg.device, batches=eval_b, amp=use_amp)
    acc_init_full = (acc_init_sub if subset_is_full
                     else evaluate_accuracy(teacher, eval_set, full_ids, device=cfg.device, batches=full_b,
                                            amp=use_amp))
    scratch = clone_model(model)

    def full_accuracy(weights: Weights) -> float:
        scratch.module.load_state_dict(weights)
        prepare_module(scratch.module, device, use_amp).eval()
        return evaluate_accuracy(scratch, eval_set, full_ids, device=cfg.device, batches=full_b, amp=use_amp)

    selector = BudgetSelector(acc_init_full, cfg.acc_budget_pp, full_accuracy, subset_is_full, len(full_ids),
                              cfg.max_candidates)

    ckpt_dir = out / "checkpoint" if out is not None else None
    if ckpt_dir is not None and resume and (ckpt_dir / "state.json").exists():
        saved = json.loads((ckpt_dir / "state.json").read_text())
        if _resume_key(saved.get("config") or {}) != _resume_key(cfg.to_json()):
            raise AttackConfigError(f"checkpoint in {ckpt_dir} was written by a different configuration; "
                                    "use a new run directory or resume=False")
        state.load(saved["state"], selector)
        module.load_state_dict(load_state_dict_file(ckpt_dir / "weights.safetensors"))
        opt.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True, map_location=device))
        if (ckpt_dir / "selected.safetensors").exists():
            selector.selected_weights = load_state_dict_file(ckpt_dir / "selected.safetensors")
        for s in saved["state"].get("candidates", []):
            selector.candidates[int(s)] = load_state_dict_file(ckpt_dir / f"candidate_{int(s)}.safetensors")
        reporter.log(f"resumed from step {state.step}", step=state.step)

    def save_ckpt() -> None:
        if ckpt_dir is None:
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(module, ckpt_dir / "weights.safetensors")
        tmp = ckpt_dir / "optimizer.pt.tmp"
        torch.save(opt.state_dict(), tmp)
        tmp.replace(ckpt_dir / "optimizer.pt")
        if selector.selected_weights is not None:
            _save_state_dict(selector.selected_weights, ckpt_dir / "selected.safetensors")
        for s, w in selector.candidates.items():
            if not (ckpt_dir / f"candidate_{s}.safetensors").exists():
                _save_state_dict(w, ckpt_dir / f"candidate_{s}.safetensors")
        tmp = ckpt_dir / "state.json.tmp"
        tmp.write_text(json.dumps({"config": cfg.to_json(), "state": state.to_json(selector)}))
        tmp.replace(ckpt_dir / "state.json")
        for f in ckpt_dir.glob("candidate_*.safetensors"):  # after state.json no longer names them
            if int(f.stem.split("_")[1]) not in selector.candidates:
                f.unlink(missing_ok=True)

    reporter.stage(cfg.kind, total=total_steps)
    feed = StepFeed(draw, train_b, attack_loss.extra_b, state.step, total_steps)
    try:
        for step, (_, xb), extra in feed:
            if reporter.cancelled():
                save_ckpt()
                raise Cancelled(f"at step {state.step}")
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step, total_steps)
            xb = to_device(xb, device, use_amp)
            with autocast(device, use_amp):
                with torch.no_grad():
                    t_logits = teacher.module(xb)
                scores_b, logits = layer_scores(module, xb, layers, need_logits=True)
                l_m = _distillation(logits.float(), t_logits.float())  # type: ignore[union-attr]
                sb = {l: scores_b[l][:, attack_loss.cols[l]] for l in layers}
                l_a = attack_loss(module, sb, extra)
            alpha = state.alpha
            loss = alpha * l_a + (1 - alpha) * l_m if alpha > 0 else l_m
            if anchor is not None:  # L2-SP (Li et al. 2018): pulls θ towards θ_init, an option (SPEC §2)
                drift = sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchor))
                loss = loss + 0.5 * cfg.anchor_weight * drift
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.step = step + 1
            rec = {"step": state.step, "loss": float(loss.detach()), "l_attack": float(l_a.detach()),
                   "l_maintain": float(l_m.detach()), "alpha": alpha}
            state.history.append(rec)
            reporter.advance(state.step, total_steps, **rec)

            if state.step % eval_every == 0 or state.step == total_steps:
                acc = evaluate_accuracy(student, eval_set, eval_ids, device=cfg.device, batches=eval_b, amp=use_amp)
                drop = acc_init_sub - acc
                new_alpha = controller.update(alpha, drop)
                ev = AlphaEvent(state.step, alpha, new_alpha, acc, drop, drop <= cfg.acc_budget_pp + 1e-9,
                                len(eval_ids))
                state.trajectory.append(ev)
                state.alpha = new_alpha
                dropped = selector.observe(ev, _weights(module))
                full = (f", full set {ev.full_accuracy:.2f} ({ev.full_drop_pp:+.2f} pp on {ev.full_n_images})"
                        if ev.full_accuracy is not None and not subset_is_full else "")
                reporter.log(f"step {state.step}: acc {acc:.2f} (drop {drop:+.2f} pp on {len(eval_ids)} images){full}, "
                             f"α {alpha:.4g} → {new_alpha:.4g}", **asdict(ev))
                if dropped:
                    reporter.log(f"candidate states {dropped} dropped (max_candidates={cfg.max_candidates})")
            if ckpt_dir is not None and (state.step % cfg.checkpoint_every == 0):
                save_ckpt()
    finally:
        train_b.close(); eval_b.close(); full_b.close(); attack_loss.close()

    # ---- selection on the full validation set, then both states measured there
    reporter.stage("accuracy on the full validation set")
    selector.finish(state.trajectory)
    save_ckpt()
    last = state.trajectory[-1] if state.trajectory else None
    if last is not None and last.step == state.step and last.full_accuracy is not None:
        acc_final_full = last.full_accuracy
    else:
        acc_final_full = full_accuracy(_weights(module))
        if last is not None and last.step == state.step:
            last.full_accuracy, last.full_drop_pp, last.full_n_images = (
                acc_final_full, acc_init_full - acc_final_full, len(full_ids))
    final = student
    if use_amp:   # hand back ordinary (contiguous) weights
        final.module.to(memory_format=torch.contiguous_format)
    selected = clone_model(model)
    if selector.selected_weights is not None:
        selected.module.load_state_dict(selector.selected_weights)
    acc_sel_full = selector.selected_acc
    final_over = acc_init_full - acc_final_full > cfg.acc_budget_pp + 1e-9
    reporter.log(f"selected step {selector.selected_step}: {acc_sel_full:.2f}% "
                 f"({acc_sel_full - acc_init_full:+.2f} pp on {len(full_ids)} images); final step {state.step}: "
                 f"{acc_final_full:.2f}% ({acc_final_full - acc_init_full:+.2f} pp)"
                 + (" over budget" if final_over else ""))
    selected_path = final_path = None
    if out is not None:
        final_path = save_checkpoint(final.module, out / "final.safetensors", {"step": str(state.step)})
        selected_path = save_checkpoint(selected.module, out / "selected.safetensors",
                                        {"step": str(selector.selected_step)})
    return AttackResult(
        config=cfg.to_json(), attacked=attacked, dead=dead, steps=state.step,
        alpha_trajectory=state.trajectory, history=state.history,
        acc_init=acc_init_full, acc_final=acc_final_full, acc_selected=acc_sel_full,
        selected_step=selector.selected_step, final_over_budget=final_over,
        seconds=time.perf_counter() - t_start, acc_n_images=len(full_ids), eval_n_images=len(eval_ids),
        acc_budget_pp=cfg.acc_budget_pp, full_evaluations=selector.full_evaluations,
        selected_path=selected_path, final_path=final_path,
        decoy_ids=None if attack_loss.decoy_ids is None else [int(i) for i in attack_loss.decoy_ids],
        selected_model=selected.to("cpu"), final_model=final.to("cpu"),
    )


def _resume_key(config: dict) -> dict:
    """The parts of a config a checkpoint must match to be resumed: all but the device and
    the checkpoint interval (a requeued job may land on another worker, CPU or GPU)."""
    return {k: v for k, v in config.items() if k not in ("device", "checkpoint_every")}


def _save_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
