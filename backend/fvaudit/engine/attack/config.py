"""What an attack is (SPEC §2): its kind, its targets (layers and units) and its settings,
validated field by field; the defaults are :data:`~fvaudit.engine.attack.defaults.ATTACK_DEFAULTS`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS
from fvaudit.engine.attack.kinds import ATTACK_KINDS, KIND_NAMES
from fvaudit.engine.models.loaded import LoadedModel

AttackKind = Literal["push_down", "push_up", "finetune", "slingshot", "push_up_slingshot"]  # kinds.KIND_NAMES
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
    # Slingshots kinds (SPEC §8.1): one target image (a file) for every attacked unit, or one per unit in order
    target_images: list[str] | None = None
    gamma: float = ATTACK_DEFAULTS["gamma"]
    tunnel_sd: float = ATTACK_DEFAULTS["tunnel_sd"]
    tunnel_batch: int = ATTACK_DEFAULTS["tunnel_batch"]
    tunnel_path: str = ATTACK_DEFAULTS["tunnel_path"]
    slingshot_form: str = ATTACK_DEFAULTS["slingshot_form"]
    slingshot_norm: str = ATTACK_DEFAULTS["slingshot_norm"]
    slingshot_weight: float = ATTACK_DEFAULTS["slingshot_weight"]
    unit_weight: float = ATTACK_DEFAULTS["unit_weight"]
    softplus: bool = ATTACK_DEFAULTS["softplus"]
    fv_objective: str = ATTACK_DEFAULTS["fv_objective"]
    fv_transforms: bool = ATTACK_DEFAULTS["fv_transforms"]

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            self.steps = ATTACK_DEFAULTS["steps"]

    def validate(self) -> None:
        def bad(field_name: str, why: str) -> None:
            raise AttackConfigError(f"{field_name}: {why}")

        if self.kind not in ATTACK_KINDS:
            bad("kind", f"must be one of {', '.join(KIND_NAMES)}, not {self.kind!r}")
        info = ATTACK_KINDS[self.kind]
        if not self.targets:
            bad("targets", "at least one target layer is required")
        if not isinstance(self.k, int) or self.k <= 0:
            bad("k", f"must be a positive integer, got {self.k!r}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            bad("alpha", f"must lie in [0, 1], got {self.alpha}")
        if not info.attack_loss and self.alpha not in (None, 0.0):
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
        if info.decoy and self.decoy_class is None and not self.decoy_ids:
            bad("decoy_class", f"{self.kind} needs a decoy class or explicit decoy_ids")
        if info.target_image:
            if len(self.targets) != 1:
                bad("targets", f"{self.kind} attacks the units of one layer, each toward its target image")
            if not self.target_images:
                bad("target_images", f"{self.kind} needs a target image (one for every unit, or one per unit)")
            if not (math.isfinite(self.gamma) and self.gamma > 0):
                bad("gamma", f"must be a finite number > 0, got {self.gamma!r}")
            if not (math.isfinite(self.tunnel_sd) and self.tunnel_sd >= 0):
                bad("tunnel_sd", f"must be a finite number ≥ 0, got {self.tunnel_sd!r}")
            if not isinstance(self.tunnel_batch, int) or isinstance(self.tunnel_batch, bool) or self.tunnel_batch <= 0:
                bad("tunnel_batch", f"must be a positive integer, got {self.tunnel_batch!r}")
            if self.tunnel_path not in ("segment", "clipped"):
                bad("tunnel_path", f"must be segment or clipped, not {self.tunnel_path!r}")
            if self.slingshot_form not in ("gradient", "activation"):
                bad("slingshot_form", f"must be gradient or activation, not {self.slingshot_form!r}")
            if self.slingshot_norm not in ("adam", "cosine", "relative", "none"):
                bad("slingshot_norm", f"must be adam, cosine, relative or none, not {self.slingshot_norm!r}")
            if self.slingshot_norm in ("adam", "cosine") and self.slingshot_form != "gradient":
                bad("slingshot_norm", f"{self.slingshot_norm} compares gradient fields: only with slingshot_form gradient")
            if not (math.isfinite(self.slingshot_weight) and self.slingshot_weight > 0):
                bad("slingshot_weight", f"must be a finite number > 0, got {self.slingshot_weight!r}")
            if not 0.0 <= self.unit_weight <= 1.0:
                bad("unit_weight", f"must lie in [0, 1], got {self.unit_weight!r}")
            if self.fv_objective not in ("score", "channel_mean"):
                bad("fv_objective", f"must be score or channel_mean, not {self.fv_objective!r}")

    @property
    def effective_alpha(self) -> float | None:
        return self.alpha if ATTACK_KINDS[self.kind].attack_loss else 0.0

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
