"""Response models of the detections API (SPEC §6): the ``detect`` kind's own, served by its
router (:mod:`fvaudit.jobs.kinds.detect.routes`)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from fvaudit.api.schemas import Img, JobStatus

#: "inconclusive": too few clean models for a p-value (its reason is in ``warnings``);
#: "out of calibration": the suspect moved further than any benign model of the calibration
#: (issue 24): its evidence is shown, no claim is made
Verdict = Literal["no sign", "suspicious", "manipulated", "inconclusive", "out of calibration"]


class DetectModelOut(BaseModel):
    model_id: int
    name: str
    weights: str
    weights_from: dict[str, Any] | None = None
    recipe: str | None = Field(None, description="how a clean model of the calibration was made (given, or its "
                                                 "attack job's settings)")


class DetectionItem(BaseModel):
    id: int
    name: str
    status: JobStatus
    progress: dict[str, Any]
    regime: Literal["reference", "population"]
    verdict: Verdict | None = Field(description="null until the job succeeded")
    p_value: float | None = Field(description="null until the job succeeded, and when the verdict is inconclusive")
    warnings: list[str] = Field(default_factory=list, description="what to know before trusting the verdict "
                                                                  "(e.g. too few clean models: inconclusive)")
    suspect_model_id: int
    reference_model_id: int | None
    layers: list[str]
    created_at: datetime
    finished_at: datetime | None


class MeasureOut(BaseModel):
    value: float | None
    suspicion: float | None


class DetectUnitOut(BaseModel):
    unit: int
    rank: int | None = Field(description="1 = the most suspicious unit of its layer; null for a dead unit")
    dead: bool
    suspicion: float | None
    localisation: float | None = Field(None, description="with a reference: the unit's suspicion once the model's "
                                                         "own overall shift is taken out (high: it moved beyond what "
                                                         "the model's change explains); null before issue 24's results")
    driver: str | None
    measures: dict[str, MeasureOut]


class DetectionDetail(DetectionItem):
    error: str | None
    spec: dict[str, Any]
    result: dict[str, Any] | None = Field(description="the verdicts: model and layers, with the evidence that drove "
                                                      "them (engine.detector.DetectionReport.summary)")
    units: dict[str, list[DetectUnitOut]] = Field(description="per layer, every unit ranked by suspicion")


class DetectUnitDetail(DetectUnitOut):
    detection_id: int
    detection_name: str
    regime: Literal["reference", "population"]
    layer: str
    n_units: int
    layer_verdict: dict[str, Any]
    models: dict[str, DetectModelOut]
    suspect_topk: list[Img]
    reference_topk: list[Img] | None
    prev_unit: int | None
    next_unit: int | None
    prev_ranked: int | None = Field(description="the unit ranked just above this one")
    next_ranked: int | None = Field(description="the unit ranked just below this one")
