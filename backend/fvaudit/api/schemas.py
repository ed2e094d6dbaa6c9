"""Response (and non-job request) models of the HTTP API; docs/API.md is their prose."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from fvaudit.jobs.specs import Name, PathStr, Strict

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    mode: Literal["embedded", "service"]
    version: str


class Me(BaseModel):
    user: str
    is_admin: bool
    id: int


class RegistryEntry(BaseModel):
    name: str
    source: str
    offline: bool
    description: str


class LayerOut(BaseModel):
    name: str
    label: str | None = None
    kind: Literal["conv", "tokens", "fc"]
    shape: list[int]
    units: int
    module_type: str


class ModelUsage(BaseModel):
    runs: int = Field(0, description="runs (audits) of the model")
    models: int = Field(0, description="models pruned from it")
    jobs: int = Field(0, description="jobs of its own that name it (scans, visualizations, prunes, detections)")


class HiddenPatch(BaseModel):
    """PATCH body of runs, models, image sets and sweeps: hide (or show again) a row."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"hidden": True}]})
    hidden: StrictBool = Field(description="true: left out of lists and pickers (still reachable by its address)")


class ModelOut(BaseModel):
    id: int
    name: str
    registry_name: str
    source: str
    weights: str
    pretrained: bool
    input_shape: list[int]
    n_classes: int
    n_layers: int
    created_at: datetime
    parent_model_id: int | None = Field(None, description="a pruned model's parent (SPEC §5)")
    prune_job_id: int | None = Field(None, description="the prune job that made (or will make) this model")
    prune: dict[str, Any] | None = Field(None, description="what the prune job recorded: method, rate, weight and "
                                                           "filter pruning rates, fine-tune schedule, accuracies")
    status: Literal["ready", "pending", "failed"] = Field(
        "ready", description="pending: a pruned model whose prune job has not produced weights yet; failed: that job "
                             "failed or was cancelled (status_reason says which)")
    status_reason: str | None = Field(None, description="why the model is not ready")
    hidden: bool = Field(False, description="left out of GET /models unless include_hidden=true")
    usage: ModelUsage = Field(default_factory=lambda: ModelUsage(),
                              description="what derives from the model (a model with any cannot be deleted)")


class ModelCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "demo CNN", "registry_name": "fmnist-cnn"}]})
    name: Name
    registry_name: Name = Field(description="a registry name (GET /models/registry) or any torchvision classifier")
    pretrained: bool = Field(True, description="use the registry's pretrained weights (else random init)")
    checkpoint_path: PathStr | None = Field(None, description="weights from a file on the server, under an allowed root")


class ImageSetOut(BaseModel):
    id: int
    name: str
    source: str
    kind: str
    size: int
    limit: int | None
    classes: list[str]
    status: Literal["ready", "indexing", "failed"] = Field(
        description="indexing: its register_images job (job_id) is listing and checking the folder")
    job_id: int | None = Field(description="the registration job of a folder set")
    error: str | None = Field(description="why the registration failed")
    created_at: datetime
    hidden: bool = Field(False, description="left out of GET /image-sets unless include_hidden=true")


class ImageSetDetail(ImageSetOut):
    skipped: list[dict[str, Any]]


class ImageSetCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Fashion-MNIST test (2000)", "source": "fashion-mnist:test", "limit": 2000}]})
    name: Name
    source: PathStr = Field(description="fashion-mnist:train | fashion-mnist:test | a folder of class subfolders "
                                        "under an allowed root")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="keep N images: a seeded sample stratified "
                                                                           "by class (not the first N)")


class Sample(BaseModel):
    image_id: int
    label: int
    label_name: str
    thumb_url: str
    full_url: str


class StepOut(BaseModel):
    key: str
    label: str


class JobKindOut(BaseModel):
    """A job kind of the registry: what it is, its chain steps, the spec's defaults and JSON schema."""

    kind: str
    title: str
    description: str
    runnable: bool
    chain: bool
    steps: list[StepOut]
    defaults: dict[str, Any]
    spec_schema: dict[str, Any]


class Job(BaseModel):
    id: int
    kind: str
    step_key: str | None = Field(description="the chain step this job is (e.g. scan_init); null when standalone")
    label: str = Field(description="human label of the job or chain step")
    status: JobStatus
    progress: dict[str, Any]
    error: str | None
    spec: dict[str, Any]
    run_id: int | None
    parent_id: int | None
    children: list[int]
    depends_on_id: int | None
    group_job_id: int | None = Field(description="the job this one is a member of (a scan shard → its scan)")
    seq: int
    attempts: int
    worker: str | None
    cancel_requested: bool
    heartbeat_at: datetime | None
    result: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    hidden: bool = Field(False, description="a hidden sweep: left out of lists unless include_hidden=true")


class ImageSetAccepted(ImageSetDetail):
    job: Job = Field(description="the register_images job indexing the folder (follow its events)")


