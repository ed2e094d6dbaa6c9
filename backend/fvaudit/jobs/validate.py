"""Request-time checks of job specs against the database (→ 422 naming the field).

Pydantic already checked types and ranges (:mod:`fvaudit.jobs.specs`); these are the
checks the kinds' ``check`` methods share (:mod:`fvaudit.jobs.kinds`): the model, image
sets and referenced jobs exist and are visible to the user, a layer is one of the
model's layers (cached in its row at registration), units / decoys / k are in range,
server-side paths lie under an allowed root. They return normalised values (layer names
resolved from labels, decoy class names turned into indices).
"""
from __future__ import annotations

import re

from sqlalchemy.orm import Session

from fvaudit.config import get_settings
from fvaudit.db.tables import ImageSet, Job, Model, User
from fvaudit.jobs.specs import AttackParams, attack_rules, unused_given

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: what an open_clip model name or pretrained tag may look like (never a path)
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    if m.prune_job_id is not None and m.checkpoint_id is None:     # a sweep's pruned model, not made yet
        raise FieldError(loc, f"model {model_id} is not ready: its prune job {m.prune_job_id} has not succeeded")
    return m


def get_image_set(db: Session, set_id: int, loc: tuple) -> ImageSet:
    """A ready image set, else why not in words: failed (with its reason), or still indexing.

    A set whose registration job ended without marking it (its worker was lost and the
    reaper gave up, or it was cancelled) is failed too, with the job's reason: its row
    still reads ``indexing`` but nothing will ever index it (the image-set API reads it
    the same way).
    """
    s = db.get(ImageSet, set_id)
    if s is None:
        raise FieldError(loc, f"unknown image set id {set_id}")
    if s.status == "ready":
        return s
    job = db.get(Job, s.job_id) if s.job_id is not None else None
    if s.status == "failed" or (job is not None and job.status in ("failed", "cancelled")):
        why = s.error or (job.error if job is not None else None) or "no reason recorded"
        raise FieldError(loc, f"image set {set_id} ({s.name}) failed to register and cannot be used: {why}")
    raise FieldError(loc, f"image set {set_id} ({s.name}) is still being indexed by its registration job "
                          f"{s.job_id}: wait until it is ready")


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
    if p.suffix.lower() != ".safetensors":
        # the same screen as model registration: a pickle naming anything but tensors is refused
        # here, at submission, not inside the worker after the chain has started
        from fvaudit.engine.models.checkpoints import UnsafeCheckpoint, screen_pickle_checkpoint

        try:
            screen_pickle_checkpoint(p)
        except UnsafeCheckpoint as exc:
            raise FieldError(loc, f"checkpoint {p.name} refused: {exc}") from None
    return str(p)


def check_embedder(spec: str, loc: tuple) -> str:
    if spec in ("auto", "none"):
        return spec
    from fvaudit.engine.measure.embedders import EmbedderError, canonical_spec

    try:
        canon = canonical_spec(spec)
    except EmbedderError as exc:
        raise FieldError(loc, str(exc)) from None
    if canon.startswith("open_clip:"):
        _, model, tag = canon.split(":", 2)
        for part, what in ((model, "model"), (tag, "pretrained tag")):
            if not SAFE_NAME.fullmatch(part) or ".." in part:
                raise FieldError(loc, f"embedder {what} {part!r}: only letters, digits, '.', '_' and '-' "
                                      "(a name, never a path)")
    return canon


def refuse_unused(obj, rules: dict[str, tuple[bool, str]], loc: tuple) -> None:
    """422 for a field the spec's variant does not use, set to other than its default
    (:func:`fvaudit.jobs.specs.unused_given`: the one rule of attack, audit, sweep and detect specs)."""
    bad = unused_given(obj, rules)
    if bad is not None:
        raise FieldError(loc + (bad[0],), bad[1])


