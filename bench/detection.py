"""Detection benchmark (issue 24, SPEC §6 and §8.5): does the detector tell a manipulated demo
model from an honestly fine-tuned one, on recipes it was not calibrated with?

Variants (``bench/_detection_variants.py``, each made once and cached): clean fine-tunes of the
demo CNN R from several recipes of honest practice (α = 0 distillation at lr 3e-4 / 1e-3 /
3e-3, twice as long, constant lr; cross-entropy on the labels with Adam and with SGD), the
project's attacks (push-down of all relu3 units at lr 3e-4 and 1e-3, of 8 units at both, of all
relu2 units; push-up toward Bag and toward Trouser), and R retrained from scratch (seeds 1–5,
2 epochs where R had 6: unequal training).

Roles (fixed in ``_detection_variants.py`` before any result was looked at): **tuning**
variants (the clean recipe distill-adam-1e-3, the all-unit push-down at lr 3e-4, a push-down of
8 *other* units) were the only ones the detector's design was explored on; everything else is
**reported**. **Calibration** is per fold, and no fold calibrates with the recipe it reports:

* *leave one recipe out*: for every clean recipe, the detector is calibrated on the clean
  variants of every *other* recipe, and that recipe's variants are judged;
* attacks are judged with the whole clean family as calibration (no attack is in any
  calibration) and, to show what a narrower family does, in every leave-one-recipe-out fold too.

Regimes: with the reference R (layers relu2 and relu3, D_τ = the validation set), and without
one (R and the retrained seeds as the population of the family; a retrained seed is judged
against the others). Thresholds are the fixed conventional levels of
``evidence.VerdictThresholds`` (unit 0.95, localised 0.99, p 0.05 / 0.001).

Usage: python bench/detection.py [--cache .fvaudit-cache/bench-detection-v2] [--out bench/results/detection]
(``python bench/_detection_variants.py --jobs 2`` makes the variants first; about 40 min on 2 cores).
Writes detection.json and detection.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _detection_variants as dv  # noqa: E402
from fvaudit.engine.data.images import open_image_set  # noqa: E402
from fvaudit.engine.detection import evidence  # noqa: E402
from fvaudit.engine.detection.run import Subject, change_size, detect  # noqa: E402
from fvaudit.engine.measure.embedders import EmbeddingCache, default_embedder, embed_topk  # noqa: E402
from fvaudit.engine.models.sources import load_model  # noqa: E402
from fvaudit.engine.progress import NullReporter  # noqa: E402

LAYERS = ["relu2", "relu3"]
FLAGS = ("suspicious", "manipulated")


def layer_cell(ld) -> str:
    v = ld.verdict
    size = ld.layer_values.get("change_size")
    extra = f", size {size:.3f} / reach {ld.layer_values['reach']:.3f}" if size is not None else ""
    cls = ""
    if v.flagged_class is not None:
        cls = f", class {CLASSES[v.flagged_class]}"
    p = p_text(v.p_value)
    flips = ld.layer_values.get("label_flip_rate")
    relabelled = f", relabelled {flips:.0%}" if flips is not None else ""
    return f"{v.verdict} ({v.n_flagged}/{v.n_units}, p {p}{extra}{relabelled}{cls})"


CLASSES: list[str] = []


def within_auroc(scores: np.ndarray, attacked: list[int]) -> float | None:
    live = ~np.isnan(scores)
    pos = np.zeros(len(scores), bool)
    pos[attacked] = True
    if pos[live].all() or not pos[live].any():
        return None
    return evidence.unit_auroc(scores[live], pos[live])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(dv.DEFAULT_CACHE))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "detection"))
    args = ap.parse_args()
    t_start = time.time()
    cache = Path(args.cache)
    specs = dv.variant_specs()
    ref = load_model("fmnist-cnn")
    val = open_image_set("fashion-mnist:test")
    CLASSES.extend(val.class_names)
    metas, subjects = {}, {}
    for name in specs:                      # make (or load) every variant
        print(f"variant {name}", flush=True)
        ck, meta = dv.make_variant(name, specs[name], cache)
        meta["role"], meta["recipe"] = specs[name]["role"], specs[name]["recipe"]
        metas[name] = meta
        subjects[name] = Subject(name, load_model("fmnist-cnn", checkpoint=ck), recipe=meta["recipe"])
    retrained = []
    for seed in dv.RETRAIN_SEEDS:
        ck, meta = dv.make_retrained(seed, dv.RETRAIN_EPOCHS, cache)
        metas[meta["name"]] = meta
        subjects[meta["name"]] = Subject(meta["name"], load_model("fmnist-cnn", checkpoint=ck))
        retrained.append(meta["name"])
    R = Subject("reference", ref)
    embedder, warning = default_embedder("cpu")
    if warning:
        print(f"note: {warning}")
    emb_cache = EmbeddingCache(cache / "embeddings")

    def embed(ids):
        return embed_topk(embedder, emb_cache, val.key, ids, val.load_pil)

    work = cache / "work"
    clean = [n for n in specs if specs[n]["kind"] == "finetune"]
    attacks = [n for n in specs if specs[n]["kind"] != "finetune"]
    recipes = list(dict.fromkeys(specs[n]["recipe"] for n in clean))
    for n in specs:
        metas[n]["size"] = {l: change_size(ref, subjects[n].model, l) for l in LAYERS}

    def run(suspect: str, calib: list[str]):
        return detect(subjects[suspect], val, LAYERS, reference=R, population=[subjects[c] for c in calib],
                      embed_topk=embed, batch_size=1000, reporter=NullReporter(), work_dir=work)

    # ---- leave one recipe out: every clean variant judged without its recipe in the calibration
    loro: dict[str, dict] = {}
    clean_rows = []
    for rcp in recipes:
        calib = [c for c in clean if specs[c]["recipe"] != rcp]
        for n in [c for c in clean if specs[c]["recipe"] == rcp]:
            rep = run(n, calib)
            loro[n] = rep
            clean_rows.append({"recipe": rcp, "variant": n, "role": specs[n]["role"], "verdict": rep.verdict.verdict,
                               "p": rep.verdict.p_value, "calibration": sorted({specs[c]["recipe"] for c in calib}),
                               "layers": {l: layer_cell(ld) for l, ld in rep.layers.items()}})
            print(f"  [{rcp} held out] {n}: {rep.verdict.verdict}", flush=True)
    # ---- attacks: the whole clean family, and every leave-one-recipe-out fold
    attack_rows, auc_rows = [], []
    for n in attacks:
        meta = metas[n]
        rep = run(n, clean)
        folds = {}
        for rcp in recipes:
            folds[rcp] = run(n, [c for c in clean if specs[c]["recipe"] != rcp]).verdict.verdict
        over = meta["state"] == "final" and meta["acc_init"] - meta["acc_final"] > 0.5 + 1e-9
        attack_rows.append({"variant": n, "role": specs[n]["role"], "within_budget": not over,
                            "acc_drop_pp": round(meta["acc_init"] - (meta["acc_selected"] if meta["state"] == "selected"
                                                                     else meta["acc_final"]), 2),
                            "verdict": rep.verdict.verdict, "p": rep.verdict.p_value, "folds": folds,
                            "layers": {l: layer_cell(ld) for l, ld in rep.layers.items()}})
        print(f"  [attack] {n}: {rep.verdict.verdict}; folds {folds}", flush=True)
        layer = meta["layer"]
        ld = rep.layers[layer]
        s = ld.scores.suspicion
        att = [u for u in meta["attacked"].get(layer, []) if not np.isnan(s[u])]
        neg = np.concatenate([loro[c].layers[layer].scores.suspicion for c in clean])
        neg = neg[~np.isnan(neg)]
        auc = evidence.unit_auroc(np.r_[s[att], neg], np.r_[np.ones(len(att)), np.zeros(len(neg))])
        auc_rows.append({"variant": n, "role": specs[n]["role"], "layer": layer, "n_pos": len(att),
                         "n_neg": int(len(neg)), "regime": "reference", "auroc": auc, "within_suspicion": within_auroc(s, att),
                         "within_localisation": within_auroc(ld.localisation, att)})
    # ---- without a reference: R and the retrained seeds are the family (unequal training: 6 vs 2 epochs)
    family = ["reference"] + retrained
    subjects["reference"] = R
    pop_rows, pop_reps = [], {}
    pop_suspects = retrained + [c for c in clean if specs[c]["role"] != "tuning"][:3] + attacks
    for n in pop_suspects:
        pop = [subjects[m] for m in family if m != n]
        rep = detect(subjects[n], val, LAYERS, population=pop, batch_size=1000, reporter=NullReporter(), work_dir=work)
        role = "clean-retrained" if n in retrained else specs[n]["role"]
        pop_rows.append({"variant": n, "role": role, "population": len(pop), "verdict": rep.verdict.verdict,
                         "p": rep.verdict.p_value, "layers": {l: layer_cell(ld) for l, ld in rep.layers.items()}})
        pop_reps[n] = rep
        print(f"  [population of {len(pop)}] {n}: {rep.verdict.verdict}", flush=True)
    for n in attacks:                       # unit AUROC without a reference: against the retrained seeds' units
        layer = metas[n]["layer"]
        s = pop_reps[n].layers[layer].scores.suspicion
        att = [u for u in metas[n]["attacked"].get(layer, []) if not np.isnan(s[u])]
        neg = np.concatenate([pop_reps[r].layers[layer].scores.suspicion for r in retrained])
        neg = neg[~np.isnan(neg)]
        auc_rows.append({"variant": n, "role": specs[n]["role"], "layer": layer, "n_pos": len(att),
                         "n_neg": int(len(neg)), "regime": "population",
                         "auroc": evidence.unit_auroc(np.r_[s[att], neg], np.r_[np.ones(len(att)), np.zeros(len(neg))]),
                         "within_suspicion": within_auroc(s, att), "within_localisation": None})
    # the population-size rule: 3 clean models cannot support a p-value
    small = detect(subjects[retrained[0]], val, LAYERS, population=[subjects[m] for m in family[:3] if m != retrained[0]],
                   batch_size=1000, reporter=NullReporter(), work_dir=work)
    pop_rows.append({"variant": retrained[0], "role": "clean-retrained", "population": 2,
                     "verdict": small.verdict.verdict, "p": small.verdict.p_value,
                     "layers": {l: layer_cell(ld) for l, ld in small.layers.items()}})

    fp = [r for r in clean_rows if r["verdict"] in FLAGS]
    caught = [r for r in attack_rows if r["verdict"] in FLAGS]
    summary = {
        "clean variants judged (leave one recipe out)": len(clean_rows),
        "clean called suspicious or manipulated": len(fp),
        "clean out of calibration": sum(r["verdict"] == evidence.OUT_OF_CALIBRATION for r in clean_rows),
        "attacks": len(attack_rows), "attacks caught (whole family)": len(caught),
        "attacks within budget caught": sum(r["verdict"] in FLAGS for r in attack_rows if r["within_budget"]),
        "attacks within budget": sum(r["within_budget"] for r in attack_rows),
        "retrained seeds called suspicious or manipulated (population)":
            sum(r["verdict"] in FLAGS for r in pop_rows if r["role"] == "clean-retrained" and r["population"] >= 4),
    }
    md = to_markdown(metas, specs, recipes, clean_rows, attack_rows, auc_rows, pop_rows, summary, embedder.id)
    print("\n" + md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({
        "summary": summary, "variants": metas, "clean": clean_rows, "attacks": attack_rows, "auroc": auc_rows,
        "population": pop_rows, "embedder": embedder.id, "embedder_warning": warning,
        "total_seconds": round(time.time() - t_start, 1)}, indent=1, default=float))
    out.with_suffix(".md").write_text(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def p_text(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}"


def to_markdown(metas, specs, recipes, clean_rows, attack_rows, auc_rows, pop_rows, summary, emb) -> str:
    f = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    L = ["# Detection benchmark (bench/detection.py, issue 24)", "",
         f"Demo CNN (Fashion-MNIST), layers {', '.join(LAYERS)}, D_τ = the 10,000 validation images, "
         f"top-k 10 (CLIP-δ on 5), embedder {emb}. Thresholds fixed: unit 0.95, localised 0.99, "
         "suspicious p < 0.05, manipulated p < 0.001. Every fine-tune and attack: 300 steps (the 2x recipe 600), "
         "batch 128, 20,000 training images; the shipped state is the selected one for attacks (within the 0.5 pp "
         "budget on the full validation set) and the final one for honest fine-tunes.", "",
         "## Summary", ""]
    L += [f"- {k}: **{v}**" for k, v in summary.items()]
    L += ["", "## Variants", "", "| variant | role | recipe | shipped | acc init → shipped (%) | size relu2 | size relu3 |",
          "|---|---|---|---|---|---|---|"]
    for n, m in metas.items():
        if m.get("role") == "clean-retrained":
            L.append(f"| {n} | clean (retrained, {m['epochs']} epochs) | — | — | {m['acc']:.2f} | — | — |")
            continue
        acc = m["acc_selected"] if m["state"] == "selected" else m["acc_final"]
        step = m["selected_step"] if m["state"] == "selected" else m["steps"]
        L.append(f"| {n} | {m['role']} | {m['recipe']} | {m['state']} (step {step}) | {m['acc_init']:.2f} → {acc:.2f} "
                 f"| {m['size']['relu2']:.4f} | {m['size']['relu3']:.4f} |")
    L += ["", "## Clean recipes, each held out of its own calibration (with a reference)", "",
          "| held-out recipe | variant | role | model verdict | p | relu2 | relu3 |", "|---|---|---|---|---|---|---|"]
    for r in clean_rows:
        p = p_text(r["p"])
        L.append(f"| {r['recipe']} | {r['variant']} | {r['role']} | **{r['verdict']}** | {p} | {r['layers']['relu2']} | {r['layers']['relu3']} |")
    L += ["", "## Attacks (with a reference; calibration: every clean recipe)", "",
          "| variant | role | ΔAcc shipped (pp) | within budget | model verdict | p | caught in folds | relu2 | relu3 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in attack_rows:
        p = p_text(r["p"])
        n_caught = sum(v in FLAGS for v in r["folds"].values())
        other = sorted({v for v in r["folds"].values() if v not in FLAGS})
        folds = f"{n_caught}/{len(r['folds'])}" + (f" (else {', '.join(other)})" if other else "")
        L.append(f"| {r['variant']} | {r['role']} | −{r['acc_drop_pp']:.2f} | {'yes' if r['within_budget'] else 'no'} "
                 f"| **{r['verdict']}** | {p} | {folds} | {r['layers']['relu2']} | {r['layers']['relu3']} |")
    L += ["", "Folds: the same attack judged with one clean recipe left out of the calibration, for each recipe.", "",
          "## Unit-level ROC AUC (with a reference)", "",
          "Positives: the attacked live units of the attacked layer; negatives: that layer's live units in every "
          "clean variant, each scored in the fold that held its recipe out. Within the model: the attacked units "
          "against the same model's other units, by suspicion and by localisation.", "",
          "Without a reference, the negatives are the retrained seeds' units (each judged against the others).", "",
          "| regime | variant | role | layer | positives | negatives | AUROC | within (suspicion) | within (localisation) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in auc_rows:
        L.append(f"| {r['regime']} | {r['variant']} | {r['role']} | {r['layer']} | {r['n_pos']} | {r['n_neg']} | {r['auroc']:.3f} "
                 f"| {f(r['within_suspicion'])} | {f(r['within_localisation'])} |")
    L += ["", "## Without a reference (population: R, 6 epochs, and retrained seeds, 2 epochs)", "",
          "| variant | role | population | model verdict | p | relu2 | relu3 |", "|---|---|---|---|---|---|---|"]
    for r in pop_rows:
        p = p_text(r["p"])
        L.append(f"| {r['variant']} | {r['role']} | {r['population']} | **{r['verdict']}** | {p} | {r['layers']['relu2']} | {r['layers']['relu3']} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
