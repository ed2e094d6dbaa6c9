"""Push-down / push-up attacks on dataset-example visualizations (SPEC §2): :func:`run_attack`.

Fine-tune θ from θ_init with ``L = α·L_A + (1−α)·L_M``:

* ``L_M``: distillation from the frozen θ_init (softmax, temperature 1) on a training batch;
* push-down ``L_A``: mean over attacked units of the mean (normalised) score of the unit's
  initial top-k images ``D_attack(j)``, evaluated on a mini-batch of attack images;
* push-up ``L_A``: mean over units, training images and decoys of ``[s_j(x) − s_j(p)]_+``;
* Slingshots ``L_A`` (SPEC §8.1, :mod:`.slingshot`): the unit's input-gradient field on the
  render's parameterisation matched to one converging on a target image (double back-propagation),
  with ``L_P`` (the layer's natural activations kept) added to ``L_M``; the combined attack
  (SPEC §8.2) sums push-up and Slingshots. Which terms a kind has: :mod:`.kinds`;
* ``score_norm``: ``none`` | ``init_mean`` | ``batch_mean`` (default), SPEC §2;
* α fixed (0 = plain fine-tuning, the baseline) or dynamic (start 0.1, divide by
  ``alpha_factor`` when the accuracy drop on the evaluation subset exceeds the budget
  ``acc_budget_pp``, else multiply, up to α_max): :class:`~fvaudit.engine.attack.control.AlphaController`;
* the selected result is the latest evaluated state whose drop **on the full validation
  set** is within the budget (SPEC §2, "Accuracy budget"). The subset that drives α is
  noise, not truth, so :class:`~fvaudit.engine.attack.control.BudgetSelector` confirms a subset "within" on the full set
  at once and keeps the states the subset called "over" as candidates, re-evaluated on
  the full set (latest first) at the end. The final state is kept and measured too,
  flagged when over budget. Every accuracy records on how many images it was measured.

Every step draws its batches from ``numpy.random.default_rng([seed, step])``, so a run
resumed from a checkpoint follows exactly the path of an uninterrupted one. Because the
draw depends on nothing else, the input pipeline (:mod:`fvaudit.engine.data.pipeline`) decodes
the next steps' batches in its worker processes while the current step trains
(:class:`StepFeed`); bf16 autocast + channels_last on CUDA (``amp``), off on the CPU.

The pieces: the attack's settings (:mod:`.config`), its loss (:mod:`.loss`), the α controller
and the budget selector (:mod:`.control`), the resumable checkpoint (:mod:`.checkpoint`); this
module puts them together, one step after another.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fvaudit.engine.attack.checkpoint import Checkpoint, RunState
from fvaudit.engine.attack.config import AttackConfig, AttackConfigError
from fvaudit.engine.attack.control import AlphaController, AlphaEvent, BudgetSelector, Weights, weights_of
from fvaudit.engine.attack.loss import AttackLoss, distillation, lr_at
from fvaudit.engine.data.images import ImageSet, ImageSetError
from fvaudit.engine.data.pipeline import Batches, StepFeed, amp_enabled, autocast, prepare_module, to_device
from fvaudit.engine.models.checkpoints import save_checkpoint
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.models.sources import clone_model
from fvaudit.engine.progress import Cancelled, NullReporter, Reporter
from fvaudit.engine.scans.activations import LayerScan, run_captured, scan, unit_scores


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


@dataclass
class Targets:
    """What is attacked: the layers, each layer's live requested units (``attacked``) and dead
    ones (left out, SPEC §1), the θ_init scans of the training set (D_attack) and each
    attacked unit's mean θ_init score (``init_mean``, for the score normalisation)."""

    layers: list[str]
    attacked: dict[str, list[int]]
    dead: dict[str, list[int]]
    scans: dict[str, LayerScan]
    init_mean: dict[str, torch.Tensor]


