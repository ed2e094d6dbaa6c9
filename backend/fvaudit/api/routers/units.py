"""Searching units by what they are said to detect (issue 22): ``GET /api/v1/units?q=``.

Every metrics job writes each live unit's label in each state of its run into ``unit_labels``
(:func:`fvaudit.jobs.kinds.metrics.label_rows`); this router finds them by label across every
run the caller can see: their own runs (every run for an admin), or, through a share link, only
that link's run. A hit names its run, model, layer, unit and state with the label's score, and
carries a thumbnail of the unit's top image in that state and the path of its unit page.

The match is by prefix of the lower-cased label (``bag`` finds "Bag"; ``ankle`` finds "Ankle
boot"): an index range scan on Postgres (``text_pattern_ops``), measured by
``bench/label_search.py`` on 10⁵ labelled units.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select, tuple_

from fvaudit.api.deps import DB, Who, like, paged
from fvaudit.api.serialize import img, classes_of
from fvaudit.db.tables import Model, Run, UnitLabel, UnitResult

router = APIRouter(tags=["units"])


class LabelHit(BaseModel):
    run_id: int
    run_name: str
    model_id: int | None
    model_name: str | None
    layer: str
    unit: int
    state: Literal["before", "selected", "final"] | str = Field(description="before = θ_init; selected / final: the "
                                                                             "attacked model's states")
    describer: str = Field(description="class-concept (the top-k's most over-represented class)")
    label: str
    score: float | None = Field(description="the label's share of the unit's validation top-k")
    p_value: float | None = Field(description="its enrichment p-value (hypergeometric)")
    attacked: bool
    changed: bool = Field(description="the label differs from the unit's label before the attack")
    thumb_url: str | None = Field(description="the unit's top image in this state (signed)")
    unit_path: str = Field(description="the dashboard path of the unit's page")


@router.get("/units", response_model=list[LabelHit],
            summary="Find units by label across every run you can see (a share link: its run only)")
def search_units(db: DB, who: Who, response: Response,
                 q: Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*\S[^\x00]*$",
                                                description="label prefix, case-insensitive ('bag' finds Bag); "
                                                            "leave it out to browse one run's or model's labels")] = None,
                 state: Literal["before", "selected", "final", "any"] = "any",
                 layer: Annotated[str | None, Query(min_length=1, max_length=300)] = None,
                 sort: Literal["score", "label", "unit"] = "score",
                 changed: Annotated[bool | None, Query(description="only labels that changed (or did not) "
                                                                   "from before the attack")] = None,
                 attacked: bool | None = None,
                 run_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                 model_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> list[dict]:
    if who.user is None and who.share is None:
        raise HTTPException(401, "Not authenticated: send Authorization: Bearer <API token> or a share link")
    if q is None and run_id is None and model_id is None:
        raise HTTPException(422, [{"loc": ["query", "q"], "type": "missing",
                                   "msg": "give a label to search for, or a run_id or model_id to browse its labels"}])
    query = label_query(who, q, state=state, changed=changed, attacked=attacked, run_id=run_id, model_id=model_id,
                        layer=layer)
    rows = paged(db, query, SORTS[sort], limit, offset, response)
    return hits(db, rows, who.share.id if who.share is not None and who.user is None else None)


#: best label first (its share of the top-k), then the newest run, layer, unit, state
ORDER = (UnitLabel.score.desc().nulls_last(), UnitLabel.run_id.desc(), UnitLabel.layer, UnitLabel.unit,
         UnitLabel.state)
SORTS = {"score": ORDER,
         "label": (UnitLabel.label_key, UnitLabel.score.desc().nulls_last(), UnitLabel.run_id.desc(), UnitLabel.layer,
                   UnitLabel.unit, UnitLabel.state),
         "unit": (UnitLabel.run_id.desc(), UnitLabel.layer, UnitLabel.unit, UnitLabel.state)}


def label_query(who, q: str | None, *, state: str = "any", changed: bool | None = None,
                attacked: bool | None = None, run_id: int | None = None, model_id: int | None = None,
                layer: str | None = None):
    """The labels starting with ``q`` (case-insensitive; every label when None) in the runs ``who``
    may read: their own (an admin: all) that are not hidden, or a share link's run alone."""
    query = select(UnitLabel).join(Run, Run.id == UnitLabel.run_id)
    if q is not None:
        query = query.where(UnitLabel.label_key.like(like(q.strip(), anywhere=False), escape="\\"))
    if layer is not None:
        query = query.where(UnitLabel.layer == layer)
    if who.share is not None and who.user is None:
        query = query.where(UnitLabel.run_id == who.share.run_id)
    else:
        if not who.user.is_admin:
            query = query.where(Run.owner_id == who.user.id)
        query = query.where(Run.hidden.is_(False))
    if state != "any":
        query = query.where(UnitLabel.state == state)
    if changed is not None:
        query = query.where(UnitLabel.changed.is_(changed))
    if attacked is not None:
        query = query.where(UnitLabel.attacked.is_(attacked))
    if run_id is not None:
        query = query.where(UnitLabel.run_id == run_id)
    if model_id is not None:
        query = query.where(UnitLabel.model_id == model_id)
    return query


def hits(db, rows: list[UnitLabel], share_id: int | None) -> list[dict]:
    """One page of hits with their run and model names and a thumbnail each (two IN queries)."""
    if not rows:
        return []
    # only the columns a hit shows: a run's row holds its whole Table 3.1 and histograms (JSON), a
    # unit's its top-k in every state; reading those whole made a page of 50 hits take 0.4 s
    runs = dict(db.execute(select(Run.id, Run.name).where(Run.id.in_({x.run_id for x in rows}))).all())
    models = dict(db.execute(select(Model.id, Model.name).where(
        Model.id.in_({x.model_id for x in rows if x.model_id}))).all())
    keys = {(x.run_id, x.layer, x.unit) for x in rows}
    units = {(r, l, u): t for r, l, u, t in db.execute(
        select(UnitResult.run_id, UnitResult.layer, UnitResult.unit, UnitResult.topk["val"])
        .where(tuple_(UnitResult.run_id, UnitResult.layer, UnitResult.unit).in_(keys))).all()}
    out = []
    for x in rows:
        run_name, model_name = runs.get(x.run_id), models.get(x.model_id) if x.model_id else None
        thumb = None
        val = units.get((x.run_id, x.layer, x.unit)) or {}
        side = (val.get("before") if x.state == "before" else (val.get(x.state) or val.get("after"))) or {}
        if side.get("ids"):
            sid = int(val["image_set_id"])
            thumb = img(sid, side["ids"][0], side["labels"][0], classes_of(db, sid), None, share_id)["thumb_url"]
        out.append({"run_id": x.run_id, "run_name": run_name or "", "model_id": x.model_id,
                    "model_name": model_name, "layer": x.layer, "unit": x.unit, "state": x.state,
                    "describer": x.describer, "label": x.label, "score": x.score, "p_value": x.p_value,
                    "attacked": x.attacked, "changed": x.changed, "thumb_url": thumb,
                    "unit_path": f"/runs/{x.run_id}/layers/{x.layer}/units/{x.unit}"})
    return out
