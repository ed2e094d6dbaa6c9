"""Push-down / push-up attacks on dataset-example visualizations (SPEC §2).

Fine-tune θ from θ_init with ``L = α·L_A + (1−α)·L_M``:

* ``L_M``: distillation from the frozen θ_init (softmax, temperature 1) on a training batch;
* push-down ``L_A``: mean over attacked units of the mean (normalised) score of the unit's
  initial top-k images ``D_attack(j)``, evaluated on a mini-batch of attack images;
* push-up ``L_A``: mean over units, training images and decoys of ``[s_j(x) − s_j(p)]_+``;
* ``score_norm``: ``none`` | ``init_mean`` | ``batch_mean`` (default), SPEC §2;
* α fixed (0 = plain fine-tuning, the baseline) or dynamic (start 0.1, halve when the
  accuracy drop on a held-out subset exceeds 0.5 pp, else double up to α_max);
* the result is the latest evaluated state within the accuracy budget; the final state
  is kept too, flagged when over budget.

Every step draws its batches from ``numpy.random.default_rng([seed, step])``, so a run
resumed from a checkpoint follows exactly the path of an uninterrupted one.
"""
from __future__ import annotations

import copy
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvaudit.engine.activations import LayerScan, layer_scores, scan
from fvaudit.engine.images import ImageSet, ImageSetError, load_tensor
from fvaudit.engine.models import LoadedModel, ModelError, clone_model, load_state_dict_file, save_checkpoint
from fvaudit.engine.progress import Cancelled, NullReporter, Reporter

AttackKind = Literal["push_down", "push_up", "finetune"]
ScoreNorm = Literal["none", "init_mean", "batch_mean"]


class AttackConfigError(ValueError):
    """An attack configuration is invalid (message names the field)."""


@dataclass
class Target:
    """Units of one layer to attack; ``units=None`` means every unit of the layer."""

    layer: str
    units: list[int] | None = None


@dataclass
class AttackConfig:
    kind: AttackKind = "push_down"
    targets: list[Target] = field(default_factory=list)
    k: int = 10                          # |D_attack(j)|: the initial top-k pushed down
    alpha: float | None = None           # fixed α in [0, 1]; None = dynamic α
    alpha_init: float = 0.1
    alpha_max: float = 0.99
    acc_budget_pp: float = 0.5           # allowed accuracy drop (percentage points)
    eval_every: int = 50                 # steps between evaluations (≤ one epoch)
    eval_size: int = 2000                # held-out evaluation subset size
    lr: float = 1e-5
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 256
    attack_batch_size: int = 64
    decoy_batch_size: int = 32
    score_norm: ScoreNorm = "batch_mean"
    decoy_class: int | str | None = None
    decoy_ids: list[int] | None = None
    n_decoys: int = 100
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 100

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
        for name in ("batch_size", "attack_batch_size", "decoy_batch_size", "eval_every", "eval_size",
                     "checkpoint_every", "n_decoys"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                bad(name, f"must be a positive integer, got {v!r}")
        if self.acc_budget_pp < 0:
            bad("acc_budget_pp", f"must be ≥ 0, got {self.acc_budget_pp}")
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
    step: int
    alpha_before: float
    alpha_after: float
    accuracy: float
    drop_pp: float
    within_budget: bool


@dataclass
class AttackResult:
    config: dict
    attacked: dict[str, list[int]]        # layer -> attacked (live) units
    dead: dict[str, list[int]]            # layer -> dead units left out (SPEC §1)
    steps: int
    alpha_trajectory: list[AlphaEvent]
    history: list[dict]                   # per-step losses and α
    acc_init: float                       # top-1 % on the held-out set, θ_init
    acc_final: float                      # top-1 % of the last step's state
    acc_selected: float                   # top-1 % of the state within budget
    selected_step: int                    # step of the state within budget (0 = θ_init)
    final_over_budget: bool
    seconds: float
    decoy_ids: list[int] | None = None
    selected_path: Path | None = None
    final_path: Path | None = None
    selected_model: LoadedModel | None = None
    final_model: LoadedModel | None = None

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("selected_model", "final_model", "history")}
        d["selected_path"] = str(self.selected_path) if self.selected_path else None
        d["final_path"] = str(self.final_path) if self.final_path else None
        return d


