"""Types shared by the job kinds' specs (validated by pydantic → 422 naming the field).

Torch-free: the API imports this module. Each kind's own spec lives in its module under
:mod:`fvaudit.jobs.kinds`; the request-time checks against the database in
:mod:`fvaudit.jobs.validate`. Specs are strict: booleans are not integers, strings are
not numbers, NaN and infinities are refused.

:class:`AttackParams` has the field names of the engine's
:class:`~fvaudit.engine.attacks.AttackConfig` and takes its defaults from the one
torch-free :data:`~fvaudit.engine.attack_defaults.ATTACK_DEFAULTS`, so the mapping to
the engine is ``AttackConfig(targets=..., device=..., **params.engine_fields())``.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fvaudit.engine.attack_defaults import ATTACK_DEFAULTS as D

MAX_INT = 2**31 - 1


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


SafeStr = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
LayerName = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_no_nul)]
PathStr = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_nul)]
DbId = Annotated[int, Field(ge=1, le=MAX_INT)]
ImageIdx = Annotated[int, Field(ge=0, le=MAX_INT)]
UnitIdx = Annotated[int, Field(ge=0, le=MAX_INT)]
Embedder = Annotated[str, Field(max_length=200, description="auto | none | efficientnet-lite0 | "
                                                            "open_clip:<model>:<tag>"), AfterValidator(_no_nul)]


class Strict(BaseModel):
    """Base of every spec: unknown fields, non-finite numbers and type coercions refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def unique_layers(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("a layer is listed twice")
    return v


class AttackParams(Strict):
    """One attack (SPEC §2) on the units of one or several layers of the model."""

    kind: Literal["push_down", "push_up", "finetune"] = Field("push_down", description="attack kind; finetune = "
                                                                                       "the α = 0 baseline")
    layers: list[LayerName] = Field(min_length=1, max_length=64, description="layer names or display labels "
                                                                             "(see GET /models/{id}/layers)")
    units: list[UnitIdx] | None = Field(None, min_length=1, max_length=65536,
                                        description="units to attack (only with exactly one layer); null = every "
                                                    "unit of every layer")
    k: int = Field(D["k"], gt=0, le=1000, description="|D_attack(j)|: the initial top-k pushed down")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="fixed α in [0, 1]; null = dynamic α")
    alpha_init: float = Field(D["alpha_init"], gt=0.0, le=1.0, description="dynamic α starts here")
    alpha_max: float = Field(D["alpha_max"], gt=0.0, le=1.0)
    alpha_factor: float = Field(D["alpha_factor"], gt=1.0, le=100.0,
                                description="dynamic α: ÷ factor when over budget, × factor (≤ α_max) otherwise")
    acc_budget_pp: float = Field(D["acc_budget_pp"], ge=0.0, le=100.0,
                                 description="allowed accuracy drop on the full validation set, percentage points")
    eval_every: int = Field(D["eval_every"], gt=0, le=1_000_000, description="steps between accuracy evaluations")
    eval_size: int = Field(D["eval_size"], ge=0, le=10_000_000,
                           description="validation images the α controller reads (0 = all)")
    lr: float = Field(D["lr"], gt=0.0, le=10.0, description="Adam learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(D["lr_schedule"], description="cosine decays to 0 at the "
                                                                                     "last step")
    anchor_weight: float = Field(D["anchor_weight"], ge=0.0, le=1e6,
                                 description="loss variant: + w/2 · ‖θ − θ_init‖² (L2-SP); 0 = off")
    steps: int = Field(D["steps"], gt=0, le=10_000_000)
    batch_size: int = Field(D["batch_size"], gt=0, le=8192)
    attack_batch_size: int = Field(D["attack_batch_size"], gt=0, le=8192)
    decoy_batch_size: int = Field(D["decoy_batch_size"], gt=0, le=8192)
    score_norm: Literal["none", "init_mean", "batch_mean"] = Field(D["score_norm"], description="SPEC §2")
    n_decoys: int = Field(D["n_decoys"], gt=0, le=1_000_000)
    seed: int = Field(D["seed"], ge=0, le=MAX_INT)
    checkpoint_every: int = Field(D["checkpoint_every"], gt=0, le=10_000_000,
                                  description="steps between resumable checkpoints")
    decoy_ids: list[ImageIdx] | None = Field(None, min_length=1, max_length=100_000,
                                             description="push-up: explicit decoy image ids of the training set")
    decoy_class: int | str | None = Field(None, validate_default=True,
                                          description="push-up: decoy class index (or name) of the training set")

    @field_validator("layers")
    @classmethod
    def _layers_unique(cls, v):
        return unique_layers(v)

    @field_validator("alpha")
    @classmethod
    def _finetune_alpha(cls, v, info: ValidationInfo):
        if info.data.get("kind") == "finetune" and v not in (None, 0.0):
            raise ValueError("a finetune baseline has alpha = 0 (or null)")
        return v

    @field_validator("units")
    @classmethod
    def _units(cls, v, info: ValidationInfo):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("unit indices must be unique")
        if v is not None and len(info.data.get("layers") or []) != 1:
            raise ValueError("units can be chosen only when exactly one layer is attacked")
        return v

    @field_validator("decoy_class")
    @classmethod
    def _decoy(cls, v, info: ValidationInfo):
        if isinstance(v, str):
            _no_nul(v)
            if not v or len(v) > 200:
                raise ValueError("class name must have 1 to 200 characters")
        if isinstance(v, int) and not 0 <= v <= MAX_INT:
            raise ValueError("class index must be >= 0")
        if info.data.get("kind") == "push_up" and v is None and not info.data.get("decoy_ids"):
            raise ValueError("push_up needs a decoy: give decoy_class (or decoy_ids)")
        return v

    def engine_fields(self) -> dict:
        """Every field but the targets, by the engine's names: ``AttackConfig(**this)``."""
        return self.model_dump(exclude={"layers", "units"})


class WeightsRef(Strict):
    """Weights produced by an attack job: its selected (within budget) or final state."""

    job_id: DbId
    state: Literal["selected", "final"] = "selected"

