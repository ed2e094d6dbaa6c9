"""Types shared by the job kinds' specs (validated by pydantic → 422 naming the field).

Torch-free: the API imports this module. Each kind's own spec lives in its module under
:mod:`fvaudit.jobs.kinds`; the request-time checks against the database in
:mod:`fvaudit.jobs.validate`. Specs are strict: booleans are not integers, strings are
not numbers, NaN and infinities are refused.

:class:`AttackParams` has the field names of the engine's
:class:`~fvaudit.engine.attack.config.AttackConfig` and takes its defaults from the one
torch-free :data:`~fvaudit.engine.attack.defaults.ATTACK_DEFAULTS`, so the mapping to
the engine is ``AttackConfig(targets=..., device=..., **params.engine_fields())``.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo,
                      WithJsonSchema, field_validator, model_validator)

from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS
from fvaudit.engine.attack.kinds import ATTACK_KINDS, FIELD_USERS, KIND_NAMES, kinds_using

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
#: a push-up decoy class: its index (a JSON number) or its name (a string; "5" is a name, not
#: index 5: strings are never numbers here, as everywhere in the specs)
def _decoy_class(v: Any) -> int | str:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError("a decoy class is a class index (a number) or a class name (a string)")
    if isinstance(v, int) and not 0 <= v <= MAX_INT:
        raise ValueError(f"a class index lies in 0 .. {MAX_INT}")
    if isinstance(v, str) and not 1 <= len(v) <= 200:
        raise ValueError("a class name has 1 to 200 characters")
    return _no_nul(v) if isinstance(v, str) else v


#: one validator (not a union), so that an error names the field alone, not a union member
DecoyClass = Annotated[int | str, PlainValidator(_decoy_class), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_INT},
               {"type": "string", "minLength": 1, "maxLength": 200}]})]


class Strict(BaseModel):
    """Base of every spec and request body: unknown fields, non-finite numbers and type
    coercions refused (``true`` is not 1, ``"5"`` is not 5, ``1.0`` is not an integer).

    One base, so that a field added later is strict without anyone remembering to say so;
    the request bodies of the API (``api/schemas.py``) derive from it too.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def default_of(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def unused_given(obj: BaseModel, rules: dict[str, tuple[bool, str]]) -> tuple[str, str] | None:
    """The rule for fields a spec's variant does not use (an attack kind, a detection without
    a reference): such a field must be left at its default; a different value is refused
    (422 naming the field and why) rather than silently ignored, since a user who set it
    believed it changed something. ``rules``: field → (used here?, why not). Returns the
    first offending (field, message), in the model's field order, else None.

    The value, not its presence, decides: a spec that spells out every default (the
    dashboard's forms, a stored spec re-validated by the worker) passes.
    """
    for name in type(obj).model_fields:
        if name in rules and not rules[name][0]:
            value = getattr(obj, name)
            default = default_of(type(obj), name)
            if value != default:
                return name, (f"{rules[name][1]}: leave {name} out"
                              + ("" if default is None else f" (or at its default {default!r})"))
    return None


def unique_layers(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("a layer is listed twice")
    return v


#: layer names or labels, each at most once (the length bounds are the field's)
UniqueLayers = Annotated[list[LayerName], AfterValidator(unique_layers)]


#: attack fields only some attack kinds use: field → (the kinds that use it, why the others do not),
#: read from the engine's kinds table (:mod:`fvaudit.engine.attack.kinds`)
ATTACK_FIELD_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    f: (kinds_using(f), why) for f, (_, why) in FIELD_USERS.items()}

AttackKindName = Literal[KIND_NAMES]  # type: ignore[valid-type]


class TargetImageRef(Strict):
    """A Slingshots target image (SPEC §8.1): an uploaded image (``POST /target-images``), or one
    image of a registered image set."""

    artifact_id: DbId | None = Field(None, description="an uploaded target image (POST /api/v1/target-images)")
    image_set_id: DbId | None = Field(None, description="an image set holding the target")
    image_id: ImageIdx | None = Field(None, description="the target's image id in that set")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.artifact_id is None) == (self.image_set_id is None):
            raise ValueError("give artifact_id (an upload) or image_set_id with image_id, not both or neither")
        if (self.image_set_id is None) != (self.image_id is None):
            raise ValueError("image_set_id and image_id go together")
        return self