class JobEventOut(BaseModel):
    id: int
    job_id: int
    type: str
    data: dict[str, Any]
    created_at: datetime


class MetricMeans(BaseModel):
    """The SPEC §3 measures of an attack, each a mean over the attacked units (null: undefined)."""

    clip_delta: float | None = None
    kendall_tau: float | None = None
    clip_w: float | None = None
    kendall_tau_w: float | None = None
    topk_overlap: float | None = None


class Headline(MetricMeans):
    acc_init: float | None = None
    acc_final: float | None = None
    delta_acc: float | None = None


class AttackOutcome(BaseModel):
    """Where the attack ended against its accuracy budget (SPEC §2)."""

    selected_step: int | None = Field(description="the selected state's step (0 = θ_init); null without an attack")
    final_step: int | None = Field(description="the last step's state")
    selected_is_init: bool = Field(description="no evaluated state stayed within the budget: the selected state is "
                                               "θ_init, so the 'selected' results show no attack")
    final_over_budget: bool = Field(description="the final state's accuracy drop exceeds the budget")
    budget_pp: float | None = Field(description="the accuracy budget (pp on the full validation set)")
    message: str | None = Field(description="when selected_is_init: what happened, in words")


class RunListItem(BaseModel):
    id: int
    name: str
    status: JobStatus
    model: str | None
    model_id: int | None
    layers: list[str]
    attack_kind: str | None
    created_at: datetime
    finished_at: datetime | None
    headline: Headline
    job_id: int | None
    hidden: bool = Field(False, description="left out of GET /runs unless include_hidden=true")
    attack_outcome: AttackOutcome


class TableRow(MetricMeans):
    layer: str
    acc: float | None = None
    delta_acc: float | None = None
    n_units: int | None = None
    n_attacked: int | None = None
    n_dead: int | None = None
    train_topk_overlap: float | None = None
    model_config = ConfigDict(extra="allow")


class Accuracy(BaseModel):
    init: float | None = None
    final: float | None = Field(None, description="top-1 % of the selected state (the attack's result)")
    last: float | None = Field(None, description="top-1 % of the last step's state")
    delta: float | None = None
    delta_last: float | None = None
    selected_step: int | None = None
    steps: int | None = None
    over_budget: bool | None = None
    n_images: int | None = Field(None, description="validation images the accuracy was measured on")
    model_config = ConfigDict(extra="allow")


class Row(MetricMeans):
    """A Table 3.1 row: one layer (or "all") in one state (SPEC §2–§3)."""

    layer: str = Field(description='a layer name, or "all": the mean over every attacked unit of every layer')
    state: Literal["selected", "final", "control"]
    step: int | None = None
    acc: float | None = None
    delta_acc: float | None = None
    acc_n_images: int | None = Field(None, description="validation images the accuracy was measured on")
    over_budget: bool = False
    synthetic_clip_delta: float | None = None
    label_flip_rate: float | None = Field(None, description="share of the attacked units whose class-concept label "
                                                            "changed from θ_init (issue 22)")
    label_decoy_rate: float | None = Field(None, description="push-up: share of the attacked units now labelled "
                                                             "with the decoy class")
    run_id: int
    model_config = ConfigDict(extra="allow")


class SyntheticMeans(BaseModel):
    """The synthetic-image measures (SPEC §4): a layer's means, or one unit's values."""

    natural_clip_delta: float | None = None
    synthetic_clip_delta: float | None = None
    synthetic_transfer: float | None = None
    ns_agreement: float | None = None


class SyntheticUnit(SyntheticMeans):
    unit: int
    attacked: bool


class LayerSynthetic(BaseModel):
    means: SyntheticMeans
    units: list[SyntheticUnit]


class RunDetail(BaseModel):
    id: int
    name: str
    status: JobStatus
    model: str | None
    model_id: int | None
    attack: dict[str, Any] | None
    embedder: str | None
    embedder_warning: str | None
    k_clip: int
    layers: list[str]
    table: list[TableRow] = Field(description="the selected state's rows, one per layer (see rows for every state)")
    rows: list[Row]
    control_run_id: int | None
    synthetic: dict[str, LayerSynthetic] | None = Field(description="Fig. 3.7 in numbers, per layer")
    accuracy: Accuracy
    alpha_trajectory: list[dict[str, Any]]
    history: list[dict[str, Any]]
    pushup: dict[str, Any] | None
    per_unit: dict[str, dict[str, list[float | None]]]
    clip_similarity: dict[str, list[dict[str, Any]]]
    layer_info: dict[str, Any]
    train_set_id: int | None
    val_set_id: int | None
    job_id: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    read_only: bool
    hidden: bool = False
    attack_outcome: AttackOutcome
    fv_target: dict[str, dict[str, Any]] | None = Field(
        None, description="Slingshots runs (SPEC §8.1), per layer: medians over the aimed units of the FV→target "
                          "measures, moved_share (FV closer to the target than to the original FV), cross_check")


