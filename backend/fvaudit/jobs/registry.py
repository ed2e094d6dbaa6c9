"""The job-kind registry: one place that knows which kinds of job exist (timm's shape).

Each kind is a class in its own module under :mod:`fvaudit.jobs.kinds`, decorated with
:func:`register_kind`. It declares

* ``spec``: its pydantic spec (defaults and field docs; the API's request schema and the
  launch form's defaults come from it),
* ``check(db, user, spec)``: the request-time checks against the database (→ 422 naming
  the field), returning the normalised, still typed, spec,
* either ``run(spec, ctx)`` (a kind a worker runs) or ``expand(spec)`` (a chain: a list
  of :class:`Step` values, each naming the step it waits for),
* its human labels (``title``, ``description``, and the label of every chain step),
* optionally ``routes``: the module of its own endpoints and response models, which the app mounts.

Everything else reads the registry: the ``POST /jobs`` body (a discriminated union on
``kind`` built by :func:`job_create_model`), validation, creation
(:mod:`fvaudit.jobs.create`), dispatch and the runner (:func:`runnable_kinds`), the
reaper (:func:`chain_kinds`), ``GET /job-kinds`` and the step labels of every job JSON.
Adding a kind is adding one module there (or calling :func:`register_kind` anywhere,
as a test does); no other file lists kinds.

Torch-free: the API process imports every kind module (their ``run`` imports the engine
lazily, inside the worker child).
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.orm import Session

    from fvaudit.db.tables import Run, User
    from fvaudit.jobs.context import JobContext


@dataclass(frozen=True)
class StepInfo:
    """A step a chain kind may expand to: its key (``jobs.step_key``) and human label."""

    key: str
    label: str


@dataclass(frozen=True)
class Step:
    """One step of an expanded chain (data, built by a chain kind's ``expand``).

    ``spec(ids)`` builds the child's typed spec from the job ids of the steps created
    before it (``ids[key]``); ``after`` is the step it waits for (None: starts at once);
    ``run`` names which of the chain's runs it writes into (see ``JobKind.runs``).
    """

    key: str
    kind: str
    spec: Callable[[dict[str, int]], BaseModel]
    after: str | None = None
    run: str = "main"


class JobKind:
    """Base class of a job kind; subclasses set the class attributes and override methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    spec: ClassVar[type[BaseModel]]
    #: chain kinds: every step ``expand`` may produce, in order (for labels and the UI)
    steps: ClassVar[tuple[StepInfo, ...]] = ()
    #: created by the service itself (a scan's shards, a folder's registration), never by ``POST /jobs``:
    #: left out of the request union and of ``GET /job-kinds``
    internal: ClassVar[bool] = False
    #: a short job (seconds to a minute, e.g. indexing a folder): the embedded mode's quick-lane
    #: worker runs only these, so they never wait behind an attack or a render
    quick: ClassVar[bool] = False
    #: a chain whose steps write runs of their own (a sweep's points): each run's status follows
    #: the steps that write it, and a failed step fails only its own runs while the others go on
    runs_follow_steps: ClassVar[bool] = False
    #: the module of the kind's own endpoints and response models (e.g. ``/detections``): it
    #: defines ``router``, which the app mounts under ``/api/v1``; named, not imported, so the
    #: worker never loads the API and the module may import the kind (None: no endpoints)
    routes: ClassVar[str | None] = None

    # ------------------------------------------------------------------ what it is
    @property
    def is_chain(self) -> bool:
        return type(self).expand is not JobKind.expand

    @property
    def runnable(self) -> bool:
        return type(self).run is not JobKind.run

    def step_label(self, key: str | None) -> str | None:
        return next((s.label for s in self.steps if s.key == key), None)

    def defaults(self) -> dict[str, Any]:
        """Field defaults of the spec (nested models' defaults included), for the form."""
        return _defaults_of(self.spec)

    # ------------------------------------------------------------------ submission
    def check(self, db: "Session", user: "User", spec: BaseModel) -> BaseModel:
        """Request-time checks against the database; returns the normalised spec."""
        return spec

    def depends_on(self, spec: BaseModel) -> list[int]:
        """Job ids the spec refers to: the new job waits for the latest unfinished one."""
        return []

    def members(self, spec: BaseModel, job_id: int) -> list[tuple[str, BaseModel]]:
        """A group this job waits for: ``(kind, spec)`` of each member, all runnable at once (a
        Celery group); the job itself runs once every member succeeded (e.g. a scan's shards)."""
        return []

    def run_for(self, db: "Session", user: "User", spec: BaseModel) -> "Run | None":
        """The run a standalone job of this kind writes into (None: no run)."""
        return None

    # ------------------------------------------------------------------ chains
    def expand(self, spec: BaseModel) -> list[Step]:
        raise NotImplementedError(f"{self.name} is not a chain")

    def runs(self, db: "Session", user: "User", spec: BaseModel) -> "dict[str, Run]":
        """The runs a chain writes into, by name (``Step.run``); ``main`` is the chain's own."""
        raise NotImplementedError(f"{self.name} is not a chain")

    def created(self, db: "Session", runs: "dict[str, Run]", ids: dict[str, int]) -> None:
        """Hook after a chain's rows are written (e.g. to link its runs)."""

    # ------------------------------------------------------------------ housekeeping
    def reap(self, db: "Session", settings: Any) -> list[str]:
        """Each reaper pass: remove what this kind's jobs left on disk once nobody needs it
        (e.g. the parts of a sharded scan that ended); returns what was removed."""
        return []

    # ------------------------------------------------------------------ work
    def run(self, spec: BaseModel, ctx: "JobContext") -> dict:
        raise NotImplementedError(f"{self.name} is not run by a worker")


_lock = threading.Lock()
_kinds: dict[str, JobKind] = {}
_loaded = False


def register_kind(cls: type[JobKind]) -> type[JobKind]:
    """Class decorator (or plain call): add a kind to the registry; a name is registered once."""
    for attr in ("name", "title", "spec"):
        if not hasattr(cls, attr):
            raise TypeError(f"job kind {cls.__name__} must set {attr!r}")
    kind = cls()
    if not (kind.is_chain or kind.runnable):
        raise TypeError(f"job kind {cls.name} needs run(spec, ctx) or expand(spec)")
    with _lock:
        old = _kinds.get(cls.name)
        if old is not None and type(old).__qualname__ != cls.__qualname__:
            raise ValueError(f"job kind {cls.name!r} is already registered by {type(old).__module__}")
        _kinds[cls.name] = kind
    return cls


def unregister_kind(name: str) -> None:
    """Remove a kind (tests that register one clean up with this)."""
    with _lock:
        _kinds.pop(name, None)


def _load_builtin() -> None:
    """Import every module of :mod:`fvaudit.jobs.kinds` (each registers its kind)."""
    global _loaded
    if _loaded:
        return
    from fvaudit.jobs import kinds

    for info in sorted(pkgutil.iter_modules(kinds.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{kinds.__name__}.{info.name}")
    _loaded = True


def all_kinds() -> list[JobKind]:
    _load_builtin()
    with _lock:
        return list(_kinds.values())


def get_kind(name: str) -> JobKind:
    _load_builtin()
    try:
        return _kinds[name]
    except KeyError:
        raise KeyError(f"unknown job kind {name!r}") from None


def is_kind(name: Any) -> bool:
    _load_builtin()
    return isinstance(name, str) and name in _kinds


def runnable_kinds(quick_only: bool = False, exclude_quick: bool = False) -> list[str]:
    """Kinds a worker runs: all, only ``quick`` ones (the quick lane), or all but those (the
    embedded mode's general workers, which leave them to the quick lane)."""
    return [k.name for k in all_kinds()
            if k.runnable and (k.quick or not quick_only) and not (k.quick and exclude_quick)]


def chain_kinds() -> list[str]:
    return [k.name for k in all_kinds() if k.is_chain]


def job_label(kind: str, step_key: str | None = None, parent_kind: str | None = None) -> str:
    """The human label of a job: its step's label in its chain, else its kind's title."""
    if step_key and parent_kind and is_kind(parent_kind):
        label = get_kind(parent_kind).step_label(step_key)
        if label:
            return label
    return get_kind(kind).title if is_kind(kind) else kind


def job_create_model() -> Any:
    """The ``POST /jobs`` body: a union of ``{kind: Literal[name], spec: <Spec>}`` discriminated on kind."""
    members = []
    for k in all_kinds():
        if k.internal:
            continue
        members.append(create_model(
            f"{_camel(k.name)}JobCreate", __config__=ConfigDict(extra="forbid"),
            __doc__=f"{k.title}: {k.description}".strip(": "),
            kind=(Literal[k.name], Field(description=k.title)), spec=(k.spec, ...)))
    if len(members) == 1:
        return members[0]
    return Annotated[Union[tuple(members)], Field(discriminator="kind")]


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_"))


def _defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fname, f in model.model_fields.items():
        if f.is_required():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out[fname] = _defaults_of(ann)
            continue
        v = f.get_default(call_default_factory=True)
        out[fname] = v.model_dump(mode="json") if isinstance(v, BaseModel) else v
    return out


@dataclass
class KindInfo:
    """What ``GET /job-kinds`` says about one kind."""

    kind: str
    title: str
    description: str
    runnable: bool
    chain: bool
    steps: list[dict] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    spec_schema: dict = field(default_factory=dict)


def kind_infos() -> list[KindInfo]:
    return [KindInfo(k.name, k.title, k.description, k.runnable, k.is_chain,
                     [{"key": s.key, "label": s.label} for s in k.steps], k.defaults(),
                     k.spec.model_json_schema()) for k in all_kinds() if not k.internal]