def attack_rules(kinds: list[str] | tuple[str, ...]) -> dict[str, tuple[bool, str]]:
    """:func:`unused_given` rules of an attack run as any of ``kinds`` (a sweep runs several)."""
    return {f: (any(k in users for k in kinds), why + f" (this attack: {', '.join(kinds)})")
            for f, (users, why) in ATTACK_FIELD_KINDS.items()}


class AttackParams(Strict):
    """One attack (SPEC §2) on the units of one or several layers of the model."""

    kind: AttackKindName = Field("push_down", description="attack kind (GET /job-kinds lists them); finetune = "
                                                          "the α = 0 baseline; slingshot and push_up_slingshot "
                                                          "manipulate the synthetic visualization (SPEC §8.1–8.2)")
    layers: UniqueLayers = Field(min_length=1, max_length=64, description="layer names or display labels "
                                                                             "(see GET /models/{id}/layers)")
    units: list[UnitIdx] | None = Field(None, min_length=1, max_length=65536,
                                        description="units to attack (only with exactly one layer); null = every "
                                                    "unit of every layer")
    k: int = Field(ATTACK_DEFAULTS["k"], gt=0, le=1000, description="|D_attack(j)|: the initial top-k pushed down")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="fixed α in [0, 1]; null = dynamic α")
    alpha_init: float = Field(ATTACK_DEFAULTS["alpha_init"], gt=0.0, le=1.0, description="dynamic α starts here")
    alpha_max: float = Field(ATTACK_DEFAULTS["alpha_max"], gt=0.0, le=1.0)
    alpha_factor: float = Field(ATTACK_DEFAULTS["alpha_factor"], gt=1.0, le=100.0,
                                description="dynamic α: ÷ factor when over budget, × factor (≤ α_max) otherwise")
    acc_budget_pp: float = Field(ATTACK_DEFAULTS["acc_budget_pp"], ge=0.0, le=100.0,
                                 description="allowed accuracy drop on the full validation set, percentage points")
    eval_every: int = Field(ATTACK_DEFAULTS["eval_every"], gt=0, le=1_000_000, description="steps between accuracy evaluations")
    eval_size: int = Field(ATTACK_DEFAULTS["eval_size"], ge=0, le=10_000_000,
                           description="validation images the α controller reads (0 = all)")
    lr: float = Field(ATTACK_DEFAULTS["lr"], gt=0.0, le=10.0, description="learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(ATTACK_DEFAULTS["lr_schedule"], description="cosine decays to 0 at the "
                                                                                     "last step")
    optimizer: Literal["adam", "sgd"] = Field(ATTACK_DEFAULTS["optimizer"],
                                              description="Adam (SPEC §2) or SGD with momentum 0.9")
    maintain: Literal["distill", "labels"] = Field(
        ATTACK_DEFAULTS["maintain"], description="L_M: distillation from θ_init (SPEC §2) or cross-entropy on the "
                                                 "training labels (an honest fine-tune's loss)")
    anchor_weight: float = Field(ATTACK_DEFAULTS["anchor_weight"], ge=0.0, le=1e6,
                                 description="loss variant: + w/2 · ‖θ − θ_init‖² (L2-SP); 0 = off")
    steps: int = Field(ATTACK_DEFAULTS["steps"], gt=0, le=10_000_000)
    batch_size: int = Field(ATTACK_DEFAULTS["batch_size"], gt=0, le=8192)
    attack_batch_size: int = Field(ATTACK_DEFAULTS["attack_batch_size"], gt=0, le=8192)
    decoy_batch_size: int = Field(ATTACK_DEFAULTS["decoy_batch_size"], gt=0, le=8192)
    score_norm: Literal["none", "init_mean", "batch_mean"] = Field(ATTACK_DEFAULTS["score_norm"], description="SPEC §2")
    n_decoys: int = Field(ATTACK_DEFAULTS["n_decoys"], gt=0, le=1_000_000)
    seed: int = Field(ATTACK_DEFAULTS["seed"], ge=0, le=MAX_INT)
    checkpoint_every: int = Field(ATTACK_DEFAULTS["checkpoint_every"], gt=0, le=10_000_000,
                                  description="steps between resumable checkpoints")
    decoy_ids: list[ImageIdx] | None = Field(None, min_length=1, max_length=100_000,
                                             description="push-up: explicit decoy image ids of the training set")
    decoy_class: DecoyClass | None = Field(None, validate_default=True,
                                           description="push-up: decoy class index (a number) or name (a string) "
                                                       "of the training set")
    target_images: list[TargetImageRef] | None = Field(
        None, min_length=1, max_length=4096, validate_default=True,
        description="Slingshots kinds: the target image, one for every attacked unit or one per unit in order")
    gamma: float = Field(ATTACK_DEFAULTS["gamma"], gt=0.0, le=1e9, description="γ of φ(q) = −γ/2·‖q_t − q‖²")
    tunnel_sd: float = Field(ATTACK_DEFAULTS["tunnel_sd"], ge=0.0, le=100.0, description="tunnel noise u ~ U(−sd, sd)")
    tunnel_batch: int = Field(ATTACK_DEFAULTS["tunnel_batch"], gt=0, le=4096, description="tunnel samples per unit per step")
    tunnel_path: Literal["segment", "clipped"] = Field(
        ATTACK_DEFAULTS["tunnel_path"], description="segment: q = p·q_t + u (SPEC §8.1); clipped: the path a "
                                                    "render's Adam takes, clip(q_t, ±r) + u")
    slingshot_form: Literal["gradient", "activation"] = Field(ATTACK_DEFAULTS["slingshot_form"],
                                                              description="L_S on the input gradient (double "
                                                                          "back-propagation) or on the activation")
    slingshot_norm: Literal["adam", "cosine", "relative", "none"] = Field(
        ATTACK_DEFAULTS["slingshot_norm"], description="cosine: 1 − cos(∇a, wanted field); relative: MSE ÷ mean "
                                                       "wanted²; none: the paper's MSE; adam: entrywise RMS-normalised")
    slingshot_weight: float = Field(ATTACK_DEFAULTS["slingshot_weight"], gt=0.0, le=1e6,
                                    description="combined attack: L_A = L_push-up + weight·L_S")
    unit_weight: float = Field(ATTACK_DEFAULTS["unit_weight"], ge=0.0, le=1.0,
                               description="w of L_P = w·MSE(a_j) + (1 − w)·MSE(A_l) on natural images")
    softplus: bool = Field(ATTACK_DEFAULTS["softplus"], description="ReLU → Softplus inside L_S while fine-tuning")
    fv_objective: Literal["score", "channel_mean"] = Field(ATTACK_DEFAULTS["fv_objective"],
                                                           description="the render objective the attack targets")
    fv_transforms: bool = Field(ATTACK_DEFAULTS["fv_transforms"],
                                description="L_S sees the render's random jitter, scale and rotation")

    @field_validator("alpha")
    @classmethod
    def _finetune_alpha(cls, v, info: ValidationInfo):
        kind = info.data.get("kind")
        if kind in ATTACK_KINDS and not ATTACK_KINDS[kind].attack_loss and v not in (None, 0.0):
            raise ValueError(f"a {kind} baseline has alpha = 0 (or null)")
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
        kind = info.data.get("kind")
        if kind in ATTACK_KINDS and ATTACK_KINDS[kind].decoy and v is None and not info.data.get("decoy_ids"):
            raise ValueError(f"{kind} needs a decoy: give decoy_class (or decoy_ids)")
        return v

    @field_validator("target_images")
    @classmethod
    def _targets(cls, v, info: ValidationInfo):
        kind = info.data.get("kind")
        if kind in ATTACK_KINDS and ATTACK_KINDS[kind].target_image:
            if v is None:
                raise ValueError(f"{kind} needs a target image: give target_images (one for every unit, or one per unit)")
            if len(info.data.get("layers") or []) != 1:
                raise ValueError(f"{kind} attacks the units of exactly one layer")
        return v

    def for_kind(self, kind: str, **update) -> "AttackParams":
        """These settings as an attack of ``kind``: the fields ``kind`` does not use back at their
        defaults (the α = 0 control of a push-down, a sweep's push-down and push-up of one base)."""
        reset = {f: default_of(AttackParams, f) for f, (users, _) in ATTACK_FIELD_KINDS.items() if kind not in users}
        if not ATTACK_KINDS[kind].attack_loss:
            reset["alpha"] = 0.0
        return self.model_copy(update={**reset, "kind": kind, **update})

    def engine_fields(self) -> dict:
        """Every field but the targets, by the engine's names: ``AttackConfig(**this)``. The target
        images are references here; the job resolves them to files (``target_images`` of the engine)."""
        return self.model_dump(exclude={"layers", "units", "target_images"})


class WeightsRef(Strict):
    """Weights produced by an attack job: its selected (within budget) or final state."""

    job_id: DbId
    state: Literal["selected", "final"] = "selected"

