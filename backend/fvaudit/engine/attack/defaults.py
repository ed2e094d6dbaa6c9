"""The one set of attack defaults (SPEC §2), shared by the engine, the CLI, the API and the form.

Torch-free on purpose: the API's job specs import it without loading torch. The
engine's :class:`~fvaudit.engine.attack.config.AttackConfig`, the CLI's ``fvaudit attack``
flags and the service's attack parameters all take their defaults from
:data:`ATTACK_DEFAULTS`; the dashboard's launch form reads them from the API. Change a
value here and every entry point follows.

The values were chosen by measurement on the Fashion-MNIST demo CNN (``bench/attack_frontier.py``;
its numbers are in ``bench/results/attack_frontier.jsonl``, not here, where they would go stale):
Adam at a constant lr drifts even at α = 0 (it turns the near-zero distillation gradients around
θ_init into lr-sized steps), so the lr decays on a cosine, which keeps the attacks and stills the
α = 0 control. The thesis' own ImageNet settings (Adam, lr 1e-5, batch 256, 5 epochs) remain one
flag away.
"""
from __future__ import annotations

ATTACK_DEFAULTS: dict = {
    "k": 10,                 # |D_attack(j)|: the initial top-k pushed down
    "alpha_init": 0.1,       # dynamic α starts here (SPEC §2)
    "alpha_max": 0.99,
    "alpha_factor": 2.0,     # dynamic α: ÷factor when over budget, ×factor (≤ α_max) otherwise
    "acc_budget_pp": 0.5,    # allowed accuracy drop on the full validation set, pp
    "eval_every": 100,       # steps between evaluations (at most one epoch)
    "eval_size": 10000,      # at most this many validation images drive the α controller (0 = all)
    "lr": 3e-4,              # learning rate (Adam by default)
    "optimizer": "adam",     # "adam" | "sgd" (SGD with momentum 0.9): honest fine-tunes use both
    "maintain": "distill",   # L_M: "distill" from θ_init (SPEC §2) | "labels": cross-entropy on the training labels
    "lr_schedule": "cosine",  # "constant" | "cosine" (decays to 0 at the last step)
    "anchor_weight": 0.0,    # loss variant: + anchor_weight/2 · ‖θ − θ_init‖² (L2-SP), 0 = off
    "steps": 1500,
    "batch_size": 128,
    "attack_batch_size": 64,
    "decoy_batch_size": 32,
    "score_norm": "batch_mean",
    "n_decoys": 100,
    "seed": 0,
    "checkpoint_every": 100,
    # Gradient Slingshots (SPEC §8.1) and the combined attack (§8.2)
    "gamma": 1000.0,          # γ of the wanted landscape φ(q) = −γ/2·‖q_t − q‖²
    # measured on the demo CNN (bench/slingshot.py, README): the render's Adam leaves the straight
    # segment p·q_t of SPEC §8.1 after its first steps (every entry moves at about its lr toward its
    # target), so the tunnel follows Adam's own path clip(q_t, ±r), widened to sd 0.1
    "tunnel_sd": 0.1,         # u ~ U(−sd, sd) around the path
    "tunnel_batch": 8,        # tunnel samples per attacked unit per step
    "tunnel_path": "clipped",  # "clipped": Adam's path clip(q_t, ±r) + u | "segment": q = p·q_t + u (SPEC §8.1)
    "slingshot_form": "gradient",   # "gradient" (double back-propagation) | "activation"
    "slingshot_norm": "cosine",     # "cosine": 1 − cos(∇_q a_j, wanted field): its direction (what a render's Adam follows); "relative": MSE ÷ mean wanted² | "none": the paper's MSE
    "slingshot_weight": 1.0,  # the combined attack: L_A = L_push-up + weight·L_S
    "unit_weight": 0.1,       # w of L_P = w·MSE(a_j) + (1 − w)·MSE(A_l) on natural images
    "softplus": False,        # ReLU → Softplus (β 10) inside L_S while fine-tuning (the paper's replace_relu)
    "fv_objective": "score",  # the objective the auditor renders with: "score" (SPEC §4 a_j) | "channel_mean"
    "fv_transforms": True,    # L_S sees the render's random jitter/scale/rotation, as the auditor's render does
}
