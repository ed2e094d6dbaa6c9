"""Gradient Slingshots and the combined attack on the demo CNN (issue 21, SPEC §8.1–8.2).

Rows (each a full audit of relu3 units: scans, attack, metrics on the validation set, then the
units' synthetic visualizations rendered under θ_init and the selected state with seeds the
attack never saw, compared with the target):

  slingshot          FV of each unit toward a target image of another class (default Ankle boot)
  push_up_slingshot  push-up toward the decoy class and Slingshots toward an image of it (Bag)
  control            kind slingshot with α = 0 and the same settings (the fine-tune alone)

Per row: the share of units whose FV moved toward the target (embedder cosine: closer to the
target than to the unit's original FV), the median FV→target SSIM and cosine (before → after),
ΔAcc on the full validation set, the natural top-k overlap and CLIP-δ (SPEC §3), the decoy
class's share of the units' val top-5 (combined row), the top-class AUROC before → after and
natural–synthetic agreement before → after; and the seconds per step of each attack against a
plain fine-tune step of the same batch measured in the same run (double back-propagation costs).

  python bench/slingshot.py                      # every row, writes bench/results/slingshot.{json,md}
  python bench/slingshot.py --rows slingshot --steps 300 --units 0,1,2,3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
RESULTS = ROOT / "bench" / "results"

from fvaudit import _tv_guard  # noqa: E402,F401

GOALS = ("slingshot: moved ≥ 90 %, median SSIM to target ≥ 0.5, ΔAcc ≥ −0.5 pp, top-k overlap ≥ 0.8; "
         "control: does not move; combined: decoy in the val top-5 of ≥ 90 % and FV at the target within 0.5 pp, "
         "agreement no lower than the clean model's")


def step_seconds(model, train, val, cfg, init_scans, n: int = 12) -> float:
    """Median seconds of one optimizer step of ``cfg`` on one fixed batch (the loss and its
    backward, nothing else), after two warm-up steps."""
    from fvaudit.engine.attack.run import _AttackRun, resolve_targets
    from fvaudit.engine.progress import NullReporter

    import dataclasses

    cfg = dataclasses.replace(cfg, workers=0)   # no loader processes decoding ahead while the steps are timed
    cfg.validate()
    rep = NullReporter()
    run = _AttackRun(model, train, val, cfg, resolve_targets(model, train, cfg, init_scans, rep), rep)
    try:
        feed = iter(run.feed())
        _, (pos, xb), extra = next(feed)
        times = []
        for i in range(n + 2):
            t0 = time.perf_counter()
            run.train_step(i, xb, extra, pos)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        run.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="slingshot,push_up_slingshot,control")
    ap.add_argument("--units", default="0,1,2,3,4,5,6,7", help="relu3 units (dead ones are left out)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, default=None, help="a fixed α for the attack rows (the paper's option); "
                                                               "default: SPEC §2's dynamic α")
    ap.add_argument("--target-class", default="Ankle boot")
    ap.add_argument("--decoy-class", default="Bag")
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--grid", default="", help="extra AttackConfig fields for the attack rows, e.g. "
                                               "'tunnel_path=clipped,tunnel_sd=0.1'")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-slingshot")
    ap.add_argument("--results", type=Path, default=RESULTS / "slingshot.json")
    ap.add_argument("--step-cost-only", action="store_true",
                    help="only time the rows' steps against a fine-tune step (back to back, 3 times each) and "
                         "write them into --results")
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from fvaudit.cli.progress import RichReporter
    from fvaudit.engine.attack.config import AttackConfig, Target
    from fvaudit.engine.attack.slingshot import load_targets
    from fvaudit.engine.audit import run_audit
    from fvaudit.engine.data.images import open_image_set
    from fvaudit.engine.measure.embedders import make_topk_embedder
    from fvaudit.engine.measure.fv_manipulation import measure_fv_manipulation
    from fvaudit.engine.measure.synthetic import embed_images
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.scans.activations import scan

    model = load_model("fmnist-cnn")
    train = open_image_set("fashion-mnist:train", limit=args.train_limit)
    val = open_image_set("fashion-mnist:test")                 # the full validation set: ΔAcc and the budget
    units = [int(u) for u in args.units.split(",")]
    extra = {}
    for part in filter(None, args.grid.split(",")):
        k, v = part.split("=", 1)
        try:
            extra[k] = json.loads(v)
        except json.JSONDecodeError:
            extra[k] = v
    from fvaudit.cli.common import cache_dir

    made = make_topk_embedder("efficientnet-lite0", val, cache_dir(), "cpu")
    emb = lambda im: embed_images(made.embedder, im)            # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)

    def target_of(cls_name: str) -> str:
        ids = train.class_ids(train.class_index(cls_name))
        path = args.out / f"target_{cls_name.replace(' ', '_')}_{int(ids[0])}.png"
        Image.fromarray(train.load_array(int(ids[0]))).save(path)
        return str(path)

    base = dict(targets=[Target("relu3", units)], steps=args.steps, lr=args.lr, batch_size=128, eval_every=100,
                eval_size=2000, seed=0)
    rows_def = {
        "slingshot": dict(kind="slingshot", target_images=[target_of(args.target_class)], alpha=args.alpha, **extra),
        "push_up_slingshot": dict(kind="push_up_slingshot", target_images=[target_of(args.decoy_class)],
                                  decoy_class=args.decoy_class, alpha=args.alpha, **extra),
        "control": dict(kind="slingshot", alpha=0.0, target_images=[target_of(args.target_class)]),
    }
    init_train = scan(model, train, ["relu3"], k=10)
    if args.step_cost_only:
        results = json.loads(args.results.read_text())
        for key in [r for r in args.rows.split(",") if r]:
            pairs = []
            for _ in range(3):
                ft = step_seconds(model, train, val, AttackConfig(kind="finetune", **{**base, "steps": 20}),
                                  init_train.layers)
                row = step_seconds(model, train, val, AttackConfig(**{**base, **rows_def[key], "steps": 20}),
                                   init_train.layers)
                pairs.append((row, ft))
            row_s, ft_s = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            results["rows"][key].update(step_seconds=row_s, finetune_step_seconds=ft_s, step_cost_ratio=row_s / ft_s)
            print(f"{key}: {row_s:.4f} s/step against a fine-tune step of {ft_s:.4f} s: ×{row_s / ft_s:.2f}")
        args.results.write_text(json.dumps(results, indent=1, default=float))
        args.results.with_suffix(".md").write_text(table(results))
        print(table(results))
        return 0
    init_val = scan(model, val, ["relu3"], k=10)
    results = {"goals": GOALS, "settings": {**{k: v for k, v in base.items() if k != "targets"}, "units": units,
                                            "train_limit": args.train_limit, "val": "fashion-mnist:test (all)",
                                            "alpha": args.alpha if args.alpha is not None else "dynamic",
                                            "grid": extra, "embedder": made.id}, "rows": {}}
    for key in [r for r in args.rows.split(",") if r]:
        cfg = AttackConfig(**{**base, **rows_def[key]})
        shutil.rmtree(args.out / key, ignore_errors=True)      # a fresh run, never another setting's checkpoint
        t0 = time.perf_counter()
        with RichReporter() as rep:
            res = run_audit(f"relu3 {key}", model, train, val, cfg, args.out / key, init_train=init_train,
                            init_val=init_val, embed_topk=made.embed, embedder_id=made.id, k_clip=5, reporter=rep)
        seconds = time.perf_counter() - t0
        a = res.attack
        att = a.attacked["relu3"]
        targets = load_targets(cfg.target_images, len(att), model.input_shape)
        sv = res.scans["val_selected"]["relu3"]
        iv = init_val.layers["relu3"]
        labels = np.asarray(val.labels)
        nat = (made.embed(np.asarray(iv.topk_ids)[att, :5]), made.embed(np.asarray(sv.topk_ids)[att, :5]))
        m = measure_fv_manipulation(model, a.selected_model, "relu3", att, targets, embed=emb,
                                    val_scores=(np.asarray(iv.scores)[:, att], np.asarray(sv.scores)[:, att]),
                                    val_labels=labels, topk_labels=labels[np.asarray(iv.topk_ids)[att]],
                                    natural_embeddings=nat)
        sheet = np.concatenate([m.targets, m.images_before[0], m.images_after[0]])
        from fvaudit.engine.synthesis.render import save_grid

        save_grid(sheet, args.out / f"{key}.png", cols=len(att))
        agg = m.aggregates()
        # the two step timings back to back, so a load change between rows touches both alike
        ft_step = step_seconds(model, train, val, AttackConfig(kind="finetune", **{**base, "steps": 20}),
                               init_train.layers)
        per_step = step_seconds(model, train, val, AttackConfig(**{**base, **rows_def[key], "steps": 20}),
                                init_train.layers)
        row = {"kind": cfg.kind, "alpha": cfg.alpha, "attacked": att, "delta_acc_pp": a.delta_selected,
               "acc_n_images": a.acc_n_images, "selected_step": a.selected_step, "steps": a.steps,
               "topk_overlap": res.table_row.values.get("topk_overlap"),
               "clip_delta": res.table_row.values.get("clip_delta"),
               "decoy_in_val_top5": (((res.pushup or {}).get("val") or {}).get("relu3") or {}).get(
                   "share_units_with_decoy_class"),
               "decoy_in_val_top5_init": (((res.pushup or {}).get("val_init") or {}).get("relu3") or {}).get(
                   "share_units_with_decoy_class"),
               **agg, "per_unit": m.per_unit(), "seconds": seconds, "step_seconds": per_step,
               "finetune_step_seconds": ft_step, "step_cost_ratio": per_step / ft_step,
               "sheet": str((args.out / f"{key}.png").relative_to(ROOT)) if args.out.is_relative_to(ROOT) else None}
        results["rows"][key] = row
        print(f"{key}: moved {agg['moved_share']:.0%}, SSIM→target {agg['ssim_target_before']:.3f} → "
              f"{agg['ssim_target_after']:.3f}, cos→target {agg['cos_target_before']:.3f} → {agg['cos_target_after']:.3f}, "
              f"ΔAcc {a.delta_selected:+.2f} pp, top-k overlap {row['topk_overlap']}, step ×{row['step_cost_ratio']:.1f} "
              f"of a fine-tune step")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1, default=float))
    md = args.results.with_suffix(".md")
    md.write_text(table(results))
    print(table(results))
    print(f"wrote {args.results} and {md}")
    return 0


def table(results: dict) -> str:
    def f(v, p=3):
        return "—" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))

    head = ("| row | units | moved | SSIM→target before → after | cos→target before → after | ΔAcc pp | top-k overlap "
            "| CLIP-δ | decoy in val top-5 | AUROC before → after | agreement before → after | s/step (× fine-tune) |")
    lines = ["# Gradient Slingshots on the demo CNN (bench/slingshot.py)", "", f"Goals: {results['goals']}", "",
             f"Settings: `{json.dumps(results['settings'])}`", "", head, "|" + "---|" * 12]
    for key, r in results["rows"].items():
        lines.append(
            f"| {key} | {len(r['attacked'])} | {r['moved_share']:.0%} | {f(r['ssim_target_before'])} → {f(r['ssim_target_after'])} "
            f"| {f(r['cos_target_before'])} → {f(r['cos_target_after'])} | {r['delta_acc_pp']:+.2f} | {f(r['topk_overlap'])} "
            f"| {f(r['clip_delta'])} | {f(r['decoy_in_val_top5_init'], 2)} → {f(r['decoy_in_val_top5'], 2)} "
            f"| {f(r['auroc_before'])} → {f(r['auroc_after'])} | {f(r['agreement_before'])} → {f(r['agreement_after'])} "
            f"| {r['step_seconds']:.3f} (×{r['step_cost_ratio']:.1f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