def resolve_targets(model: LoadedModel, train_set: ImageSet, cfg: AttackConfig,
                    init_scans: dict[str, LayerScan] | None, reporter: Reporter) -> Targets:
    """The configured targets checked against the model; the θ_init scan is run for the
    layers ``init_scans`` lacks (or holds with a top-k shorter than ``cfg.k``)."""
    layers: list[str] = []
    requested: dict[str, list[int]] = {}
    for t in cfg.targets:
        info = model.layer(t.layer)
        if info.name in requested:
            raise AttackConfigError(f"targets: layer {info.name} is listed twice")
        requested[info.name] = model.check_units(info.name, t.units)
        layers.append(info.name)
    scans = dict(init_scans or {})
    need_scan = [l for l in layers if l not in scans or scans[l].topk_ids.shape[1] < cfg.k]
    if need_scan:
        reporter.stage("scan θ_init (attack set)")
        scans.update(scan(model, train_set, need_scan, k=cfg.k, device=cfg.device, reporter=reporter,
                          workers=cfg.workers, amp=cfg.amp).layers)
    dead_of = {l: set(scans[l].dead_units) for l in layers}
    attacked = {l: [u for u in requested[l] if u not in dead_of[l]] for l in layers}
    dead = {l: [u for u in requested[l] if u in dead_of[l]] for l in layers}
    if sum(len(v) for v in attacked.values()) == 0:
        raise AttackConfigError("targets: every requested unit is dead (scores 0 on all training images)")
    if dead_total := sum(len(v) for v in dead.values()):
        reporter.log(f"{dead_total} dead units left out of the attacked set", dead=dead_total)
    device = torch.device(cfg.device)
    init_mean = {l: torch.from_numpy(np.nanmean(np.asarray(scans[l].scores)[:, attacked[l]], axis=0)).float()
                 .to(device) for l in layers}
    return Targets(layers, attacked, dead, scans, init_mean)


