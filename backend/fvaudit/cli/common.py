"""What several `fvaudit` command modules share: argument types, the attack tuning flags,
the cache directory, the top-k embedder and the error exit."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fvaudit.config import engine_cache_dir
from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS


def model_args(sp) -> None:
    """--model, --checkpoint, --device."""
    sp.add_argument("--model", default="fmnist-cnn", help="registry name (fvaudit models)")
    sp.add_argument("--checkpoint", help="local weights: .safetensors or weights-only .pt")
    sp.add_argument("--device", default="cpu")


def cache_dir() -> Path:
    """The engine's cache when no server runs (decoded images, embeddings): the one rule in
    :func:`fvaudit.config.engine_cache_dir`, without a data dir."""
    return engine_cache_dir()


def int_list(s: str | None) -> list[int] | None:
    if s is None or s in ("", "all"):
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")


def alpha(s: str) -> float | None:
    if s == "dynamic":
        return None
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha must be a number in [0, 1] or 'dynamic', got {s!r}")


def attack_tuning_args(sp) -> None:
    """The attack settings shared by `fvaudit attack` and `fvaudit demo-experiment`; defaults
    from ATTACK_DEFAULTS (the same as the API's and the form's)."""
    sp.add_argument("--lr", type=float, default=ATTACK_DEFAULTS["lr"], help="learning rate")
    sp.add_argument("--lr-schedule", choices=["constant", "cosine"], default=ATTACK_DEFAULTS["lr_schedule"])
    sp.add_argument("--optimizer", choices=["adam", "sgd"], default=ATTACK_DEFAULTS["optimizer"],
                    help="Adam (SPEC §2) or SGD with momentum 0.9")
    sp.add_argument("--maintain", choices=["distill", "labels"], default=ATTACK_DEFAULTS["maintain"],
                    help="L_M: distillation from θ_init (SPEC §2) or cross-entropy on the training labels (an honest "
                         "fine-tune's loss: with --kind finetune, a clean model for a detector's calibration family)")
    sp.add_argument("--batch-size", type=int, default=ATTACK_DEFAULTS["batch_size"])
    sp.add_argument("--attack-batch-size", type=int, default=ATTACK_DEFAULTS["attack_batch_size"])
    sp.add_argument("--decoy-batch-size", type=int, default=ATTACK_DEFAULTS["decoy_batch_size"])
    sp.add_argument("--eval-every", type=int, default=ATTACK_DEFAULTS["eval_every"], help="steps between evaluations")
    sp.add_argument("--eval-size", type=int, default=ATTACK_DEFAULTS["eval_size"],
                    help="validation images the α controller reads (0 = all); the budget is always "
                         "decided on the full validation set")
    sp.add_argument("--acc-budget", type=float, default=ATTACK_DEFAULTS["acc_budget_pp"], help="allowed accuracy drop in pp")
    sp.add_argument("--alpha-max", type=float, default=ATTACK_DEFAULTS["alpha_max"])
    sp.add_argument("--alpha-factor", type=float, default=ATTACK_DEFAULTS["alpha_factor"],
                    help="dynamic α: divided by this when over budget, multiplied otherwise")
    sp.add_argument("--anchor-weight", type=float, default=ATTACK_DEFAULTS["anchor_weight"],
                    help="loss variant: + w/2·‖θ−θ_init‖² (L2-SP); 0 = off")



def fail(msg: str) -> int:
    print(f"fvaudit: error: {msg}", file=sys.stderr)
    return 2



def make_embed_topk(spec: str, image_set, device: str = "cpu"):
    """(embed_topk callable or None, embedder id, warning) for an embedder spec: the engine's
    one factory (:func:`~fvaudit.engine.measure.embedders.make_topk_embedder`) on the CLI's cache."""
    from fvaudit.engine.measure.embedders import make_topk_embedder

    made = make_topk_embedder(spec, image_set, cache_dir(), device)
    return (made.embed, made.id, made.warning) if made is not None else (None, None, None)


def format_alpha_trajectory(traj) -> str:
    """``step:α(drop on subset[/drop on full set])`` per evaluation, compact enough for one line."""
    parts = []
    for e in traj:
        full = "" if e.full_drop_pp is None or e.full_n_images == e.n_images else f"/{e.full_drop_pp:+.2f}"
        parts.append(f"{e.step}:{e.alpha_before:.3g}→{e.alpha_after:.3g}({e.drop_pp:+.2f}{full})")
    return " ".join(parts)
