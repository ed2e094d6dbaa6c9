"""SQLAlchemy 2 tables (the ORM rows): the service's source of truth.

Large arrays never live in rows: score matrices, checkpoints and thumbnails are files in
the content-addressed artifact store (``fvaudit.store``) and rows point at them. Rows
hold what the UI queries: per-unit top-k ids/scores/labels and every SPEC §3 metric, so
a unit page is one indexed lookup on ``unit_results (run_id, layer, unit)``.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, UniqueConstraint, false)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")
#: 64-bit ids on Postgres; SQLite only autoincrements INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")

TERMINAL = ("succeeded", "failed", "cancelled")
METRICS = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None (Postgres JSONB rejects NaN), numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):       # numpy scalar
        return clean_json(obj.item())
    if hasattr(obj, "tolist"):     # numpy array
        return clean_json(obj.tolist())
    return str(obj)


def finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class APIToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)   # sha256 hex; the token itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    user: Mapped[User] = relationship(lazy="joined")


class Artifact(Base):
    """A file in the content-addressed store: ``artifacts/<sha[:2]>/<sha>.<ext>``."""

    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))        # scores | checkpoint | thumb | image | export
    path: Mapped[str] = mapped_column(String(300))       # relative to DATA_DIR/artifacts
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    registry_name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))      # registry | upload | path
    weights: Mapped[str] = mapped_column(String(500))
    pretrained: Mapped[bool] = mapped_column(Boolean, default=True)
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"), nullable=True)
    layers: Mapped[list] = mapped_column(JSONType)       # [LayerInfo.as_dict()], cached at registration
    class_names: Mapped[list] = mapped_column(JSONType)
    input_shape: Mapped[list] = mapped_column(JSONType)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: left out of lists and pickers unless asked for (``include_hidden``); never deleted by hiding
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: lineage of a pruned model (SPEC §5): its parent, the prune job that fills this row (no
    #: checkpoint until it succeeds) and what that job recorded (report, fine-tune, accuracy)
    parent_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    prune_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    prune: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    checkpoint: Mapped[Artifact | None] = relationship(lazy="joined")


class ImageSet(Base):
    __tablename__ = "image_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(1000))    # fashion-mnist:train|test or a resolved folder path
    kind: Mapped[str] = mapped_column(String(32))        # fashion-mnist | folder
    root_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list] = mapped_column(JSONType)
    skipped: Mapped[list] = mapped_column(JSONType, default=list)
    engine_key: Mapped[str] = mapped_column(String(1100))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: left out of lists and pickers unless asked for (``include_hidden``); never deleted by hiding
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: ready | indexing (a register_images job is listing and checking the folder) | failed
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)     # the registration job (folders)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Image(Base):
    """One image of a set; ``idx`` is the engine's stable integer id within the set."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    image_set_id: Mapped[int] = mapped_column(ForeignKey("image_sets.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    label: Mapped[int] = mapped_column(Integer)
    thumb_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    __table_args__ = (
        UniqueConstraint("image_set_id", "idx", name="uq_images_set_idx"),
        Index("ix_images_set_label_idx", "image_set_id", "label", "idx"),
    )


