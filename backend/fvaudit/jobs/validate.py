"""Request-time checks of job specs against the database (→ 422 naming the field).

Pydantic already checked types and ranges (:mod:`fvaudit.jobs.specs`); here: the model,
image sets and referenced jobs exist and are visible to the user, the layer is one of
the model's layers (cached in its row at registration), units / decoys / k are in range,
server-side paths lie under an allowed root. Returns a normalised spec (layer names
resolved from labels, decoy class names turned into indices).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from fvaudit.config import get_settings
from fvaudit.db.models import ImageSet, Job, Model, User
from fvaudit.jobs.specs import AttackParams, AttackSpec, AuditSpec, MetricsSpec, ScanSpec

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class FieldError(ValueError):
    """A spec field that fails a request-time check; ``loc`` is relative to the body."""

    def __init__(self, loc: tuple, msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.loc = tuple(loc)
        self.msg = msg
        self.type = type_

    def detail(self) -> list[dict]:
        return [{"loc": list(self.loc), "msg": self.msg, "type": self.type}]


def find_layer(model: Model, name: str) -> dict | None:
    for info in model.layers:
        if info["name"] == name:
            return info
    for info in model.layers:
        if info.get("label") and info["label"] == name:
            return info
    return None


def layer_choices(model: Model) -> str:
    names = [i.get("label") or i["name"] for i in model.layers if i["kind"] == "conv"]
    s = ", ".join(names)
    return s[:400] + (" ..." if len(s) > 400 else "")


def check_layer(model: Model, name: str, loc: tuple) -> dict:
    info = find_layer(model, name)
    if info is None:
        raise FieldError(loc, f"unknown layer {name!r} for model {model.name} ({model.registry_name}); "
                              f"conv layers: {layer_choices(model)}")
    return info


def get_model(db: Session, model_id: int, loc: tuple) -> Model:
    m = db.get(Model, model_id)
    if m is None:
        raise FieldError(loc, f"unknown model id {model_id}")
    return m


def get_image_set(db: Session, set_id: int, loc: tuple) -> ImageSet:
    s = db.get(ImageSet, set_id)
    if s is None:
        raise FieldError(loc, f"unknown image set id {set_id}")
    return s


def get_job(db: Session, user: User, job_id: int, loc: tuple, kinds: tuple[str, ...]) -> Job:
    j = db.get(Job, job_id)
    if j is None or (j.owner_id != user.id and not user.is_admin):
        raise FieldError(loc, f"unknown job id {job_id}")
    if j.kind not in kinds:
        raise FieldError(loc, f"job {job_id} is a {j.kind} job, expected {' or '.join(kinds)}")
    if j.status in ("failed", "cancelled"):
        raise FieldError(loc, f"job {job_id} {j.status}; its results cannot be used")
    return j


def check_checkpoint_path(path: str, loc: tuple) -> str:
    settings = get_settings()
    p = settings.is_allowed_path(path)
    if p is None:
        raise FieldError(loc, f"path {path!r} is outside the allowed roots ("
                              + ", ".join(map(str, settings.roots)) + ")")
    if p.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise FieldError(loc, f"checkpoint {path!r}: unsupported extension {p.suffix!r} (use .safetensors or .pt)")
    if not p.is_file():
        raise FieldError(loc, f"checkpoint {path!r} does not exist")
    return str(p)


def check_embedder(spec: str, loc: tuple) -> str:
    if spec in ("auto", "none"):
        return spec
    from fvaudit.engine.embedders import EmbedderError, canonical_spec

    try:
        return canonical_spec(spec)
    except EmbedderError as exc:
        raise FieldError(loc, str(exc)) from None


def check_attack(db: Session, model: Model, train: ImageSet, attack: AttackParams, loc: tuple) -> dict:
    a = attack.model_dump()
    info = check_layer(model, attack.layer, loc + ("layer",))
    a["layer"] = info["name"]
    if attack.units is not None:
        for i, u in enumerate(attack.units):
            if u >= info["units"]:
                raise FieldError(loc + ("units", i), f"unit index {u} out of range for layer {info['name']} of "
                                                     f"{model.name}: it has {info['units']} units (0..{info['units'] - 1})")
    if attack.k > train.size:
        raise FieldError(loc + ("k",), f"k = {attack.k} is larger than the training set ({train.size} images)")
    if attack.decoy_ids is not None:
        for i, d in enumerate(attack.decoy_ids):
            if d >= train.size:
                raise FieldError(loc + ("decoy_ids", i), f"decoy image id {d} out of range: the training set "
                                                         f"{train.name} has {train.size} images")
    dc = attack.decoy_class
    if dc is not None:
        classes = list(train.classes)
        if isinstance(dc, str) and not dc.isdigit():
            if dc not in classes:
                raise FieldError(loc + ("decoy_class",), f"unknown class {dc!r} in {train.name}; classes: "
                                                         + ", ".join(classes[:20]))
            a["decoy_class"] = classes.index(dc)
        else:
            idx = int(dc)
            if not 0 <= idx < len(classes):
                raise FieldError(loc + ("decoy_class",), f"class index {idx} out of range: {train.name} has "
                                                         f"{len(classes)} classes (0..{len(classes) - 1})")
            a["decoy_class"] = idx
    return a


def validate_spec(db: Session, user: User, kind: str, spec: Any) -> dict:
    """Normalised spec dict, or FieldError with loc starting at ("spec", ...)."""
    L = ("spec",)
    if isinstance(spec, AuditSpec) or isinstance(spec, AttackSpec):
        model = get_model(db, spec.model_id, L + ("model_id",))
        train = get_image_set(db, spec.train_set_id, L + ("train_set_id",))
        val = get_image_set(db, spec.val_set_id, L + ("val_set_id",))
        out = spec.model_dump()
        out["attack"] = check_attack(db, model, train, spec.attack, L + ("attack",))
        if spec.checkpoint_path is not None:
            out["checkpoint_path"] = check_checkpoint_path(spec.checkpoint_path, L + ("checkpoint_path",))
        if isinstance(spec, AuditSpec):
            if spec.k_clip > val.size:
                raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than the validation set "
                                                  f"({val.size} images)")
            if max(spec.attack.k, spec.k_clip) > train.size:
                raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than the training set")
            out["embedder"] = check_embedder(spec.embedder, L + ("embedder",))
        else:
            if spec.init_scan_job_id is not None:
                j = get_job(db, user, spec.init_scan_job_id, L + ("init_scan_job_id",), ("scan",))
                if j.spec.get("model_id") != spec.model_id or spec.train_set_id not in j.spec.get("image_set_ids", []):
                    raise FieldError(L + ("init_scan_job_id",), f"scan job {j.id} did not scan model {spec.model_id} "
                                                                f"on image set {spec.train_set_id}")
                if out["attack"]["layer"] not in j.spec.get("layers", []):
                    raise FieldError(L + ("init_scan_job_id",), f"scan job {j.id} did not scan layer "
                                                                f"{out['attack']['layer']}")
                if j.spec.get("k", 0) < spec.attack.k:
                    raise FieldError(L + ("init_scan_job_id",), f"scan job {j.id} kept top-{j.spec.get('k')}, "
                                                                f"fewer than k = {spec.attack.k}")
        return out
    if isinstance(spec, ScanSpec):
        model = get_model(db, spec.model_id, L + ("model_id",))
        out = spec.model_dump()
        out["layers"] = [check_layer(model, name, L + ("layers", i))["name"] for i, name in enumerate(spec.layers)]
        if len(set(out["layers"])) != len(out["layers"]):
            raise FieldError(L + ("layers",), "a layer is listed twice")
        sizes = []
        for i, sid in enumerate(spec.image_set_ids):
            sizes.append(get_image_set(db, sid, L + ("image_set_ids", i)).size)
        if len(set(spec.image_set_ids)) != len(spec.image_set_ids):
            raise FieldError(L + ("image_set_ids",), "an image set is listed twice")
        if spec.k > min(sizes):
            raise FieldError(L + ("k",), f"k = {spec.k} is larger than the smallest image set ({min(sizes)} images)")
        if spec.weights_from is not None and spec.checkpoint_path is not None:
            raise FieldError(L + ("checkpoint_path",), "give weights_from or checkpoint_path, not both")
        if spec.weights_from is not None:
            j = get_job(db, user, spec.weights_from.job_id, L + ("weights_from", "job_id"), ("attack",))
            if j.spec.get("model_id") != spec.model_id:
                raise FieldError(L + ("weights_from", "job_id"), f"attack job {j.id} attacked model "
                                                                 f"{j.spec.get('model_id')}, not {spec.model_id}")
        if spec.checkpoint_path is not None:
            out["checkpoint_path"] = check_checkpoint_path(spec.checkpoint_path, L + ("checkpoint_path",))
        return out
    if isinstance(spec, MetricsSpec):
        out = spec.model_dump()
        before = get_job(db, user, spec.before_scan_job_id, L + ("before_scan_job_id",), ("scan",))
        after = get_job(db, user, spec.after_scan_job_id, L + ("after_scan_job_id",), ("scan",))
        get_image_set(db, spec.val_set_id, L + ("val_set_id",))
        for name, j in (("before_scan_job_id", before), ("after_scan_job_id", after)):
            if spec.val_set_id not in j.spec.get("image_set_ids", []):
                raise FieldError(L + (name,), f"scan job {j.id} did not scan image set {spec.val_set_id}")
            if spec.train_set_id is not None and spec.train_set_id not in j.spec.get("image_set_ids", []):
                raise FieldError(L + ("train_set_id",), f"scan job {j.id} did not scan image set {spec.train_set_id}")
        if before.spec.get("model_id") != after.spec.get("model_id"):
            raise FieldError(L + ("after_scan_job_id",), "the two scans are of different models")
        common = [l for l in before.spec.get("layers", []) if l in after.spec.get("layers", [])]
        if spec.layers is not None:
            model = get_model(db, before.spec["model_id"], L + ("before_scan_job_id",))
            names = []
            for i, name in enumerate(spec.layers):
                info = check_layer(model, name, L + ("layers", i))
                if info["name"] not in common:
                    raise FieldError(L + ("layers", i), f"layer {info['name']} is not in both scans")
                names.append(info["name"])
            out["layers"] = names
        elif not common:
            raise FieldError(L + ("after_scan_job_id",), "the two scans have no layer in common")
        if spec.attack_job_id is not None:
            get_job(db, user, spec.attack_job_id, L + ("attack_job_id",), ("attack",))
        k_scan = min(before.spec.get("k", 0), after.spec.get("k", 0))
        if spec.k_clip > k_scan:
            raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than the scans' top-{k_scan}")
        out["embedder"] = check_embedder(spec.embedder, L + ("embedder",))
        return out
    raise FieldError(("kind",), f"unknown job kind {kind!r}")


def path_of(p: str | None) -> Path | None:
    return Path(p) if p else None
