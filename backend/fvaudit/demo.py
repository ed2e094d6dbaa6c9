"""The real experiment on the demo model: Table 3.1 for Fashion-MNIST (issue: Engine, item 9).

Four runs on the Fashion-MNIST demo CNN, sharing one θ_init scan of each set:
α = 0 fine-tuning baseline on conv3, all-channel push-down on conv3 (the last conv
layer), all-channel push-down on conv1 (the first), and a push-up of conv3 with a decoy
class. Prints the Table 3.1-style table and the time of every stage.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fvaudit import _tv_guard  # noqa: F401

DECOY_CLASS = "Bag"


def run_demo_experiment(out: Path, steps: int = 400, lr: float = 1e-4, embedder: str = "auto",
                        quick: bool = False, device: str = "cpu") -> int:
    import torch

    from fvaudit.cli import cache_dir, make_embed_topk
    from fvaudit.cli_progress import RichReporter
    from fvaudit.engine.activations import scan
    from fvaudit.engine.attacks import AttackConfig, Target
    from fvaudit.engine.experiment import run_audit
    from fvaudit.engine.images import open_image_set
    from fvaudit.engine.models import load_model
    from fvaudit.engine.report import format_table

    torch.manual_seed(0)
    t_all = time.perf_counter()
    model = load_model("fmnist-cnn", device=device)
    train = open_image_set("fashion-mnist:train", limit=6000 if quick else None)
    val = open_image_set("fashion-mnist:test", limit=2000 if quick else None)
    steps = 20 if quick else steps
    embed, emb_id, warning = make_embed_topk(embedder, val, device)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    common = dict(steps=steps, lr=lr, eval_every=25, eval_size=2000, seed=0, device=device, batch_size=256,
                  checkpoint_every=100)
    runs = [
        ("conv3 fine-tune only (α=0)", AttackConfig(kind="finetune", targets=[Target("relu3")], alpha=0.0, **common)),
        ("conv3 push-up (Bag)", AttackConfig(kind="push_up", targets=[Target("relu3")], decoy_class=DECOY_CLASS, **common)),
        ("conv3 push-down", AttackConfig(kind="push_down", targets=[Target("relu3")], **common)),
        ("conv1 push-down", AttackConfig(kind="push_down", targets=[Target("relu1")], **common)),
    ]
    stage_times: dict[str, dict[str, float]] = {}
    rows = []
    with RichReporter(verbose=False) as rep:
        t = time.perf_counter()
        rep.stage("θ_init scans")
        init_train = scan(model, train, ["relu1", "relu3"], k=10, device=device, reporter=rep)
        init_val = scan(model, val, ["relu1", "relu3"], k=10, device=device, reporter=rep)
        stage_times["shared θ_init scans"] = {"total": time.perf_counter() - t}
        for name, cfg in runs:
            slug = name.split(" (")[0].replace(" ", "-").replace("(", "").replace(")", "")
            res = run_audit(name, model, train, val, cfg, out / slug, embed_topk=embed, embedder_id=emb_id,
                            reporter=rep, init_train=init_train, init_val=init_val)
            rows.append(res.table_row)
            stage_times[name] = dict(res.timings)
            if res.pushup:
                stage_times[name]["pushup"] = res.pushup  # type: ignore[assignment]
    table = format_table(rows)
    total = time.perf_counter() - t_all
    print()
    print(f"Fashion-MNIST demo CNN, {len(train)} train / {len(val)} test images, {steps} steps, lr {lr}, "
          f"dynamic α, score_norm batch_mean; CLIP metrics by {emb_id}")
    print(table)
    print("\nstage times (s):")
    for name, st in stage_times.items():
        print("  " + name + ": " + ", ".join(f"{k} {v:.1f}" for k, v in st.items() if isinstance(v, float)))
        if "pushup" in st:
            for split, per_layer in st["pushup"].items():  # type: ignore[union-attr]
                for layer, s in per_layer.items():
                    print(f"    push-up success ({split}, {layer}): " + ", ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))
    print(f"total {total:.1f} s; run directories under {out}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({"embedder": emb_id, "warning": warning, "steps": steps, "lr": lr,
                                                  "stage_times": stage_times, "total_seconds": total,
                                                  "rows": [r.__dict__ for r in rows]}, indent=1, default=str))
    return 0
