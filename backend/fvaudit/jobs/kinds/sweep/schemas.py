"""Response models of the sweeps API (SPEC §5): the ``sweep`` kind's own, served by its router
(:mod:`fvaudit.jobs.kinds.sweep.routes`)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from fvaudit.api.schemas import JobStatus

class SweepAudit(BaseModel):
    run_id: int
    status: str
    rows: list[dict[str, Any]]
    error: str | None = None


class SweepPointOut(BaseModel):
    """One grid point: its values, what was pruned, its audits' runs (SPEC §5)."""

    idx: int
    label: str
    values: dict[str, Any]
    method: str | None = Field(description="prune method; null for an unpruned point")
    rate: float | None = Field(description="norm: weight fraction; oto_*: target group sparsity; vulnerability: "
                                           "fraction of the layer's channels")
    layer: str | None
    model_id: int | None = Field(description="the audited model (a pruned point's new model)")
    prune_job_id: int | None
    prune_status: str | None
    prune_error: str | None
    prune: dict[str, Any] | None
    audits: dict[str, SweepAudit]


class SweepTableRow(BaseModel):
    """Tables 4.1–4.4 / C–F: one row per point and attack; each links to its run."""

    point: int
    label: str
    method: str | None
    rate: float | None
    weight_rate: float | None
    filter_rate: float | None
    finetuned_acc: float | None = Field(description="accuracy (%) of the audited model before the attack: the "
                                                    "fine-tuned pruned model, or the unpruned one")
    finetune_n_images: int | None
    layer: str | None
    attack: str | None
    clip_delta: float | None
    kendall_tau: float | None
    clip_w: float | None
    kendall_tau_w: float | None
    topk_overlap: float | None
    label_flip_rate: float | None = Field(None, description="share of the attacked units whose class-concept label "
                                                            "changed in the selected state (issue 22)")
    label_decoy_rate: float | None = Field(None, description="push-up: share of the attacked units now labelled with "
                                                             "the decoy class")
    acc: float | None
    delta_acc: float | None
    acc_n_images: int | None
    status: str | None
    run_id: int | None
    model_id: int | None


class SweepItem(BaseModel):
    id: int
    name: str
    status: JobStatus
    n_points: int
    created_at: datetime
    finished_at: datetime | None
    hidden: bool = False


class SweepDetail(SweepItem):
    error: str | None
    spec: dict[str, Any]
    attacks: list[str]
    columns: list[str]
    points: list[SweepPointOut]
    rows: list[SweepTableRow]
    curves: dict[str, dict[str, list[Any]]] = Field(description="per method: rate, label, finetuned_acc, "
                                                                "clip_delta_<attack>, run_<attack> (Figs. 4.1–4.4)")