class UnitRow(BaseModel):
    unit: int
    attacked: bool
    dead: bool
    clip_delta: float | None
    kendall_tau: float | None
    clip_w: float | None
    kendall_tau_w: float | None
    topk_overlap: float | None


class UnitPage(BaseModel):
    items: list[UnitRow]
    total: int
    page: int
    page_size: int


class Img(BaseModel):
    image_id: int
    image_set_id: int
    label: int
    label_name: str
    score: float | None
    thumb_url: str
    full_url: str


class BeforeAfter(BaseModel):
    before: list[Img]
    after: list[Img]


class Nearest(BaseModel):
    unit: int
    value: float | None


class SyntheticImageOut(BaseModel):
    url: str
    seed: int


class UnitSynthetic(BaseModel):
    """A unit's synthetic visualizations (SPEC §4): the same seeds before (θ_init) and after."""

    before: list[SyntheticImageOut]
    after: list[SyntheticImageOut]
    objective: str
    steps: int
    size: int
    after_state: str | None = Field(None, description="the attack state the 'after' images were rendered from")
    synthetic_clip_delta: float | None = None
    synthetic_transfer: float | None = None
    ns_agreement: float | None = None


UnitState = Literal["selected", "final"]


class UnitLabel(BaseModel):
    """A unit's class-concept label (issue 22): the class most over-represented in its
    validation top-k, its share of the top-k and its hypergeometric enrichment p-value."""

    label: int | None = Field(description="class index; null for a dead unit")
    name: str | None
    share: float | None
    p_value: float | None


class UnitLabels(BaseModel):
    before: UnitLabel = Field(description="under θ_init")
    after: UnitLabel = Field(description="in the state shown")


class UnitScoreSet(BaseModel):
    clarity: float | None = Field(description="(‖mean v̂‖² − 1/n)·n/(n−1) of the top-k embeddings: 1 = one concept")
    polysemanticity: float | None = Field(description="1 − the clarity of two k-means centroids of the top-k")
    redundancy: float | None = Field(description="largest cosine of the unit's mean embedding to another unit's")


class UnitScores(BaseModel):
    before: UnitScoreSet = Field(description="under θ_init")
    after: UnitScoreSet = Field(description="in the state shown")


class UnitFVTarget(BaseModel):
    """A Slingshots unit (SPEC §8.1): the target its attack aimed the synthetic visualization at,
    and the measures of the visualize job's renders (seeds the attack never saw) against it."""

    target_url: str = Field(description="the target image (PNG)")
    moved: bool | None = Field(None, description="the FV after the attack is closer to the target than to the "
                                                 "unit's original FV")
    moved_by: str | None = None
    cross_check: str | None = Field(None, description="agree / disagree: the unit's natural exemplars vs its FV "
                                                      "after the attack (natural–synthetic agreement > 1)")
    top_class: int | None = Field(None, description="the unit's top class (θ_init), the AUROC's positive class")
    measures: dict[str, float | None] = Field(default_factory=dict, description=(
        "ssim_target_after/before, ssim_original_after, mse_target_after/before, cos_target_after/before, "
        "cos_original_after, auroc_before/after, agreement_before/after"))


class UnitDetail(BaseModel):
    unit: int
    layer: str
    attacked: bool
    dead: bool
    state: UnitState = Field(description="the state shown as 'after' (top-k, metrics, nearest units, clip_self)")
    states: list[UnitState] = Field(description="the states this run's unit can be shown in (?state=)")
    metrics: dict[str, float | None]
    topk: dict[str, BeforeAfter]
    nearest: dict[str, list[Nearest]]
    clip_self: dict[str, float | None]
    synthetic: UnitSynthetic | None
    labels: UnitLabels | None = Field(None, description="what an interpreter would call the unit, before and after")
    scores: UnitScores | None = Field(None, description="SemanticLens clarity, polysemanticity and redundancy of the "
                                                        "unit's top-k embeddings, before and after (issue 22)")
    fv_target: UnitFVTarget | None = Field(None, description="Slingshots runs: the unit's target and its measures")
    prev_unit: int | None
    next_unit: int | None
    prev_attacked: int | None
    next_attacked: int | None
    read_only: bool


class ModelSyntheticUnit(BaseModel):
    unit: int
    url: str
    seed: int
    job_id: int


class ModelSyntheticLayer(BaseModel):
    layer: str
    units: list[ModelSyntheticUnit]


class ModelSynthetic(BaseModel):
    """One synthetic image per unit: the first seed of the newest visualize job of each layer."""

    model_id: int
    layers: list[ModelSyntheticLayer]


class ModelSyntheticImage(BaseModel):
    url: str
    seed: int
    objective: str
    steps: int
    size: int
    job_id: int
    state: str


class ModelSyntheticUnitDetail(BaseModel):
    model_id: int
    layer: str
    unit: int
    images: list[ModelSyntheticImage]


class ShareOut(BaseModel):
    token: str
    url: str
    run_id: int
    created_at: datetime
    revoked_at: datetime | None = None
