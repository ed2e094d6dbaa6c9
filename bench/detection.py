"""Detection benchmark (issue 11, SPEC §6): can fvaudit tell a manipulated demo model from a clean one?

Variants of the Fashion-MNIST demo CNN (the reference R), made with the project's own code:

* calibration (used to calibrate, never reported): α = 0 fine-tunes of R, seeds 101–103;
* clean (reported, must not be flagged): α = 0 fine-tunes of R, seeds 1–3, and the demo CNN
  retrained from scratch with seeds 1 and 2 (`train_fashion_cnn`, the code behind
  `fvaudit train-demo-model`);
* attacked (reported): push-down of every live unit of relu3; push-down of 8 units of relu3;
  push-down of every live unit of relu2; push-up of every live unit of relu3 with decoy class Bag.

Every fine-tune and attack is `engine.attacks.run_attack` with the same settings (the
defaults of SPEC §2 with fewer steps, `--steps`), and the suspect is the state an attacker
would ship: the selected state, within the 0.5 pp accuracy budget on the full validation set.

Regimes (`engine.detector.detect`, layers relu2 and relu3, D_τ = the validation set):

* with a reference: R is the reference, the calibration fine-tunes the population;
  suspects: the clean fine-tunes and the attacked variants (a retrained model does not
  derive from R, so "with R as reference" means nothing for it; it is left out);
* without a reference: the population is R and the retrained seeds; a retrained seed is
  judged against the others (leave-one-out), every other suspect against all three.

Unit-level ROC AUC per attacked variant and regime: positives = the attacked (live) units
of the attacked layer, negatives = the same layer's live units in every clean variant of
that regime (SPEC §6 protocol). Model verdicts use the fixed, conventional thresholds of
`detection.VerdictThresholds` (unit 0.95, p 0.05 / 0.001): nothing is fitted to a
reported variant. Trained variants are cached under `--cache` (rerun = no retraining).

Usage: python bench/detection.py [--steps 500] [--retrain-epochs 3] [--cache .fvaudit-cache/bench-detection]
       [--synthetic-steps 64 --regimes reference+synthetic --out bench/results/detection_synthetic]
Writes bench/results/detection.json and detection.md (or --out).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))

import fvaudit  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fvaudit.engine.detection import evidence  # noqa: E402
from fvaudit.engine.attack.config import AttackConfig, Target
from fvaudit.engine.attack.run import run_attack  # noqa: E402
from fvaudit.engine.detection.run import Subject, detect  # noqa: E402
from fvaudit.engine.measure.embedders import EmbeddingCache, default_embedder, embed_topk  # noqa: E402
from fvaudit.engine.data.images import open_image_set  # noqa: E402
from fvaudit.engine.models.checkpoints import save_checkpoint
from fvaudit.engine.models.sources import load_model
from fvaudit.engine.progress import NullReporter  # noqa: E402

LAYERS = ["relu2", "relu3"]
CALIBRATION_SEEDS = (101, 102, 103)
CLEAN_SEEDS = (1, 2, 3)
RETRAIN_SEEDS = (1, 2)


class Bar(NullReporter):
    """A one-line progress display for long steps (attacks, scans)."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label, self.stage_name, self.t0 = label, "", time.time()

    def stage(self, name, total=None):
        self.stage_name = name

    def advance(self, done, total=None, **info):
        if total:
            print(f"\r  {self.label}: {self.stage_name} {done}/{total} ({time.time() - self.t0:.0f} s)   ", end="",
                  flush=True)


