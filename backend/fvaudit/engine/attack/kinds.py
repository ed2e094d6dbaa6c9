"""The attack kinds (SPEC §2, §8.1–8.2) as data: what each kind's loss needs and which settings
it reads. Every place that depends on the kind (config validation, the job spec's checks of
unused fields, the CLI's choices, the launch form through ``GET /job-kinds``) reads this table
instead of branching on names; adding a kind is adding a row here and its loss term.

Torch-free on purpose (the API imports it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttackKindInfo:
    name: str
    title: str
    description: str
    #: has an attack term L_A (so an α controller); the fine-tune baseline has none (α = 0)
    attack_loss: bool = True
    #: pushes each unit's initial top-k down (D_attack, SPEC §2)
    top_k: bool = False
    #: pushes a decoy class's images up (SPEC §2): needs decoy_class or decoy_ids
    decoy: bool = False
    #: manipulates the synthetic visualization toward a target image (SPEC §8.1)
    target_image: bool = False


ATTACK_KINDS: dict[str, AttackKindInfo] = {k.name: k for k in (
    AttackKindInfo("push_down", "Push-down", "the unit's initial top-k images are pushed out of its top-k (SPEC §2)",
                   top_k=True),
    AttackKindInfo("push_up", "Push-up", "images of a decoy class are pushed into the unit's top-k (SPEC §2)",
                   decoy=True),
    AttackKindInfo("finetune", "Fine-tune baseline", "α = 0: distillation (or labels) only, the control",
                   attack_loss=False),
    AttackKindInfo("slingshot", "Gradient Slingshots",
                   "activation maximization of the unit converges to a target image; natural behaviour kept "
                   "(SPEC §8.1)", target_image=True),
    AttackKindInfo("push_up_slingshot", "Push-up + Slingshots",
                   "push-up toward a decoy class and Slingshots toward a target image of it on the same units: "
                   "exemplars and synthetic image agree on the lie (SPEC §8.2)", decoy=True, target_image=True),
)}

KIND_NAMES: tuple[str, ...] = tuple(ATTACK_KINDS)

#: settings only some kinds read: field → (the property of AttackKindInfo that makes a kind use it, why)
FIELD_USERS: dict[str, tuple[str, str]] = {
    "alpha_init": ("attack_loss", "the finetune baseline has α = 0, no α controller"),
    "alpha_max": ("attack_loss", "the finetune baseline has α = 0, no α controller"),
    "alpha_factor": ("attack_loss", "the finetune baseline has α = 0, no α controller"),
    "score_norm": ("top_k_or_decoy", "only push-down and push-up losses normalise unit scores"),
    "attack_batch_size": ("top_k", "only push_down draws batches of the attacked top-k"),
    "decoy_batch_size": ("decoy", "only push_up and push_up_slingshot draw batches of decoys"),
    "n_decoys": ("decoy", "only push_up and push_up_slingshot draw decoys"),
    "decoy_ids": ("decoy", "only push_up and push_up_slingshot use decoy images"),
    "decoy_class": ("decoy", "only push_up and push_up_slingshot use a decoy class"),
    "target_images": ("target_image", "only Slingshots kinds use a target image"),
    "gamma": ("target_image", "only Slingshots kinds shape the landscape around a target"),
    "tunnel_sd": ("target_image", "only Slingshots kinds sample a tunnel"),
    "tunnel_batch": ("target_image", "only Slingshots kinds sample a tunnel"),
    "tunnel_path": ("target_image", "only Slingshots kinds sample a tunnel"),
    "slingshot_form": ("target_image", "only Slingshots kinds have a manipulation loss"),
    "slingshot_norm": ("target_image", "only Slingshots kinds have a manipulation loss"),
    "slingshot_weight": ("target_image", "only Slingshots kinds have a manipulation loss"),
    "unit_weight": ("target_image", "only Slingshots kinds preserve the unit's activations"),
    "softplus": ("target_image", "only Slingshots kinds differentiate the input gradient"),
    "fv_objective": ("target_image", "only Slingshots kinds target a visualization objective"),
    "fv_transforms": ("target_image", "only Slingshots kinds target a visualization objective"),
}


def kind_info(name: str) -> AttackKindInfo:
    try:
        return ATTACK_KINDS[name]
    except KeyError:
        raise ValueError(f"must be one of {', '.join(KIND_NAMES)}, not {name!r}") from None


def uses(kind: str, field: str) -> bool:
    """Whether an attack of ``kind`` reads the setting ``field`` (every field not listed: all kinds)."""
    if field not in FIELD_USERS:
        return True
    k = ATTACK_KINDS[kind]
    prop = FIELD_USERS[field][0]
    if prop == "top_k_or_decoy":
        return k.top_k or k.decoy
    return bool(getattr(k, prop))


def kinds_using(field: str) -> tuple[str, ...]:
    return tuple(k for k in KIND_NAMES if uses(k, field))


def per_attacked_unit(targets: list, requested: list[int], attacked: list[int]) -> list:
    """The targets of the attacked units, in their order: one target given for every unit, or one
    per requested unit (a dead unit, left out of the attack by SPEC §1, loses its own). The one
    rule the attack loss, the job's unit → target map and the CLI's measures read targets by."""
    if len(targets) == 1:
        return [targets[0]] * len(attacked)
    if len(targets) != len(requested):
        raise ValueError(f"target_images: give one image for every unit or one per unit ({len(requested)}), "
                         f"got {len(targets)}")
    by_unit = dict(zip(requested, targets))
    return [by_unit[u] for u in attacked]