def make_optimizer(module: torch.nn.Module, cfg: AttackConfig) -> torch.optim.Optimizer:
    """Adam (SPEC §2, the thesis' optimizer) or SGD with momentum 0.9: an honest vendor's
    fine-tune uses either, and the detector's benign family spans both (SPEC §8.5)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(module.parameters(), lr=cfg.lr)


class _AttackRun:
    """One attack in progress: the frozen teacher (θ_init) and the student, the optimizer, the
    batches (training, evaluation subset, full validation set, D_attack / D_decoy), the α
    controller, the budget selector and the state a checkpoint holds."""

    def __init__(self, model: LoadedModel, train_set: ImageSet, eval_set: ImageSet, cfg: AttackConfig,
                 targets: Targets, reporter: Reporter):
        self.model, self.eval_set, self.cfg, self.targets, self.reporter = model, eval_set, cfg, targets, reporter
        self.device = device = torch.device(cfg.device)
        rng0 = np.random.default_rng([cfg.seed, 2**31 - 1])
        self.full_ids = np.asarray(eval_set.ids)
        if len(self.full_ids) == 0:
            raise ImageSetError("validation set is empty")
        self.subset_is_full = cfg.eval_size == 0 or cfg.eval_size >= len(self.full_ids)
        self.eval_ids = (self.full_ids if self.subset_is_full
                         else np.sort(rng0.choice(self.full_ids, size=cfg.eval_size, replace=False)))
        self.train_ids = train_set.ids
        if len(self.train_ids) == 0:
            raise ImageSetError("train set is empty")
        steps_per_epoch = max(1, math.ceil(len(self.train_ids) / cfg.batch_size))
        self.total_steps = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
        self.eval_every = min(cfg.eval_every, steps_per_epoch)

        self.amp = amp_enabled(device, cfg.amp)
        pin = device.type == "cuda"
        self.train_b = Batches(train_set, self.train_ids, model, workers=cfg.workers, pin_memory=pin)
        self.eval_b = Batches(eval_set, self.eval_ids, model, workers=cfg.workers, pin_memory=pin)
        self.full_b = (self.eval_b if self.subset_is_full
                       else Batches(eval_set, self.full_ids, model, workers=cfg.workers, pin_memory=pin))
        self.attack_loss = AttackLoss(cfg, targets.layers, targets.attacked, targets.scans, targets.init_mean,
                                      train_set, model, rng0, device, self.amp)

        self.teacher = clone_model(model)
        prepare_module(self.teacher.module, device, self.amp).eval().requires_grad_(False)
        self.student = clone_model(model)
        prepare_module(self.student.module, device, self.amp).eval()  # BN statistics and dropout stay as in θ_init
        self.module = self.student.module
        self.opt = make_optimizer(self.module, cfg)
        # L_M on the labels (cfg.maintain == "labels"): each training image's class, by image id
        self.train_labels = (torch.as_tensor(np.asarray(train_set.labels)[np.asarray(self.train_ids)], dtype=torch.long)
                             if cfg.maintain == "labels" else None)
        self.anchor = ([p.detach().clone() for p in self.module.parameters()] if cfg.anchor_weight > 0 else None)
        fixed_alpha = cfg.effective_alpha
        self.controller = AlphaController(cfg.acc_budget_pp, cfg.alpha_max, cfg.alpha_factor, fixed_alpha)
        self.state = RunState(cfg.alpha_init if fixed_alpha is None else fixed_alpha)

        reporter.stage("accuracy of θ_init")
        self.acc_init_sub = self._accuracy(self.teacher, self.eval_ids, self.eval_b)
        self.acc_init_full = (self.acc_init_sub if self.subset_is_full
                              else self._accuracy(self.teacher, self.full_ids, self.full_b))
        self.scratch = clone_model(model)
        self.selector = BudgetSelector(self.acc_init_full, cfg.acc_budget_pp, self.full_accuracy, self.subset_is_full,
                                       len(self.full_ids), cfg.max_candidates)

    def _accuracy(self, model: LoadedModel, ids: np.ndarray, batches: Batches) -> float:
        return evaluate_accuracy(model, self.eval_set, ids, device=self.cfg.device, batches=batches, amp=self.amp)

    def full_accuracy(self, weights: Weights) -> float:
        """A state's accuracy on the full validation set (the budget's judge)."""
        self.scratch.module.load_state_dict(weights)
        prepare_module(self.scratch.module, self.device, self.amp).eval()
        return self._accuracy(self.scratch, self.full_ids, self.full_b)

    def feed(self) -> StepFeed:
        """Every remaining step's batches, drawn from (seed, step) only: the training batch, then L_A's."""
        cfg = self.cfg

        def draw(step: int) -> tuple[np.ndarray, np.ndarray | None]:
            rng = np.random.default_rng([cfg.seed, step])
            pos = np.sort(rng.choice(len(self.train_ids), size=min(cfg.batch_size, len(self.train_ids)),
                                     replace=False))
            return pos, self.attack_loss.draw(rng)

        return StepFeed(draw, self.train_b, self.attack_loss.extra_b, self.state.step, self.total_steps)

    def train_step(self, step: int, xb: torch.Tensor, extra, pos: np.ndarray | None = None) -> None:
        """One optimizer step of ``L = α·L_A + (1−α)·L_M`` (+ the optional L2-SP anchor).
        ``pos``: the batch's positions in the training ids (their labels, for ``maintain="labels"``)."""
        cfg, module, layers = self.cfg, self.module, self.targets.layers
        for g in self.opt.param_groups:
            g["lr"] = lr_at(cfg, step, self.total_steps)
        xb = to_device(xb, self.device, self.amp)
        # Slingshots keeps the attacked layer's natural activations too (L_P, SPEC §8.1); the combined
        # attack (§8.2) does not: its push-up is meant to change them
        sling = self.attack_loss.slingshot if self.attack_loss.decoy_b is None else None
        with autocast(self.device, self.amp):
            t_outs: dict[str, torch.Tensor] = {}
            if self.train_labels is None or sling is not None:
                with torch.no_grad():
                    t_outs, t_logits = run_captured(self.teacher.module, xb, layers if sling is not None else [],
                                                    need_logits=True)
            outs, logits = run_captured(module, xb, layers, need_logits=True)
            scores_b = {l: unit_scores(o) for l, o in outs.items()}
            if self.train_labels is not None:
                if pos is None:
                    raise ValueError("maintain='labels' needs the batch positions (pos)")
                y = self.train_labels[torch.as_tensor(np.asarray(pos))].to(logits.device)  # type: ignore[union-attr]
                l_m = torch.nn.functional.cross_entropy(logits.float(), y)  # type: ignore[union-attr]
            else:
                l_m = distillation(logits.float(), t_logits.float())  # type: ignore[union-attr]
            if sling is not None:
                from fvaudit.engine.attack.slingshot import preservation

                l_m = l_m + preservation(outs[sling.layer], t_outs[sling.layer], self.attack_loss.cols[sling.layer],
                                         cfg.unit_weight)
            sb = {l: scores_b[l][:, self.attack_loss.cols[l]] for l in layers}
            l_a = self.attack_loss(module, sb, extra, step)
        alpha = self.state.alpha
        loss = alpha * l_a + (1 - alpha) * l_m if alpha > 0 else l_m
        if self.anchor is not None:  # L2-SP (Li et al. 2018): pulls θ towards θ_init, an option (SPEC §2)
            drift = sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), self.anchor))
            loss = loss + 0.5 * cfg.anchor_weight * drift
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.state.step = step + 1
        rec = {"step": self.state.step, "loss": float(loss.detach()), "l_attack": float(l_a.detach()),
               "l_maintain": float(l_m.detach()), "alpha": alpha}
        self.state.history.append(rec)
        self.reporter.advance(self.state.step, self.total_steps, **rec)

    def due_for_evaluation(self) -> bool:
        return self.state.step % self.eval_every == 0 or self.state.step == self.total_steps

    def evaluate_and_control(self) -> None:
        """Accuracy on the evaluation subset → the next α; the state goes to the budget selector."""
        cfg, state = self.cfg, self.state
        acc = self._accuracy(self.student, self.eval_ids, self.eval_b)
        drop = self.acc_init_sub - acc
        alpha, new_alpha = state.alpha, self.controller.update(state.alpha, drop)
        ev = AlphaEvent(state.step, alpha, new_alpha, acc, drop, drop <= cfg.acc_budget_pp + 1e-9, len(self.eval_ids))
        state.trajectory.append(ev)
        state.alpha = new_alpha
        dropped = self.selector.observe(ev, weights_of(self.module))
        full = (f", full set {ev.full_accuracy:.2f} ({ev.full_drop_pp:+.2f} pp on {ev.full_n_images})"
                if ev.full_accuracy is not None and not self.subset_is_full else "")
        self.reporter.log(f"step {state.step}: acc {acc:.2f} (drop {drop:+.2f} pp on {len(self.eval_ids)} images)"
                          f"{full}, α {alpha:.4g} → {new_alpha:.4g}", **asdict(ev))
        if dropped:
            self.reporter.log(f"candidate states {dropped} dropped (max_candidates={cfg.max_candidates})")

    def save(self, ckpt: Checkpoint | None) -> None:
        if ckpt is not None:
            ckpt.save(self.module, self.opt, self.state, self.selector)

    def close(self) -> None:
        for b in (self.train_b, self.eval_b, self.full_b, self.attack_loss):
            b.close()

    def finish(self, out: Path | None, ckpt: Checkpoint | None, seconds) -> AttackResult:
        """Selection on the full validation set, both states measured there, saved, returned."""
        cfg, state, selector = self.cfg, self.state, self.selector
        self.reporter.stage("accuracy on the full validation set")
        selector.finish(state.trajectory)
        self.save(ckpt)
        n_full = len(self.full_ids)
        last = state.trajectory[-1] if state.trajectory else None
        if last is not None and last.step == state.step and last.full_accuracy is not None:
            acc_final_full = last.full_accuracy
        else:
            acc_final_full = self.full_accuracy(weights_of(self.module))
            if last is not None and last.step == state.step:
                last.full_accuracy, last.full_drop_pp, last.full_n_images = (
                    acc_final_full, self.acc_init_full - acc_final_full, n_full)
        final = self.student
        if self.amp:   # hand back ordinary (contiguous) weights
            final.module.to(memory_format=torch.contiguous_format)
        selected = clone_model(self.model)
        if selector.selected_weights is not None:
            selected.module.load_state_dict(selector.selected_weights)
        acc_init, acc_sel = self.acc_init_full, selector.selected_acc
        final_over = acc_init - acc_final_full > cfg.acc_budget_pp + 1e-9
        self.reporter.log(f"selected step {selector.selected_step}: {acc_sel:.2f}% ({acc_sel - acc_init:+.2f} pp on "
                          f"{n_full} images); final step {state.step}: {acc_final_full:.2f}% "
                          f"({acc_final_full - acc_init:+.2f} pp)" + (" over budget" if final_over else ""))
        selected_path = final_path = None
        if out is not None:
            final_path = save_checkpoint(final.module, out / "final.safetensors", {"step": str(state.step)})
            selected_path = save_checkpoint(selected.module, out / "selected.safetensors",
                                            {"step": str(selector.selected_step)})
        decoys = self.attack_loss.decoy_ids
        return AttackResult(
            config=cfg.to_json(), attacked=self.targets.attacked, dead=self.targets.dead, steps=state.step,
            alpha_trajectory=state.trajectory, history=state.history,
            acc_init=acc_init, acc_final=acc_final_full, acc_selected=acc_sel,
            selected_step=selector.selected_step, final_over_budget=final_over, seconds=seconds(),
            acc_n_images=n_full, eval_n_images=len(self.eval_ids), acc_budget_pp=cfg.acc_budget_pp,
            full_evaluations=selector.full_evaluations, selected_path=selected_path, final_path=final_path,
            decoy_ids=None if decoys is None else [int(i) for i in decoys],
            selected_model=selected.to("cpu"), final_model=final.to("cpu"),
        )


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
    out = Path(out_dir) if out_dir is not None else None
    torch.manual_seed(cfg.seed)
    targets = resolve_targets(model, train_set, cfg, init_scans, reporter)
    run = _AttackRun(model, train_set, eval_set, cfg, targets, reporter)
    ckpt = Checkpoint(out / "checkpoint", cfg) if out is not None else None
    if ckpt is not None and resume and ckpt.exists():
        ckpt.restore(run.module, run.opt, run.state, run.selector, run.device)
        reporter.log(f"resumed from step {run.state.step}", step=run.state.step)
    reporter.stage(cfg.kind, total=run.total_steps)
    try:
        for step, (pos, xb), extra in run.feed():
            if reporter.cancelled():
                run.save(ckpt)
                raise Cancelled(f"at step {run.state.step}")
            run.train_step(step, xb, extra, pos)
            if run.due_for_evaluation():
                run.evaluate_and_control()
            if run.state.step % cfg.checkpoint_every == 0:
                run.save(ckpt)
    finally:
        run.close()
    return run.finish(out, ckpt, lambda: time.perf_counter() - t_start)