class Run(Base):
    """An audit's results: every channel addressable as run / layer / unit."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)    # the job that created it (root)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attack_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    layers: Mapped[list] = mapped_column(JSONType, default=list)
    attack: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    train_set_id: Mapped[int | None] = mapped_column(ForeignKey("image_sets.id"), nullable=True)
    val_set_id: Mapped[int | None] = mapped_column(ForeignKey("image_sets.id"), nullable=True)
    embedder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    embedder_warning: Mapped[str | None] = mapped_column(Text, nullable=True)
    k_clip: Mapped[int] = mapped_column(Integer, default=5)
    table: Mapped[list] = mapped_column(JSONType, default=list)
    headline: Mapped[dict] = mapped_column(JSONType, default=dict)
    accuracy: Mapped[dict] = mapped_column(JSONType, default=dict)
    alpha_trajectory: Mapped[list] = mapped_column(JSONType, default=list)
    history: Mapped[list] = mapped_column(JSONType, default=list)
    pushup: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    per_unit: Mapped[dict] = mapped_column(JSONType, default=dict)
    clip_similarity: Mapped[dict] = mapped_column(JSONType, default=dict)
    layer_info: Mapped[dict] = mapped_column(JSONType, default=dict)     # layer -> {units, attacked, dead}
    #: Table 3.1 rows of every state: [{layer ("all" = pooled), state ("selected" | "final"), metrics, acc ...}]
    rows: Mapped[list] = mapped_column(JSONType, default=list)
    #: the α = 0 fine-tune with the same settings (its own run), shown as the "control" row
    control_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    attack_summary: Mapped[dict] = mapped_column(JSONType, default=dict)
    selected_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"), nullable=True)
    final_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: left out of lists and pickers unless asked for (``include_hidden``); never deleted by hiding
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    model: Mapped[Model | None] = relationship(lazy="joined")
    __table_args__ = (Index("ix_runs_owner_id_id", "owner_id", "id"),)


class Job(Base):
    """A unit of work. The row is the truth; the broker only carries its id."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[dict] = mapped_column(JSONType, default=dict)
    result: Mapped[dict] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True)
    depends_on_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    #: the chain step this job is (its parent kind's step key, e.g. "scan_init"); None for a standalone job
    step_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: a member of that job's group (a scan shard of its scan): the group job runs once every member succeeded
    group_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True,
                                                     index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: left out of lists and pickers unless asked for (``include_hidden``); never deleted by hiding
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    )


