"""Label search at scale (issue 22): does ``GET /api/v1/units?q=`` answer within 100 ms at p95 on
a database holding 10⁵ labelled units?

A fresh Postgres database (``--db``, dropped and created) is filled with generated rows: one
owner, ``--runs`` runs of two layers of 128 units with their unit results (a top-k entry each,
for the thumbnails) and each unit's label before, in the selected and in the final state (3
rows per unit: 10⁵ labels at the default size). Labels are ImageNet's 1000 class names (shipped
with torchvision, so no download), each unit's drawn at random, a tenth of them changed by the
"attack", scores uniform in (0, 1].

Measured, in the same run and on the same connection, each ``--reps`` times:

* **search**: the endpoint's own path (:func:`fvaudit.api.routers.units.label_query`, ordered
  and paged as the endpoint does, its count, and :func:`~fvaudit.api.routers.units.hits` for
  the page: run and model names, thumbnails) for several queries: a class name ("bag" style,
  narrow), a two-letter prefix (broad), and the run page's browse (one run's changed labels, no q);
* **baseline**: a plain indexed lookup of 50 labels of one run and state (the
  ``ix_unit_labels_run_state`` index, no text match, no count, no hits).

Prints p50 / p95 per query and the ratio of each p95 to the baseline's; writes
``bench/results/label_search.json``.

Usage: python bench/label_search.py [--runs 130] [--reps 200] [--db fvaudit_bench_labels]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))


def imagenet_names() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=130, help="runs of 2 layers × 128 units × 3 states (130: 99,840 labels)")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--db", default="fvaudit_bench_labels")
    ap.add_argument("--host", default="127.0.0.1:5432")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "label_search.json"))
    args = ap.parse_args()
    os.environ.setdefault("FVAUDIT_DATA_DIR", tempfile.mkdtemp(prefix="fvaudit-bench-labels-"))
    os.environ.setdefault("FVAUDIT_SECRET_KEY", "bench-label-search-" + "x" * 32)

    import numpy as np
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from fvaudit.api.deps import Principal
    from fvaudit.api.routers.units import ORDER, hits, label_query
    from fvaudit.db.tables import Base, ImageSet, Model, Run, UnitLabel, UnitResult, User

    admin = sa.create_engine(f"postgresql+psycopg://postgres@{args.host}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.db}"'))
        c.execute(sa.text(f'CREATE DATABASE "{args.db}"'))
    engine = sa.create_engine(f"postgresql+psycopg://postgres@{args.host}/{args.db}")
    Base.metadata.create_all(engine)
    names = imagenet_names()
    rng = random.Random(0)
    t0 = time.perf_counter()
    with Session(engine) as db:
        user = User(name="bench", is_admin=False)
        db.add(user)
        db.flush()
        iset = ImageSet(name="bench val", source="/nonexistent", kind="folder", size=50000, classes=names,
                        engine_key="bench", owner_id=user.id)
        db.add(iset)
        model = Model(name="bench model", registry_name="resnet50", source="registry", weights="random",
                      layers=[], class_names=names, input_shape=[3, 224, 224], owner_id=user.id)
        db.add(model)
        db.flush()
        runs = [Run(name=f"bench run {i}", owner_id=user.id, model_id=model.id, status="succeeded")
                for i in range(args.runs)]
        db.add_all(runs)
        db.flush()
        units, labels = [], []
        for run in runs:
            for layer in ("layer3", "layer4"):
                for u in range(128):
                    before = rng.randrange(len(names))
                    after = before if rng.random() > 0.1 else rng.randrange(len(names))
                    ids = [rng.randrange(50000) for _ in range(5)]
                    units.append({"run_id": run.id, "layer": layer, "unit": u, "attacked": True, "dead": False,
                                  "topk": {"val": {"image_set_id": iset.id,
                                                   "before": {"ids": ids, "scores": [1.0] * 5, "labels": [before] * 5},
                                                   "after": {"ids": ids, "scores": [1.0] * 5, "labels": [after] * 5}}},
                                  "nearest": {}, "clip_self": {}, "extra": {}})
                    for state, c in (("before", before), ("selected", after), ("final", after)):
                        labels.append({"run_id": run.id, "model_id": model.id, "layer": layer, "unit": u,
                                       "state": state, "describer": "class-concept", "label": names[c],
                                       "label_key": names[c].lower(), "class_index": c,
                                       "score": rng.uniform(1e-3, 1.0), "p_value": rng.uniform(0, 1e-3),
                                       "attacked": True, "changed": state != "before" and c != before})
        for i in range(0, len(units), 5000):
            db.execute(sa.insert(UnitResult), units[i:i + 5000])
        for i in range(0, len(labels), 5000):
            db.execute(sa.insert(UnitLabel), labels[i:i + 5000])
        db.commit()
        user_id, run_ids = user.id, [r.id for r in runs]
    with engine.connect() as c:
        c.execute(sa.text("ANALYZE"))
        c.commit()
    fill_s = time.perf_counter() - t0
    n_labels = len(labels)
    print(f"filled {n_labels} labels, {len(units)} unit results in {fill_s:.1f} s")

    class _U:                                   # the CachedUser the endpoint sees
        id, is_admin = user_id, False

    who = Principal(_U())
    queries = {
        "class name prefix 'bag' (narrow)": dict(q="bag"),
        "class name 'golden retriever'": dict(q="golden retriever"),
        "two letters 'sa' (broad)": dict(q="sa"),
        "browse one run: changed in the selected state (no q)": dict(q=None, run_id=run_ids[len(run_ids) // 2],
                                                                      state="selected", changed=True),
    }

    def timed(fn) -> list[float]:
        out = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    results = {}
    with Session(engine) as db:
        def search(params):
            query = label_query(who, **params)
            total = db.scalar(query.with_only_columns(sa.func.count(), maintain_column_froms=True).order_by(None))
            rows = list(db.scalars(query.order_by(*ORDER).limit(50)))
            return total, hits(db, rows, None)

        def lookup():
            return list(db.scalars(sa.select(UnitLabel).where(UnitLabel.run_id == run_ids[0],
                                                              UnitLabel.state == "before").limit(50)))

        for params in queries.values():         # warm the caches and the plan once
            search(params)
        lookup()
        base = np.array(timed(lookup))
        results["baseline: plain indexed lookup (50 labels of one run and state)"] = {
            "p50_ms": float(np.percentile(base, 50)), "p95_ms": float(np.percentile(base, 95)), "matches": 50}
        for name, params in queries.items():
            total, page = search(params)
            t = np.array(timed(lambda: search(params)))
            results[name] = {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
                             "matches": int(total), "page": len(page),
                             "ratio_p95_to_baseline": float(np.percentile(t, 95) / np.percentile(base, 95))}
        plan = "\n".join(r[0] for r in db.execute(sa.text(
            "EXPLAIN " + str(label_query(who, q="bag").order_by(*ORDER).limit(50).compile(
                engine, compile_kwargs={"literal_binds": True})))))
    base_p95 = results["baseline: plain indexed lookup (50 labels of one run and state)"]["p95_ms"]
    print(f"\n{'query':58s} {'matches':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p95 / baseline':>15s}")
    for name, r in results.items():
        ratio = r.get("ratio_p95_to_baseline", 1.0)
        print(f"{name:58s} {r['matches']:8d} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {ratio:15.1f}")
    worst = max(r["p95_ms"] for n, r in results.items() if not n.startswith("baseline"))
    print(f"\nworst search p95: {worst:.1f} ms (goal < 100 ms) on {n_labels} labels; baseline p95 {base_p95:.2f} ms")
    print("plan of 'bag':\n" + plan)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"labels": n_labels, "unit_results": len(units), "runs": args.runs, "reps": args.reps,
                               "fill_seconds": round(fill_s, 1), "results": results, "worst_search_p95_ms": worst,
                               "plan_bag": plan}, indent=1))
    print(f"wrote {out}")
    engine.dispose()
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.db}"'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