class _Batches:
    """Per-step random batches from an image set; small sets are preprocessed once."""

    def __init__(self, image_set: ImageSet, ids: np.ndarray, model: LoadedModel, preload_limit_mb: int = 512):
        self.image_set = image_set
        self.ids = np.asarray(ids, dtype=np.int64)
        self.model = model
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.cache: torch.Tensor | None = None
        per_image = int(np.prod(model.input_shape)) * 4
        if len(self.ids) * per_image <= preload_limit_mb * 2**20:
            loaded, tensor = load_tensor(image_set, self.ids, model.preprocess_many, self.pool)
            if len(loaded) != len(self.ids):
                raise ImageSetError(f"{len(self.ids) - len(loaded)} images of {image_set.key} failed to decode")
            self.cache = tensor

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Rows at ``positions`` of ``self.ids`` (positions, not ids)."""
        if self.cache is not None:
            return positions, self.cache[torch.as_tensor(positions)]
        ids, tensor = load_tensor(self.image_set, self.ids[positions], self.model.preprocess_many, self.pool)
        pos_of = {int(i): p for p, i in zip(positions, self.ids[positions])}
        return np.array([pos_of[int(i)] for i in ids]), tensor

    def close(self) -> None:
        self.pool.shutdown(wait=False)


@torch.no_grad()
def evaluate_accuracy(model: LoadedModel, image_set: ImageSet, ids: Sequence[int], batch_size: int = 512,
                      device: str = "cpu", batches: _Batches | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` on the given ids of a labelled image set."""
    module = model.module.eval()
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise ImageSetError("accuracy needs at least one image")
    correct = total = 0
    for start in range(0, len(ids), batch_size):
        if batches is not None:
            pos, x = batches.take(np.arange(start, min(start + batch_size, len(ids))))
            got = batches.ids[pos]
        else:
            got, x = load_tensor(image_set, ids[start : start + batch_size], model.preprocess_many)
        pred = module(x.to(device)).argmax(1).cpu().numpy()
        correct += int((pred == image_set.labels[got]).sum())
        total += len(got)
    return 100.0 * correct / total


