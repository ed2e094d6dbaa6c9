"""A synthetic finished run (rows shaped exactly like a metrics job writes them).

For load tests and API fuzzing, where running the real chain would measure the worker
instead of the API: ``synthetic_run`` writes one run with ``units`` unit rows per layer,
each with top-k (ids, scores, labels) before/after on a train and a validation set,
every metric and nearest units. Values are random but well-formed.
"""
from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from fvaudit.db.tables import METRICS, ImageSet, Run, UnitResult, clean_json, utcnow


def synthetic_run(db: Session, owner_id: int | None, model_id: int, train: ImageSet, val: ImageSet,
                  layers: dict[str, int], k: int = 10, seed: int = 0, name: str = "synthetic run") -> Run:
    rng = np.random.default_rng(seed)
    run = Run(name=name, owner_id=owner_id, model_id=model_id, status="succeeded", attack_kind="push_down",
              layers=list(layers), attack={"kind": "push_down", "layers": list(layers), "k": k},
              train_set_id=train.id, val_set_id=val.id, embedder="synthetic", k_clip=5,
              accuracy={"init": 92.0, "final": 91.7, "last": 91.5, "delta": -0.3, "selected_step": 100, "steps": 100,
                        "over_budget": False},
              finished_at=utcnow())
    db.add(run)
    db.flush()
    table, per_unit, layer_info, headline_vals = [], {}, {}, {m: [] for m in METRICS}
    for layer, n_units in layers.items():
        rows = []
        vals = {m: rng.uniform(-0.2, 1.0, n_units) for m in METRICS}
        for u in range(n_units):
            topk = {}
            for role, s in (("train", train), ("val", val)):
                entry = {"image_set_id": s.id}
                for side in ("before", "after"):
                    ids = rng.choice(s.size, size=k, replace=False)
                    scores = np.sort(rng.uniform(10, 1000, k))[::-1]
                    entry[side] = {"ids": ids.tolist(), "scores": scores.tolist(),
                                   "labels": rng.integers(0, max(1, len(s.classes)), k).tolist()}
                topk[role] = entry
            others = [int(x) for x in rng.choice(n_units, size=min(3, n_units), replace=False) if x != u][:3]
            nearest = {key: [{"unit": o, "value": float(rng.uniform(0, 1))} for o in others]
                       for key in ("by_tau_init", "by_tau_final", "by_clip_init", "by_clip_final")}
            rows.append({"run_id": run.id, "layer": layer, "unit": u, "attacked": True, "dead": False,
                         **{m: float(vals[m][u]) for m in METRICS}, "topk": topk, "nearest": nearest,
                         "clip_self": {"pre": 0.8, "post": 0.6}, "extra": {}})
        db.execute(UnitResult.__table__.insert(), rows)
        table.append({"layer": layer, "state": "selected", "step": 100, **{m: float(vals[m].mean()) for m in METRICS},
                      "acc": 91.7, "delta_acc": -0.3, "acc_n_images": val.size, "over_budget": False,
                      "n_units": n_units, "n_attacked": n_units, "n_dead": 0})
        per_unit[layer] = {m: vals[m].tolist() for m in METRICS}
        layer_info[layer] = {"units": n_units, "attacked": list(range(n_units)), "dead": [], "live": n_units}
        for m in METRICS:
            headline_vals[m].extend(vals[m].tolist())
    run.table = clean_json(table)
    run.rows = clean_json(table)
    run.per_unit = clean_json(per_unit)
    run.layer_info = layer_info
    run.headline = clean_json({**{m: float(np.mean(v)) for m, v in headline_vals.items()},
                               "acc_init": 92.0, "acc_final": 91.7, "delta_acc": -0.3})
    db.flush()
    return run