class JobEvent(Base):
    """Progress / log / status events of a job, streamed by the SSE endpoint."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(16))    # progress | log | status
    data: Mapped[dict] = mapped_column(JSONType)
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class Scan(Base):
    """Top-k and score matrices of some layers of one model state over one image set."""

    __tablename__ = "scans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    weights: Mapped[str] = mapped_column(String(200))   # "model" or "artifact:<sha256>"
    image_set_id: Mapped[int] = mapped_column(ForeignKey("image_sets.id"))
    k: Mapped[int] = mapped_column(Integer)
    n_images: Mapped[int] = mapped_column(Integer)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    layers: Mapped[list["ScanLayer"]] = relationship(lazy="selectin", cascade="all, delete-orphan")
    __table_args__ = (UniqueConstraint("job_id", "image_set_id", name="uq_scans_job_set"),)


class ScanLayer(Base):
    __tablename__ = "scan_layers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(300))
    units: Mapped[int] = mapped_column(Integer)
    dead_units: Mapped[list] = mapped_column(JSONType)
    topk_ids: Mapped[list] = mapped_column(JSONType)       # [J][k]
    topk_scores: Mapped[list] = mapped_column(JSONType)    # [J][k]
    scores_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    scores: Mapped[Artifact] = relationship(lazy="joined")
    __table_args__ = (UniqueConstraint("scan_id", "layer", name="uq_scan_layers_scan_layer"),)


class UnitResult(Base):
    """Everything about one channel of one run: top-k before/after per image set, metrics."""

    __tablename__ = "unit_results"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(300))
    unit: Mapped[int] = mapped_column(Integer)
    attacked: Mapped[bool] = mapped_column(Boolean, default=False)
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    clip_delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    kendall_tau: Mapped[float | None] = mapped_column(Float, nullable=True)
    clip_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    kendall_tau_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    topk_overlap: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: {"train"|"val": {"image_set_id", "before": {"ids","scores","labels"}, "after": {...}}}
    topk: Mapped[dict] = mapped_column(JSONType, default=dict)
    nearest: Mapped[dict] = mapped_column(JSONType, default=dict)
    clip_self: Mapped[dict] = mapped_column(JSONType, default=dict)     # {"pre": C^{ii}_jj, "post": C^{if}_jj}
    #: SPEC §4 measures, written by a visualize job (never by metrics; images in synthetic_images)
    synthetic_clip_delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    synthetic_transfer: Mapped[float | None] = mapped_column(Float, nullable=True)
    ns_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    extra: Mapped[dict] = mapped_column(JSONType, default=dict)
    __table_args__ = (
        UniqueConstraint("run_id", "layer", "unit", name="uq_unit_results_run_layer_unit"),
        *[Index(f"ix_unit_results_{m}", "run_id", "layer", m) for m in METRICS],
    )


class UnitLabel(Base):
    """One unit's label in one state of a run (issue 22): what an interpreter would conclude it
    detects, as a row the label search reads (``GET /api/v1/units?q=``).

    One row per (run, layer, unit, state, describer); ``label_key`` is the label lower-cased,
    the column a search matches by prefix (Postgres: a ``text_pattern_ops`` index, so
    ``LIKE 'bag%'`` is an index range scan on 10⁵ rows, bench/label_search.py). The unit's
    model and attacked flag are copied in so that a search needs no join to say them.
    """

    __tablename__ = "unit_labels"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    layer: Mapped[str] = mapped_column(String(300))
    unit: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))             # "before" | "selected" | "final"
    describer: Mapped[str] = mapped_column(String(32), default="class-concept")
    label: Mapped[str] = mapped_column(String(300))
    label_key: Mapped[str] = mapped_column(String(300))
    class_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)       # the class's share of the top-k
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)     # its enrichment p-value
    attacked: Mapped[bool] = mapped_column(Boolean, default=False)
    changed: Mapped[bool] = mapped_column(Boolean, default=False)          # this state's label ≠ the "before" one
    __table_args__ = (
        UniqueConstraint("run_id", "layer", "unit", "state", "describer", name="uq_unit_labels_address"),
        Index("ix_unit_labels_key", "label_key", "run_id", postgresql_ops={"label_key": "text_pattern_ops"}),
        Index("ix_unit_labels_run_state", "run_id", "state", "changed"),
        Index("ix_unit_labels_model_state", "model_id", "state"),
    )


class SyntheticImage(Base):
    """One synthetic visualization (SPEC §4): a unit's image for one seed under one state.

    ``state`` is ``init`` (θ_init) or the attack state the weights came from
    (``selected`` / ``final``); ``run_id`` is null for a visualize job run alone on a model.
    """

    __tablename__ = "synthetic_images"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(300))
    unit: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer)
    objective: Mapped[str] = mapped_column(String(32))
    steps: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)                # image side in pixels (square)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    activation: Mapped[float | None] = mapped_column(Float, nullable=True)   # objective of its own image
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        UniqueConstraint("job_id", "layer", "unit", "state", "seed", name="uq_synthetic_images_job_unit_state_seed"),
        Index("ix_synthetic_images_run_layer_unit", "run_id", "layer", "unit"),
        Index("ix_synthetic_images_model_layer_unit", "model_id", "layer", "unit", "job_id"),
    )


def upsert(db, table, rows: list[dict], keys: tuple[str, ...], update: tuple[str, ...]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET only ``update`` columns (Postgres and SQLite).

    Other columns of an existing row are left alone: a metrics job never wipes what a
    visualize job wrote into the same unit rows, and the other way round.
    """
    if not rows:
        return
    if db.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    for i in range(0, len(rows), 1000):
        stmt = insert(table.__table__).values(rows[i:i + 1000])
        db.execute(stmt.on_conflict_do_update(index_elements=list(keys),
                                              set_={c: getattr(stmt.excluded, c) for c in update}))


class ShareLink(Base):
    """An unguessable token granting read-only access to one run; revocable."""

    __tablename__ = "share_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SweepPoint(Base):
    """One grid point of a sweep job: its values, the model it audits, its audits' runs.

    ``runs`` maps an attack kind (``push_down``, ``push_up``) to the run of its audit; the
    sweep's results table (``GET /sweeps/{id}/table``) is read from those runs' rows and
    the audited model's ``prune`` record.
    """

    __tablename__ = "sweep_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(300))
    values: Mapped[dict] = mapped_column(JSONType)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    prune_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runs: Mapped[dict] = mapped_column(JSONType, default=dict)
    __table_args__ = (UniqueConstraint("sweep_job_id", "idx", name="uq_sweep_points_job_idx"),)