def check_decoy_class(train: ImageSet, dc: int | str, loc: tuple) -> int:
    """A decoy class (index, or name) of the training set, as its index."""
    classes = list(train.classes)
    if isinstance(dc, str):
        if dc in classes:
            return classes.index(dc)
        hint = (f" (a class index is a number: {int(dc)}, not {dc!r})" if dc.isdigit() else "")
        raise FieldError(loc, f"unknown class {dc!r} in {train.name}{hint}; classes: " + ", ".join(classes[:20]))
    if not 0 <= dc < len(classes):
        raise FieldError(loc, f"class index {dc} out of range: {train.name} has {len(classes)} classes "
                              f"(0..{len(classes) - 1})")
    return dc


def check_attack(db: Session, model: Model, train: ImageSet, attack: AttackParams, loc: tuple) -> AttackParams:
    """The attack's layers resolved to names, its units, decoys and k in range; decoy class → index;
    fields its kind does not use refused (:data:`fvaudit.jobs.specs.ATTACK_FIELD_KINDS`)."""
    refuse_unused(attack, attack_rules([attack.kind]), loc)
    layers, infos = [], []
    for i, name in enumerate(attack.layers):
        info = check_layer(model, name, loc + ("layers", i))
        layers.append(info["name"])
        infos.append(info)
    if len(set(layers)) != len(layers):
        raise FieldError(loc + ("layers",), "a layer is listed twice")
    if attack.units is not None:
        info = infos[0]
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
    update: dict = {"layers": layers}
    if attack.decoy_class is not None:
        update["decoy_class"] = check_decoy_class(train, attack.decoy_class, loc + ("decoy_class",))
    from fvaudit.engine.attack.kinds import ATTACK_KINDS

    if ATTACK_KINDS[attack.kind].target_image and len(layers) != 1:
        raise FieldError(loc + ("layers",), f"{attack.kind} attacks the units of exactly one layer, got {len(layers)}")
    if attack.target_images is not None:
        n_units = len(attack.units) if attack.units is not None else infos[0]["units"]
        check_target_images(db, attack.target_images, n_units, loc + ("target_images",))
    return attack.model_copy(update=update)


#: the kind of artifact an uploaded Slingshots target is stored as (``POST /target-images``)
TARGET_ARTIFACT_KIND = "target_image"


def target_png(image) -> bytes:
    """A target image (PIL) as the PNG the store keeps: marked by a text chunk, so its bytes never
    equal a thumbnail's or a rendered image's (the content-addressed store would hand back that
    artifact, of another kind, and the target could not be named in an attack)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("fvaudit", TARGET_ARTIFACT_KIND)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def check_target_images(db: Session, refs, n_units: int, loc: tuple) -> None:
    """Slingshots targets (SPEC §8.1): one for every unit or one per attacked unit; each an
    uploaded target image or an image of a registered set, within its range."""
    from fvaudit.db.tables import Artifact

    if len(refs) not in (1, n_units):
        raise FieldError(loc, f"give one target image for every unit or one per attacked unit ({n_units}), "
                              f"got {len(refs)}")
    for i, ref in enumerate(refs):
        if ref.artifact_id is not None:
            art = db.get(Artifact, ref.artifact_id)
            if art is None or art.kind != TARGET_ARTIFACT_KIND:
                raise FieldError(loc + (i, "artifact_id"), f"no uploaded target image {ref.artifact_id} "
                                                           "(upload one with POST /api/v1/target-images)")
        else:
            s = get_image_set(db, ref.image_set_id, loc + (i, "image_set_id"))
            if ref.image_id >= s.size:
                raise FieldError(loc + (i, "image_id"), f"image id {ref.image_id} out of range: {s.name} has "
                                                        f"{s.size} images (0..{s.size - 1})")


def check_classes_match(model: Model, image_set: ImageSet, loc: tuple) -> None:
    """An image set the model is measured on must have the model's classes (else accuracy means nothing)."""
    n = len(model.class_names or [])
    if n and len(image_set.classes) != n:
        raise FieldError(loc, f"image set {image_set.name} has {len(image_set.classes)} classes, the model "
                              f"{model.name} has {n}: accuracy on it would be meaningless")