def variant_specs(steps: int) -> dict[str, dict]:
    base = dict(steps=steps, eval_every=max(steps // 5, 1), seed=0)
    out = {f"calib-ft-s{s}": dict(kind="finetune", layer="relu3", units=None, seed=s, role="calibration")
           for s in CALIBRATION_SEEDS}
    out.update({f"clean-ft-s{s}": dict(kind="finetune", layer="relu3", units=None, seed=s, role="clean")
                for s in CLEAN_SEEDS})
    out.update({
        "push-down relu3 (all)": dict(kind="push_down", layer="relu3", units=None, role="attacked"),
        "push-down relu3 (8 units)": dict(kind="push_down", layer="relu3", units="first8", role="attacked"),
        "push-down relu2 (all)": dict(kind="push_down", layer="relu2", units=None, role="attacked"),
        "push-up relu3 (Bag)": dict(kind="push_up", layer="relu3", units=None, decoy="Bag", role="attacked"),
    })
    for v in out.values():
        v.update({k: v.get(k, b) for k, b in base.items()})
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def make_variant(name: str, v: dict, ref, train, val, cache: Path) -> tuple[Path, dict]:
    """Fine-tune or attack R once; the selected state's weights and the attack summary are cached."""
    ck, meta_p = cache / f"{slug(name)}.safetensors", cache / f"{slug(name)}.json"
    if ck.exists() and meta_p.exists():
        return ck, json.loads(meta_p.read_text())
    units = None
    if v["units"] == "first8":
        from fvaudit.engine.scans.activations import scan

        dead = set(scan(ref, train, [v["layer"]], k=10, batch_size=512).layers[v["layer"]].dead_units)
        units = [j for j in range(ref.layer(v["layer"]).units) if j not in dead][:8]
    cfg = AttackConfig(kind=v["kind"], targets=[Target(v["layer"], units)], steps=v["steps"],
                       eval_every=v["eval_every"], seed=v["seed"],
                       decoy_class=v.get("decoy"), alpha=0.0 if v["kind"] == "finetune" else None)
    t0 = time.time()
    res = run_attack(ref, train, val, cfg, out_dir=cache / f"run-{slug(name)}", reporter=Bar(name))
    print()
    state = "selected"
    model = res.selected_model
    if res.selected_step == 0 and v["kind"] != "finetune":
        state, model = "final", res.final_model       # nothing within budget: the final state, said so
    save_checkpoint(model.module, ck, {"registry_name": "fmnist-cnn"})
    meta = {"name": name, **{k: v[k] for k in ("kind", "layer", "role", "seed", "steps")},
            "attacked": res.attacked, "dead": res.dead, "state": state, "selected_step": res.selected_step,
            "acc_init": res.acc_init, "acc_selected": res.acc_selected, "acc_final": res.acc_final,
            "seconds": round(time.time() - t0, 1)}
    meta_p.write_text(json.dumps(meta, indent=1))
    return ck, meta


def make_retrained(seed: int, epochs: int, cache: Path) -> tuple[Path, dict]:
    from fvaudit.engine.models.fmnist_cnn import save_demo_weights, train_fashion_cnn
    from fvaudit.engine.data.images import fashion_mnist

    ck, meta_p = cache / f"retrained-s{seed}.safetensors", cache / f"retrained-s{seed}.json"
    if ck.exists() and meta_p.exists():
        return ck, json.loads(meta_p.read_text())
    tr, te = fashion_mnist("train"), fashion_mnist("test")
    t0 = time.time()
    model, acc = train_fashion_cnn(tr.images, tr.labels, te.images, te.labels, epochs=epochs, seed=seed,
                                   on_epoch=lambda e, a, t: print(f"  retrain seed {seed}: epoch {e + 1}/{epochs} "
                                                                  f"test accuracy {a:.2f}% ({t:.0f} s)"))
    save_demo_weights(model, ck, acc)
    meta = {"name": f"retrained-s{seed}", "role": "clean-retrained", "seed": seed, "epochs": epochs,
            "acc": acc, "seconds": round(time.time() - t0, 1)}
    meta_p.write_text(json.dumps(meta, indent=1))
    return ck, meta


def auroc_rows(results: dict, metas: dict) -> list[dict]:
    """Unit AUROC per attacked variant and regime: attacked units vs the clean variants' units."""
    rows = []
    for regime, by_suspect in results.items():
        clean = [n for n in by_suspect if metas[n]["role"] in ("clean", "clean-retrained")]
        for name, rep in by_suspect.items():
            meta = metas[name]
            if meta["role"] != "attacked":
                continue
            layer = meta["layer"]
            s = rep.layers[layer].scores.suspicion
            attacked = [u for u in meta["attacked"].get(layer, []) if not np.isnan(s[u])]
            neg = np.concatenate([by_suspect[c].layers[layer].scores.suspicion for c in clean])
            neg = neg[~np.isnan(neg)]
            pos = s[attacked]
            auc = evidence.unit_auroc(np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))])
            within = None
            others = [u for u in range(len(s)) if u not in set(attacked) and not np.isnan(s[u])]
            if others:
                within = evidence.unit_auroc(np.r_[pos, s[others]], np.r_[np.ones(len(pos)), np.zeros(len(others))])
            rows.append({"regime": regime, "variant": name, "layer": layer, "n_pos": len(pos), "n_neg": len(neg),
                         "auroc": auc, "auroc_within_model": within, "clean_variants": clean})
    return rows