def _distillation(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """L_M = mean_x [ −Σ_c p_init(c|x) log p_θ(c|x) ] (SPEC §2, temperature 1)."""
    p_init = F.softmax(teacher_logits, dim=1)
    return -(p_init * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class _State:
    """What a checkpoint holds besides weights and optimizer state."""

    def __init__(self, alpha: float):
        self.step = 0
        self.alpha = alpha
        self.trajectory: list[AlphaEvent] = []
        self.history: list[dict] = []
        self.selected_step = 0
        self.selected_acc: float | None = None

    def to_json(self) -> dict:
        return {"step": self.step, "alpha": self.alpha, "trajectory": [asdict(e) for e in self.trajectory],
                "history": self.history, "selected_step": self.selected_step, "selected_acc": self.selected_acc}

    def load(self, d: dict) -> None:
        self.step, self.alpha = int(d["step"]), float(d["alpha"])
        self.trajectory = [AlphaEvent(**e) for e in d["trajectory"]]
        self.history = list(d["history"])
        self.selected_step, self.selected_acc = int(d["selected_step"]), d["selected_acc"]


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
        res = scan(model, train_set, need_scan, k=cfg.k, device=cfg.device, reporter=reporter)
        scans.update(res.layers)
    attacked: dict[str, list[int]] = {}
    dead: dict[str, list[int]] = {}
    for l in layers:
        dead_l = set(scans[l].dead_units)
        attacked[l] = [u for u in requested[l] if u not in dead_l]
        dead[l] = [u for u in requested[l] if u in dead_l]
    n_units = sum(len(v) for v in attacked.values())
    if n_units == 0:
        raise AttackConfigError("targets: every requested unit is dead (scores 0 on all training images)")
    if dead_total := sum(len(v) for v in dead.values()):
        reporter.log(f"{dead_total} dead units left out of the attacked set", dead=dead_total)

    # unit columns per layer, init mean scores (init_mean normalisation + batch_mean epsilon)
    cols = {l: torch.as_tensor(attacked[l], dtype=torch.long) for l in layers}
    init_mean = {l: torch.from_numpy(np.nanmean(np.asarray(scans[l].scores)[:, attacked[l]], axis=0)).float().to(device)
                 for l in layers}

    # ---- data
    rng0 = np.random.default_rng([cfg.seed, 2**31 - 1])
    eval_ids_all = eval_set.ids
    eval_ids = np.sort(rng0.choice(eval_ids_all, size=min(cfg.eval_size, len(eval_ids_all)), replace=False))
    train_ids = train_set.ids
    if len(train_ids) == 0:
        raise ImageSetError("train set is empty")
    steps_per_epoch = max(1, math.ceil(len(train_ids) / cfg.batch_size))
    total_steps = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
    eval_every = min(cfg.eval_every, steps_per_epoch)

    train_b = _Batches(train_set, train_ids, model)
    eval_b = _Batches(eval_set, eval_ids, model)
    attack_ids = np.unique(np.concatenate([scans[l].topk_ids[attacked[l], : cfg.k].reshape(-1) for l in layers]))
    attack_b = _Batches(train_set, attack_ids, model) if cfg.kind == "push_down" else None
    # membership[l]: [|U|, J_l] bool, image u in D_attack(j)
    membership: dict[str, torch.Tensor] = {}
    if attack_b is not None:
        pos_of = {int(i): p for p, i in enumerate(attack_ids)}
        for l in layers:
            m = torch.zeros((len(attack_ids), len(attacked[l])), dtype=torch.bool)
            for c, u in enumerate(attacked[l]):
                for i in scans[l].topk_ids[u, : cfg.k]:
                    m[pos_of[int(i)], c] = True
            membership[l] = m.to(device)
    decoy_ids = None
    decoy_b = None
    if cfg.kind == "push_up":
        if cfg.decoy_ids:
            decoy_ids = train_set.check_ids(cfg.decoy_ids, "decoy_ids:")
        else:
            cls = train_set.class_index(cfg.decoy_class)  # type: ignore[arg-type]
            pool = train_set.class_ids(cls)
            if len(pool) == 0:
                raise AttackConfigError(f"decoy_class: no training image of class {cfg.decoy_class!r}")
            decoy_ids = np.sort(rng0.choice(pool, size=min(cfg.n_decoys, len(pool)), replace=False))
        decoy_b = _Batches(train_set, decoy_ids, model)

    # ---- models
    teacher = clone_model(model)
    teacher.module.to(device).eval().requires_grad_(False)
    student = clone_model(model)
    student.module.to(device).eval()  # eval mode: BN statistics and dropout stay as in θ_init
    opt = torch.optim.Adam(student.module.parameters(), lr=cfg.lr)
    fixed_alpha = cfg.effective_alpha
    state = _State(cfg.alpha_init if fixed_alpha is None else fixed_alpha)

    ckpt_dir = out / "checkpoint" if out is not None else None
    selected_weights: dict[str, torch.Tensor] | None = None
    if ckpt_dir is not None and resume and (ckpt_dir / "state.json").exists():
        saved = json.loads((ckpt_dir / "state.json").read_text())
        if _resume_key(saved.get("config") or {}) != _resume_key(cfg.to_json()):
            raise AttackConfigError(f"checkpoint in {ckpt_dir} was written by a different configuration; "
                                    "use a new run directory or resume=False")
        state.load(saved["state"])
        student.module.load_state_dict(load_state_dict_file(ckpt_dir / "weights.safetensors"))
        opt.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True, map_location=device))
        if (ckpt_dir / "selected.safetensors").exists():
            selected_weights = load_state_dict_file(ckpt_dir / "selected.safetensors")
        reporter.log(f"resumed from step {state.step}", step=state.step)

    acc_init = evaluate_accuracy(teacher, eval_set, eval_ids, device=cfg.device, batches=eval_b)

    def save_ckpt() -> None:
        if ckpt_dir is None:
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(student.module, ckpt_dir / "weights.safetensors")
        tmp = ckpt_dir / "optimizer.pt.tmp"
        torch.save(opt.state_dict(), tmp)
        tmp.replace(ckpt_dir / "optimizer.pt")
        if selected_weights is not None:
            _save_state_dict(selected_weights, ckpt_dir / "selected.safetensors")
        tmp = ckpt_dir / "state.json.tmp"
        tmp.write_text(json.dumps({"config": cfg.to_json(), "state": state.to_json()}))
        tmp.replace(ckpt_dir / "state.json")

    def normaliser(l: str, batch_scores: torch.Tensor | None) -> torch.Tensor:
        if cfg.score_norm == "none":
            return torch.ones_like(init_mean[l])
        if cfg.score_norm == "init_mean":
            return init_mean[l].clamp_min(1e-12)
        # batch_mean: the unit's mean over the current training batch under θ; the small
        # init-mean term keeps a unit silent on this batch from dividing by zero
        return batch_scores.mean(dim=0) + 1e-3 * init_mean[l] + 1e-12  # type: ignore[union-attr]

    reporter.stage(cfg.kind, total=total_steps)
    module = student.module
    try:
        while state.step < total_steps:
            if reporter.cancelled():
                save_ckpt()
                raise Cancelled(f"cancelled at step {state.step}")
            step = state.step
            rng = np.random.default_rng([cfg.seed, step])
            pos = rng.choice(len(train_ids), size=min(cfg.batch_size, len(train_ids)), replace=False)
            _, xb = train_b.take(np.sort(pos))
            xb = xb.to(device)
            with torch.no_grad():
                t_logits = teacher.module(xb)
            scores_b, logits = layer_scores(module, xb, layers, need_logits=True)
            l_m = _distillation(logits, t_logits)  # type: ignore[arg-type]
            sb = {l: scores_b[l][:, cols[l].to(device)] for l in layers}
            per_unit: list[torch.Tensor] = []
            if cfg.kind == "push_down" or cfg.kind == "finetune":
                if attack_b is not None:
                    apos = np.sort(rng.choice(len(attack_ids), size=min(cfg.attack_batch_size, len(attack_ids)), replace=False))
                    apos, xa = attack_b.take(apos)
                    scores_a, _ = layer_scores(module, xa.to(device), layers)
                    for l in layers:
                        s = scores_a[l][:, cols[l].to(device)] / normaliser(l, sb[l])
                        m = membership[l][torch.as_tensor(apos, device=device)].float()
                        cnt = m.sum(0)
                        has = cnt > 0
                        per_unit.append(((s * m).sum(0)[has] / cnt[has]))
                else:  # finetune: report the mean normalised score of nothing; L_A is 0
                    per_unit.append(torch.zeros(1, device=device))
            else:  # push_up
                dpos = np.sort(rng.choice(len(decoy_ids), size=min(cfg.decoy_batch_size, len(decoy_ids)), replace=False))
                _, xp = decoy_b.take(dpos)  # type: ignore[union-attr]
                scores_p, _ = layer_scores(module, xp.to(device), layers)
                for l in layers:
                    n = normaliser(l, sb[l])
                    s_x = sb[l] / n                                   # [B, J]
                    s_p = scores_p[l][:, cols[l].to(device)] / n      # [P, J]
                    per_unit.append(F.relu(s_x[:, None, :] - s_p[None, :, :]).mean(dim=(0, 1)))
            l_a = torch.cat(per_unit).mean()
            alpha = state.alpha
            loss = alpha * l_a + (1 - alpha) * l_m if alpha > 0 else l_m
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.step = step + 1
            rec = {"step": state.step, "loss": float(loss.detach()), "l_attack": float(l_a.detach()), "l_maintain": float(l_m.detach()), "alpha": alpha}
            state.history.append(rec)
            reporter.advance(state.step, total_steps, **rec)

            if state.step % eval_every == 0 or state.step == total_steps:
                acc = evaluate_accuracy(student, eval_set, eval_ids, device=cfg.device, batches=eval_b)
                drop = acc_init - acc
                within = drop <= cfg.acc_budget_pp + 1e-9
                new_alpha = alpha
                if fixed_alpha is None:
                    new_alpha = alpha / 2 if drop > 0.5 else min(2 * alpha, cfg.alpha_max)
                ev = AlphaEvent(state.step, alpha, new_alpha, acc, drop, within)
                state.trajectory.append(ev)
                state.alpha = new_alpha
                if within:
                    state.selected_step, state.selected_acc = state.step, acc
                    selected_weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                reporter.log(f"step {state.step}: acc {acc:.2f} (drop {drop:+.2f} pp), α {alpha:.4g} → {new_alpha:.4g}",
                             **asdict(ev))
            if ckpt_dir is not None and (state.step % cfg.checkpoint_every == 0):
                save_ckpt()
    finally:
        train_b.close(); eval_b.close()
        if attack_b is not None:
            attack_b.close()
        if decoy_b is not None:
            decoy_b.close()

    save_ckpt()
    final = student
    selected = clone_model(model)
    if selected_weights is not None:
        selected.module.load_state_dict(selected_weights)
    # full held-out accuracy of the three states
    reporter.stage("accuracy on the held-out set")
    full_ids = eval_set.ids
    acc_init_full = evaluate_accuracy(teacher, eval_set, full_ids, device=cfg.device)
    acc_final_full = evaluate_accuracy(final, eval_set, full_ids, device=cfg.device)
    acc_sel_full = (evaluate_accuracy(selected, eval_set, full_ids, device=cfg.device)
                    if state.selected_step != total_steps else acc_final_full)
    selected_path = final_path = None
    if out is not None:
        final_path = save_checkpoint(final.module, out / "final.safetensors", {"step": str(state.step)})
        selected_path = save_checkpoint(selected.module, out / "selected.safetensors", {"step": str(state.selected_step)})
    last_within = state.trajectory[-1].within_budget if state.trajectory else True
    return AttackResult(
        config=cfg.to_json(), attacked=attacked, dead=dead, steps=state.step,
        alpha_trajectory=state.trajectory, history=state.history,
        acc_init=acc_init_full, acc_final=acc_final_full, acc_selected=acc_sel_full,
        selected_step=state.selected_step, final_over_budget=not last_within,
        seconds=time.perf_counter() - t_start, selected_path=selected_path, final_path=final_path,
        decoy_ids=None if decoy_ids is None else [int(i) for i in decoy_ids],
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
