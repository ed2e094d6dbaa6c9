"""Job specs: what a client may ask for, validated by pydantic (→ 422 naming the field).

Torch-free: the API imports this module. Request-time checks that need the database
(does the model exist, is the layer one of its layers, is the unit in range, ...) live
in :mod:`fvaudit.jobs.validate`.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator)

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

JOB_KINDS = ("scan", "attack", "metrics", "audit")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AttackParams(_Strict):
    """One attack (SPEC §2) on one layer of the model."""

    kind: Literal["push_down", "push_up", "finetune"] = Field("push_down", description="attack kind; finetune = the α=0 baseline")
    layer: LayerName = Field(description="layer name or display label (see GET /models/{id}/layers)")
    units: list[UnitIdx] | None = Field(None, min_length=1, max_length=65536,
                                        description="units to attack; null = every unit of the layer")
    k: int = Field(10, gt=0, le=1000, description="|D_attack(j)|: the initial top-k pushed down")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="fixed α in [0, 1]; null = dynamic α")
    alpha_max: float = Field(0.99, gt=0.0, le=1.0)
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="Adam learning rate")
    steps: int = Field(400, gt=0, le=10_000_000)
    batch_size: int = Field(256, gt=0, le=8192)
    eval_every: int = Field(25, gt=0, le=1_000_000, description="steps between accuracy evaluations (dynamic α)")
    eval_size: int = Field(2000, gt=0, le=10_000_000)
    acc_budget_pp: float = Field(0.5, ge=0.0, le=100.0, description="allowed accuracy drop, percentage points")
    seed: int = Field(0, ge=0, le=MAX_INT)
    score_norm: Literal["none", "init_mean", "batch_mean"] = "batch_mean"
    n_decoys: int = Field(100, gt=0, le=1_000_000)
    checkpoint_every: int = Field(100, gt=0, le=10_000_000, description="steps between resumable checkpoints")
    decoy_ids: list[ImageIdx] | None = Field(None, min_length=1, max_length=100_000,
                                             description="push-up: explicit decoy image ids of the training set")
    decoy_class: int | str | None = Field(None, validate_default=True,
                                          description="push-up: decoy class index (or name) of the training set")

    @field_validator("alpha")
    @classmethod
    def _finetune_alpha(cls, v, info: ValidationInfo):
        if info.data.get("kind") == "finetune" and v not in (None, 0.0):
            raise ValueError("a finetune baseline has alpha = 0 (or null)")
        return v

    @field_validator("units")
    @classmethod
    def _unique_units(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("unit indices must be unique")
        return v

    @field_validator("decoy_class")
    @classmethod
    def _decoy(cls, v, info: ValidationInfo):
        if isinstance(v, str):
            _no_nul(v)
            if not v or len(v) > 200:
                raise ValueError("class name must have 1 to 200 characters")
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_INT:
            raise ValueError("class index must be >= 0")
        if info.data.get("kind") == "push_up" and v is None and not info.data.get("decoy_ids"):
            raise ValueError("push_up needs a decoy: give decoy_class (or decoy_ids)")
        return v


class WeightsRef(_Strict):
    """Weights produced by an attack job: its selected (within budget) or final state."""

    job_id: DbId
    state: Literal["selected", "final"] = "selected"


class ScanSpec(_Strict):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"model_id": 1, "image_set_ids": [1, 2], "layers": ["relu3"], "k": 10}]})
    model_id: DbId
    image_set_ids: list[DbId] = Field(min_length=1, max_length=16)
    layers: list[LayerName] = Field(min_length=1, max_length=64)
    k: int = Field(10, gt=0, le=1000)
    batch_size: int = Field(256, gt=0, le=8192)
    weights_from: WeightsRef | None = Field(None, description="scan an attack's weights instead of the model's")
    checkpoint_path: PathStr | None = Field(None, description="a checkpoint file on the server, under an allowed root")


class AttackSpec(_Strict):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"model_id": 1, "train_set_id": 1, "val_set_id": 2,
         "attack": {"kind": "push_down", "layer": "relu3", "steps": 100}}]})
    name: Name | None = None
    model_id: DbId
    train_set_id: DbId
    val_set_id: DbId
    attack: AttackParams
    init_scan_job_id: DbId | None = Field(None, description="a scan job of θ_init on the training set (reused)")
    checkpoint_path: PathStr | None = None


class MetricsSpec(_Strict):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"before_scan_job_id": 3, "after_scan_job_id": 5, "val_set_id": 2, "train_set_id": 1,
         "attack_job_id": 4, "k_clip": 5, "embedder": "auto"}]})
    name: Name | None = None
    before_scan_job_id: DbId
    after_scan_job_id: DbId
    val_set_id: DbId = Field(description="D_τ: the image set the metrics rank over (in both scans)")
    train_set_id: DbId | None = Field(None, description="also report top-k before/after on this set")
    attack_job_id: DbId | None = Field(None, description="attack whose attacked/dead units and accuracy to report")
    layers: list[LayerName] | None = Field(None, min_length=1, max_length=64)
    k_clip: int = Field(5, gt=0, le=100)
    embedder: SafeStr = Field("auto", max_length=200, description="auto | none | efficientnet-lite0 | open_clip:<model>:<tag>")


class AuditSpec(_Strict):
    """What the launch form sends: scan θ_init → attack → scan θ_final → metrics, as one request."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"name": "conv3 push-down", "model_id": 1, "train_set_id": 1, "val_set_id": 2,
         "attack": {"kind": "push_down", "layer": "relu3", "units": None, "k": 10, "alpha": None, "lr": 1e-4,
                    "steps": 200, "batch_size": 256, "seed": 0, "score_norm": "batch_mean",
                    "decoy_class": None, "decoy_ids": None},
         "k_clip": 5, "embedder": "auto"}]})
    name: Name | None = None
    model_id: DbId
    train_set_id: DbId
    val_set_id: DbId
    attack: AttackParams
    k_clip: int = Field(5, gt=0, le=100)
    embedder: SafeStr = Field("auto", max_length=200)
    scan_batch_size: int = Field(256, gt=0, le=8192)
    checkpoint_path: PathStr | None = None


class ScanJobCreate(_Strict):
    kind: Literal["scan"]
    spec: ScanSpec


class AttackJobCreate(_Strict):
    kind: Literal["attack"]
    spec: AttackSpec


class MetricsJobCreate(_Strict):
    kind: Literal["metrics"]
    spec: MetricsSpec


class AuditJobCreate(_Strict):
    kind: Literal["audit"]
    spec: AuditSpec


JobCreate = Annotated[Union[AuditJobCreate, ScanJobCreate, AttackJobCreate, MetricsJobCreate],
                      Field(discriminator="kind")]

SPEC_MODELS: dict[str, type[BaseModel]] = {"scan": ScanSpec, "attack": AttackSpec, "metrics": MetricsSpec,
                                           "audit": AuditSpec}
