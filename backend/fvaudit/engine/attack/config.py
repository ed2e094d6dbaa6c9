"""What an attack is (SPEC §2): its kind, its targets (layers and units) and its settings,
validated field by field; the defaults are :data:`~fvaudit.engine.attack.defaults.ATTACK_DEFAULTS`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS
from fvaudit.engine.models.loaded import LoadedModel

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
    optimizer: str = ATTACK_DEFAULTS["optimizer"]             # "adam" | "sgd" (momentum 0.9)
    maintain: str = ATTACK_DEFAULTS["maintain"]               # L_M: "distill" (SPEC §2) | "labels" (cross-entropy)
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
        if self.optimizer not in ("adam", "sgd"):
            bad("optimizer", f"must be adam or sgd, not {self.optimizer!r}")
        if self.maintain not in ("distill", "labels"):
            bad("maintain", f"must be distill or labels, not {self.maintain!r}")
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
