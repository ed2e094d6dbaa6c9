"""The real experiment on the demo model: Table 3.1 for Fashion-MNIST (issue: Engine, item 9).

Four runs on the Fashion-MNIST demo CNN with one set of settings, sharing one θ_init scan
of each set: the α = 0 fine-tuning control (measured on conv3 and conv1), all-channel
push-down on conv3 (the last conv layer), all-channel push-down on conv1 (the first), and
a push-up of conv3 with a decoy class. Prints, per row, the selected and the final state
with the number of images each accuracy was measured on, the control's row next to each
attack, the α trajectories, and the time of every stage.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from fvaudit import _tv_guard  # noqa: F401

DECOY_CLASS = "Bag"


#: the rows of the experiment: name, attack kind, target layer(s), extra AttackConfig fields
ROWS = {
    "control": ("fine-tune only (α=0), the control", "finetune", ["relu3", "relu1"], {"alpha": 0.0}),
    "push_up": ("conv3 push-up (Bag)", "push_up", ["relu3"], {"decoy_class": DECOY_CLASS}),
    "push_down": ("conv3 push-down", "push_down", ["relu3"], {}),
    "push_down_conv1": ("conv1 push-down", "push_down", ["relu1"], {}),
}


def run_demo_experiment(out: Path, steps: int | None = None, embedder: str = "auto", quick: bool = False,
                        device: str = "cpu", rows: list[str] | None = None, tuning: dict | None = None) -> int:
    """Run the chosen rows with one set of settings (``tuning``: AttackConfig fields, defaults
    from ATTACK_DEFAULTS); the control (α = 0, same settings) is measured on every layer an
    attack row uses, and printed next to each attack's selected and final states."""
    import torch

    from fvaudit.cli.common import format_alpha_trajectory, make_embed_topk
    from fvaudit.cli.progress import RichReporter
    from fvaudit.engine.scans.activations import scan
    from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS
    from fvaudit.engine.attack.config import AttackConfig, Target
    from fvaudit.engine.audit import run_audit
    from fvaudit.engine.data.images import open_image_set
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.measure.report import format_table

    rows = rows or list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    torch.manual_seed(0)
    t_all = time.perf_counter()
    model = load_model("fmnist-cnn", device=device)
    train = open_image_set("fashion-mnist:train", limit=6000 if quick else None)
    val = open_image_set("fashion-mnist:test", limit=2000 if quick else None)
    steps = 20 if quick else (steps or ATTACK_DEFAULTS["steps"])
    # a CLIP fall-back is logged once as a WARNING by the engine (embedders.default_embedder)
    # and kept in the summary below
    embed, emb_id, warning = make_embed_topk(embedder, val, device)
    common = dict(tuning or {})
    common.update(steps=steps, device=device)
    if quick:
        common.update(eval_every=10)
    stage_times: dict[str, dict] = {}
    table_rows = []
    results = {}
    with RichReporter(verbose=False) as rep:
        t = time.perf_counter()
        rep.stage("θ_init scans")
        init_train = scan(model, train, ["relu1", "relu3"], k=10, device=device, reporter=rep)
        init_val = scan(model, val, ["relu1", "relu3"], k=10, device=device, reporter=rep)
        stage_times["shared θ_init scans"] = {"total": time.perf_counter() - t}
        control = None
        for key in (["control"] if "control" in rows else []) + [r for r in rows if r != "control"]:
            name, kind, layers, extra = ROWS[key]
            cfg = AttackConfig(kind=kind, targets=[Target(l) for l in layers], **extra, **common)
            res = run_audit(name, model, train, val, cfg, out / key, embed_topk=embed, embedder_id=emb_id,
                            reporter=rep, init_train=init_train, init_val=init_val,
                            control=None if key == "control" else control)
            results[key] = res
            if key == "control":
                control = res   # its rows are printed once, as the control, above the attacks
                table_rows += [dataclasses.replace(r, state="control") for r in res.states["selected"].rows(name)]
            else:
                table_rows += [r for r in res.rows() if r.state != "control"]
            stage_times[name] = dict(res.timings)
            if res.pushup:
                stage_times[name]["pushup"] = res.pushup
    table = format_table(table_rows)
    total = time.perf_counter() - t_all
    print()
    print(f"Fashion-MNIST demo CNN, {len(train)} train / {len(val)} test images, {steps} steps, settings "
          + ", ".join(f"{k}={v}" for k, v in sorted(common.items()) if k not in ("steps", "device"))
          + f"; CLIP metrics by {emb_id}")
    print(f"every accuracy measured on the full validation set ({len(val)} images, column n); "
          "'selected' = latest evaluated state within the budget there, 'final' = the last step's state")
    print(table)
    print("\nα trajectories (step:α before→after(drop on the controller's subset/on the full set, pp)):")
    for key, res in results.items():
        a = res.attack
        print(f"  {res.name}: controller on {a.eval_n_images} images, {a.full_evaluations} full-set checks; "
              + format_alpha_trajectory(a.alpha_trajectory))
    print("\nstage times (s):")
    for name, st in stage_times.items():
        print("  " + name + ": " + ", ".join(f"{k} {v:.1f}" for k, v in st.items() if isinstance(v, float)))
        if "pushup" in st:
            for split, per_layer in st["pushup"].items():
                for layer, sh in per_layer.items():
                    print(f"    push-up success ({split}, {layer}): " + ", ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in sh.items()))
    print(f"total {total:.1f} s; run directories under {out}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({
        "embedder": emb_id, "warning": warning, "steps": steps, "settings": common, "stage_times": stage_times,
        "total_seconds": total, "rows": [dataclasses.asdict(r) for r in table_rows],
        "alpha_trajectories": {k: [dataclasses.asdict(e) for e in r.attack.alpha_trajectory]
                               for k, r in results.items()}}, indent=1, default=str))
    return 0
