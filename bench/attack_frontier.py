"""The attack-strength / control-drift frontier on the demo CNN (issue: accuracy budget, item 3).

A higher learning rate makes the attacks stronger and the α = 0 control drift; this bench
measures both sides at each point of a grid of settings, with every accuracy decided on
the full validation set (SPEC §2), and appends one JSON line per (settings, row) to
``bench/results/attack_frontier.jsonl``. ``--summary`` prints the table of what was
measured so far (the frontier), one line per settings, against the goals:

  control (α = 0):        Kendall-τ ≥ 0.95 and CLIP-δ ≤ 0.02
  push-down relu3:        CLIP-δ ≥ 0.50 and Kendall-τ ≤ 0.15 within 0.5 pp
  push-up (Bag) relu3:    the class in the validation top-5 of ≥ 95 % of attacked units within 0.5 pp

  python bench/attack_frontier.py --rows control --grid 'lr=3e-4;lr_schedule=cosine'
  python bench/attack_frontier.py --summary

Each grid point is ``field=value,...`` (AttackConfig fields); points are separated by ``;``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
RESULTS = ROOT / "bench" / "results" / "attack_frontier.jsonl"

from fvaudit import _tv_guard  # noqa: E402,F401

GOALS = {"control": "τ≥0.95, δ≤0.02", "push_down": "δ≥0.50, τ≤0.15, ≤0.5pp", "push_up": "≥95% units, ≤0.5pp"}


def _parse_point(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out


def run(points: list[dict], rows: list[str], out_dir: Path, train_limit: int | None = None,
        val_limit: int | None = None, results: Path = RESULTS) -> None:
    from fvaudit.cli.common import make_embed_topk
    from fvaudit.cli.progress import RichReporter
    from fvaudit.cli.demo_experiment import ROWS
    from fvaudit.engine.scans.activations import scan
    from fvaudit.engine.attack.config import AttackConfig, Target
    from fvaudit.engine.audit import run_audit
    from fvaudit.engine.data.images import open_image_set
    from fvaudit.engine.models.sources import load_model

    model = load_model("fmnist-cnn")
    # limits are the seeded class-stratified samples the service's image sets use (the demo: 10000 / 2000)
    train = open_image_set("fashion-mnist:train", limit=train_limit)
    val = open_image_set("fashion-mnist:test", limit=val_limit)
    embed, emb_id, _ = make_embed_topk("efficientnet-lite0", val, "cpu")
    with RichReporter(verbose=False) as rep:
        init_train = scan(model, train, ["relu1", "relu3"], k=10, reporter=rep)
        init_val = scan(model, val, ["relu1", "relu3"], k=10, reporter=rep)
        for point in points:
            for key in rows:
                name, kind, layers, extra = ROWS[key]
                if key == "control":
                    layers = ["relu3"]
                cfg = AttackConfig(kind=kind, targets=[Target(l) for l in layers], **extra, **point)
                tag = ",".join(f"{k}={v}" for k, v in sorted(point.items())) or "defaults"
                t = time.perf_counter()
                res = run_audit(name, model, train, val, cfg, out_dir / tag.replace("=", "_") / key, embed_topk=embed,
                                embedder_id=emb_id, reporter=rep, init_train=init_train, init_val=init_val)
                a = res.attack
                rec = {"point": point, "row": key, "embedder": emb_id, "n_train": len(train), "n_val": len(val),
                       "config": {k: v for k, v in cfg.to_json().items() if k not in ("targets", "device")}, "seconds_attack": res.timings.get("attack"),
                       "seconds_total": time.perf_counter() - t, "acc_init": a.acc_init, "n_images": a.acc_n_images,
                       "eval_n_images": a.eval_n_images, "selected_step": a.selected_step, "steps": a.steps,
                       "full_evaluations": a.full_evaluations,
                       "alpha": [(e.step, e.alpha_after, round(e.drop_pp, 3),
                                  None if e.full_drop_pp is None else round(e.full_drop_pp, 3))
                                 for e in a.alpha_trajectory],
                       "states": {}}
                for st, sm in res.states.items():
                    row = sm.rows(name)[-1]
                    d = {"delta_acc": row.delta_acc, "step": row.step, "over_budget": row.over_budget, **row.values}
                    if sm.pushup and "val" in sm.pushup:
                        d["pushup_val"] = sm.pushup["val"].get("relu3")
                        d["pushup_val_init"] = sm.pushup["val_init"].get("relu3")
                    rec["states"][st] = d
                results.parent.mkdir(parents=True, exist_ok=True)
                with open(results, "a") as fh:
                    fh.write(json.dumps(rec, default=float) + "\n")
                print(_line(rec), flush=True)


def _line(rec: dict) -> str:
    p = ",".join(f"{k}={v}" for k, v in sorted(rec["point"].items())) or "defaults"
    cells = []
    for st in ("selected", "final"):
        s = rec["states"].get(st)
        if not s:
            continue
        txt = (f"{st}@{s['step']}: δ {_f(s.get('clip_delta'))} τ {_f(s.get('kendall_tau'))} "
               f"ov {_f(s.get('topk_overlap'))} Δacc {_f(s['delta_acc'], 2, True)}")
        pu = s.get("pushup_val")
        if pu:
            txt += f" bag-units {_f(pu.get('share_units_with_decoy_class'))}"
        cells.append(txt)
    return f"{rec['row']:<16} {p:<58} {' | '.join(cells)}  [{rec['seconds_attack']:.0f} s attack]"


def _f(v, nd=3, signed=False):
    if v is None:
        return "—"
    return f"{v:+.{nd}f}" if signed else f"{v:.{nd}f}"


def summary(results: Path = RESULTS) -> None:
    if not results.exists():
        print("no results yet")
        return
    recs = [json.loads(l) for l in results.read_text().splitlines() if l.strip()]
    print(f"{len(recs)} runs (goals: " + "; ".join(f"{k} {v}" for k, v in GOALS.items()) + ")")
    for rec in sorted(recs, key=lambda r: (r["row"], json.dumps(r["point"], sort_keys=True))):
        print(_line(rec))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="", help="points 'field=value,...' separated by ';'")
    ap.add_argument("--rows", default="control,push_down,push_up")
    ap.add_argument("--out", type=Path, default=Path("/tmp/fvaudit-frontier"))
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--train-limit", type=int, default=0, help="stratified sample of the training set (0 = all 60000)")
    ap.add_argument("--val-limit", type=int, default=0, help="stratified sample of the validation set (0 = all 10000)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    args = ap.parse_args()
    if args.summary:
        summary(args.results)
        return 0
    points = [_parse_point(p) for p in args.grid.split(";")] if args.grid else [{}]
    run(points, [r for r in args.rows.split(",") if r], args.out, args.train_limit or None, args.val_limit or None,
        args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