def verdict_rows(results: dict, metas: dict) -> list[dict]:
    rows = []
    for regime, by_suspect in results.items():
        for name, rep in by_suspect.items():
            layers = {l: {"verdict": ld.verdict.verdict, "p": ld.verdict.p_value, "flagged": ld.verdict.n_flagged,
                          "units": ld.verdict.n_units, "flagged_class": ld.verdict.flagged_class}
                      for l, ld in rep.layers.items()}
            rows.append({"regime": regime, "variant": name, "role": metas[name]["role"],
                         "verdict": rep.verdict.verdict, "p": rep.verdict.p_value, "layers": layers})
    return rows


def to_markdown(auc: list[dict], verdicts: list[dict], metas: dict, classes: list[str], settings: dict) -> str:
    lines = ["# Detection benchmark (bench/detection.py)", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), "",
             "## Variants", "", "| variant | role | state shipped | acc init → shipped (%) |", "|---|---|---|---|"]
    for n, m in metas.items():
        if m["role"] == "clean-retrained":
            lines.append(f"| {n} | clean (retrained, {m['epochs']} epochs) | — | {m['acc']:.2f} |")
        elif m["role"] != "reference":
            acc = m["acc_selected"] if m["state"] == "selected" else m["acc_final"]
            lines.append(f"| {n} | {m['role']} | {m['state']} (step {m['selected_step'] if m['state'] == 'selected' else m['steps']}) "
                         f"| {m['acc_init']:.2f} → {acc:.2f} |")
    lines += ["", "## Unit-level ROC AUC (attacked units vs the clean variants' units of that layer)", "",
              "| regime | variant | layer | positives | negatives | AUROC | AUROC within the model |", "|---|---|---|---|---|---|---|"]
    for r in auc:
        w = "—" if r["auroc_within_model"] is None else f"{r['auroc_within_model']:.3f}"
        lines.append(f"| {r['regime']} | {r['variant']} | {r['layer']} | {r['n_pos']} | {r['n_neg']} | {r['auroc']:.3f} | {w} |")
    lines += ["", "## Verdicts (model; per layer: verdict, flagged/units, p)", "",
              "| regime | variant | role | model verdict | p | relu2 | relu3 |", "|---|---|---|---|---|---|---|"]
    for r in verdicts:
        cells = []
        for l in LAYERS:
            v = r["layers"][l]
            fc = f", class {classes[v['flagged_class']]}" if v["flagged_class"] is not None else ""
            cells.append(f"{v['verdict']} ({v['flagged']}/{v['units']}, p {v['p']:.2g}{fc})")
        lines.append(f"| {r['regime']} | {r['variant']} | {r['role']} | **{r['verdict']}** | {r['p']:.2g} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=500, help="steps of every fine-tune and attack")
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--retrain-epochs", type=int, default=3)
    ap.add_argument("--cache", default=str(ROOT / ".fvaudit-cache" / "bench-detection"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "detection"))
    ap.add_argument("--synthetic-steps", type=int, default=0,
                    help="> 0: the reference regime with synthetic change too (2 seeds, this many render steps), "
                         "reported as regime 'reference+synthetic'")
    ap.add_argument("--regimes", default="reference,population",
                    help="comma-separated: reference, population (and reference+synthetic with --synthetic-steps)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = Path(args.cache) / f"steps{args.steps}-train{args.train_limit}"
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    ref = load_model("fmnist-cnn")
    train = open_image_set("fashion-mnist:train", limit=args.train_limit)
    val = open_image_set("fashion-mnist:test")
    metas: dict[str, dict] = {"reference": {"name": "reference", "role": "reference"}}
    subjects: dict[str, Subject] = {"reference": Subject("reference", ref)}
    for name, v in variant_specs(args.steps).items():
        print(f"variant {name}")
        ck, meta = make_variant(name, v, ref, train, val, cache)
        metas[name] = meta
        subjects[name] = Subject(name, load_model("fmnist-cnn", checkpoint=ck))
    for seed in RETRAIN_SEEDS:
        print(f"retrained seed {seed}")
        ck, meta = make_retrained(seed, args.retrain_epochs, cache)
        metas[meta["name"]] = meta
        subjects[meta["name"]] = Subject(meta["name"], load_model("fmnist-cnn", checkpoint=ck))
    embedder, warning = default_embedder("cpu")
    if warning:
        print(f"note: {warning}")
    emb_cache = EmbeddingCache(Path(args.cache) / "embeddings")

    def embed(ids):
        return embed_topk(embedder, emb_cache, val.key, ids, val.load_pil)

    work = Path(args.cache) / "work"
    calib = [subjects[n] for n in metas if metas[n]["role"] == "calibration"]
    retrained = [subjects[n] for n in metas if metas[n]["role"] == "clean-retrained"]
    regimes = [r for r in args.regimes.split(",") if r]
    if args.synthetic_steps > 0 and "reference+synthetic" not in regimes:
        regimes.append("reference+synthetic")
    results: dict[str, dict] = {r: {} for r in regimes}
    timings = {}
    for regime in [r for r in regimes if r.startswith("reference")]:
        extra = {}
        if regime == "reference+synthetic":
            from fvaudit.engine.detection.run import SyntheticOptions

            extra = {"synthetic": SyntheticOptions(seeds=(0, 1), steps=args.synthetic_steps),
                     "embed_images": embedder.embed}
        for name, m in metas.items():
            if m["role"] not in ("clean", "attacked"):
                continue
            t0 = time.time()
            results[regime][name] = detect(subjects[name], val, LAYERS, reference=subjects["reference"],
                                           population=calib, embed_topk=embed, batch_size=1000,
                                           reporter=Bar(f"detect {name} ({regime})"), work_dir=work, **extra)
            timings[f"{regime}/{name}"] = round(time.time() - t0, 1)
            print(f"\n  {regime}: {results[regime][name].verdict.verdict}")
    population = [subjects["reference"]] + retrained
    for name, m in metas.items():
        if "population" not in regimes:
            break
        if m["role"] not in ("clean", "attacked", "clean-retrained"):
            continue
        pop = [p for p in population if p.name != name]
        t0 = time.time()
        results["population"][name] = detect(subjects[name], val, LAYERS, population=pop, batch_size=1000,
                                             reporter=Bar(f"detect {name} (population)"), work_dir=work)
        timings[f"population/{name}"] = round(time.time() - t0, 1)
        print(f"\n  without a reference: {results['population'][name].verdict.verdict}")
    auc = auroc_rows(results, metas)
    verdicts = verdict_rows(results, metas)
    settings = {"steps": args.steps, "train images": args.train_limit, "validation (budget and D_τ)": len(val),
                "regimes": ", ".join(regimes),
                **({"synthetic": f"2 seeds, {args.synthetic_steps} render steps"} if args.synthetic_steps else {}),
                "retrain epochs": args.retrain_epochs, "embedder": embedder.id,
                "thresholds": "unit 0.95, suspicious p < 0.05, manipulated p < 0.001 (fixed)"}
    md = to_markdown(auc, verdicts, metas, list(val.class_names), settings)
    print("\n" + md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "variants": metas, "auroc": auc,
                                                    "verdicts": verdicts, "detect_seconds": timings,
                                                    "total_seconds": round(time.time() - t_start, 1),
                                                    "embedder_warning": warning}, indent=1, default=float))
    out.with_suffix(".md").write_text(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
