"""Job kind ``metrics``: measure an attack from two scans (SPEC §3), write per-unit rows.

Same computation as the engine's ``run_audit`` measuring step (``measure_layer`` on the
validation set D_τ, top-k overlap on the training set, push-up success), from scans
stored by earlier jobs. Writes one ``unit_results`` row per (run, layer, unit) with
top-k before/after (ids, scores, labels) of every scanned set, every metric and the
nearest units, and the run's Table 3.1 rows, histograms and Fig. 3.5 data.
"""
from __future__ import annotations

import math

import numpy as np
from sqlalchemy import delete

from fvaudit.db.models import METRICS, ImageSet, Job, Run, UnitResult, clean_json, finite, utcnow
from fvaudit.jobs.common import layer_scan, load_scan, open_db_image_set
from fvaudit.jobs.context import JobContext
from fvaudit.jobs.specs import MetricsSpec


def make_embed(spec: str, image_set, ctx: JobContext):
    """(embed_topk callable or None, embedder id, warning)."""
    if spec == "none":
        return None, None, None
    from fvaudit.engine.embedders import EmbeddingCache, default_embedder, embed_topk, get_embedder
    from fvaudit.engine.progress import Cancelled

    warning = None
    if spec == "auto":
        embedder, warning = default_embedder(ctx.device)
    else:
        embedder = get_embedder(spec, device=ctx.device)
    cache = EmbeddingCache(ctx.cache_dir / "embeddings")

    def progress(done: int, total: int) -> None:
        ctx.reporter.advance(done, total)
        if ctx.reporter.cancelled():
            raise Cancelled("cancelled on request")

    def fn(ids):
        ctx.reporter.stage(f"embed top-k ({embedder.id})")
        return embed_topk(embedder, cache, image_set.key, ids, image_set.load_pil, progress=progress)

    return fn, embedder.id, warning


def _topk_entry(ids: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"ids": [int(i) for i in ids], "scores": [finite(s) for s in scores],
            "labels": [int(labels[int(i)]) for i in ids]}


def _mean(values: list) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(xs)) if xs else None


def run(spec: MetricsSpec, ctx: JobContext) -> dict:
    from fvaudit.engine import metrics as M
    from fvaudit.engine.report import measure_layer, pushup_report

    ctx.reporter.stage("load scans")
    with ctx.session() as db:
        before_val = load_scan(db, spec.before_scan_job_id, spec.val_set_id)
        after_val = load_scan(db, spec.after_scan_job_id, spec.val_set_id)
        before_train = after_train = None
        if spec.train_set_id is not None:
            before_train = load_scan(db, spec.before_scan_job_id, spec.train_set_id)
            after_train = load_scan(db, spec.after_scan_job_id, spec.train_set_id)
        val_row = db.get(ImageSet, spec.val_set_id)
        train_row = db.get(ImageSet, spec.train_set_id) if spec.train_set_id else None
        val = open_db_image_set(db, val_row)
        train = open_db_image_set(db, train_row) if train_row is not None else None
        attack = None
        if spec.attack_job_id is not None:
            aj = db.get(Job, spec.attack_job_id)
            if aj is None or aj.status != "succeeded":
                raise RuntimeError(f"attack job {spec.attack_job_id} has not succeeded")
            attack = dict(aj.result or {})
        layers = spec.layers or [sl.layer for sl in before_val.layers if sl.layer in {x.layer for x in after_val.layers}]
        scans = {}
        for layer in layers:
            scans[layer] = {
                "iv": layer_scan(ctx.store, before_val, layer), "fv": layer_scan(ctx.store, after_val, layer),
                "it": layer_scan(ctx.store, before_train, layer) if before_train else None,
                "ft": layer_scan(ctx.store, after_train, layer) if after_train else None,
            }
        set_ids = {"val": spec.val_set_id, "train": spec.train_set_id}
    embed, emb_id, warning = make_embed(spec.embedder, val, ctx)
    if warning:
        ctx.log(f"note: {warning}")
    k_clip = spec.k_clip
    table, per_unit_hist, clip_sim, layer_info = [], {}, {}, {}
    unit_rows: list[dict] = []
    all_attacked_vals: dict[str, list] = {m: [] for m in METRICS}
    pushup = None
    for layer in layers:
        ctx.check_cancel()
        s = scans[layer]
        iv, fv, it, ft = s["iv"], s["fv"], s["it"], s["ft"]
        n_units = iv.units
        if attack is not None and layer in (attack.get("attacked") or {}):
            attacked = [int(u) for u in attack["attacked"][layer]]
            dead_attack = [int(u) for u in attack.get("dead", {}).get(layer, [])]
        else:
            attacked, dead_attack = None, []
        train_dead = list(it.dead_units) if it is not None else list(iv.dead_units)
        dead = sorted(set(dead_attack) | set(int(u) for u in train_dead))
        if attacked is None:
            attacked = [u for u in range(n_units) if u not in set(dead)]
        ctx.reporter.stage(f"metrics {layer}", total=None)
        lm = measure_layer(layer, np.asarray(iv.scores), np.asarray(fv.scores), attacked, dead=dead,
                           embed_topk=embed, embedder_id=emb_id, k_clip=k_clip,
                           topk_init=(iv.topk_ids, iv.topk_scores), topk_final=(fv.topk_ids, fv.topk_scores))
        ctx.check_cancel()
        # C^{init,init}_jj and C^{init,final}_jj (Fig. 3.5), from the cached embeddings
        self_sim: dict[int, dict] = {}
        if embed is not None and len(lm.units) > 1:
            ti = iv.topk_ids[lm.units, :k_clip]
            tf = fv.topk_ids[lm.units, :k_clip]
            e_i, e_f = embed(ti), embed(tf)
            pre = np.diag(M.set_similarity(e_i, e_i))
            post = np.diag(M.set_similarity(e_i, e_f))
            self_sim = {u: {"pre": finite(pre[c]), "post": finite(post[c])} for c, u in enumerate(lm.units)}
            clip_sim[layer] = [{"unit": u, **self_sim[u]} for u in lm.units if u in set(lm.attacked)]
        train_overlap = None
        if it is not None and ft is not None and lm.attacked:
            train_overlap = float(np.mean([len(set(it.topk_ids[u, :k_clip]) & set(ft.topk_ids[u, :k_clip])) / k_clip
                                           for u in lm.attacked]))
        att = set(lm.attacked)
        dead_set = set(lm.dead)
        for u in range(n_units):
            topk = {"val": {"image_set_id": set_ids["val"], "before": _topk_entry(iv.topk_ids[u], iv.topk_scores[u], val.labels),
                            "after": _topk_entry(fv.topk_ids[u], fv.topk_scores[u], val.labels)}}
            if it is not None and ft is not None and train is not None:
                topk["train"] = {"image_set_id": set_ids["train"],
                                 "before": _topk_entry(it.topk_ids[u], it.topk_scores[u], train.labels),
                                 "after": _topk_entry(ft.topk_ids[u], ft.topk_scores[u], train.labels)}
            vals = {m: finite(lm.per_unit.get(m, {}).get(u)) for m in METRICS}
            unit_rows.append({"run_id": None, "layer": layer, "unit": u, "attacked": u in att, "dead": u in dead_set,
                              **vals, "topk": clean_json(topk), "nearest": clean_json(lm.nearest.get(u, {})),
                              "clip_self": clean_json(self_sim.get(u, {})), "extra": {}})
        row = {"layer": layer, "n_units": n_units, "n_attacked": len(lm.attacked), "n_dead": len(lm.dead)}
        for m in METRICS:
            agg = lm.aggregates.get(m)
            row[m] = finite(agg["mean"]) if agg else None
            row[f"{m}_n_nan"] = int(agg.get("n_nan", 0)) if agg else None
            per_unit_hist.setdefault(layer, {})[m] = [finite(lm.per_unit[m].get(u)) for u in lm.attacked] \
                if m in lm.per_unit else []
            all_attacked_vals[m].extend(per_unit_hist[layer][m])
        row["train_topk_overlap"] = train_overlap
        table.append(row)
        layer_info[layer] = {"units": n_units, "attacked": lm.attacked, "dead": lm.dead, "live": len(lm.units),
                             "n_images": lm.extra.get("n_images")}
    if attack is not None and attack.get("kind") == "push_up" and attack.get("decoy_class") is not None:
        dc = int(attack["decoy_class"])
        decoy_ids = np.asarray(attack["decoy_ids"]) if attack.get("decoy_ids") else None
        pushup = {"decoy_class": dc, "decoy_class_name": val.class_names[dc] if dc < len(val.class_names) else None,
                  "val": pushup_report({l: scans[l]["fv"].topk_ids[layer_info[l]["attacked"], :k_clip] for l in layers
                                        if layer_info[l]["attacked"]}, val.labels, dc, None)}
        if train is not None:
            pushup["train"] = pushup_report({l: scans[l]["ft"].topk_ids[layer_info[l]["attacked"], :k_clip]
                                             for l in layers if layer_info[l]["attacked"]}, train.labels, dc, decoy_ids)
    acc = (attack or {}).get("accuracy") or {}
    for row in table:
        row["acc"] = acc.get("final")
        row["delta_acc"] = acc.get("delta")
    headline = {m: _mean(all_attacked_vals[m]) for m in METRICS}
    headline.update({"acc_init": acc.get("init"), "acc_final": acc.get("final"), "delta_acc": acc.get("delta")})
    ctx.reporter.stage("store results")
    with ctx.session() as db:
        run = db.get(Run, ctx.run_id) if ctx.run_id is not None else None
        if run is None:
            raise RuntimeError("metrics job has no run to write into")
        db.execute(delete(UnitResult).where(UnitResult.run_id == run.id, UnitResult.layer.in_(layers)))
        for r in unit_rows:
            r["run_id"] = run.id
        if unit_rows:
            db.execute(UnitResult.__table__.insert(), unit_rows)
        run.table = clean_json(table)
        run.headline = clean_json(headline)
        run.per_unit = clean_json(per_unit_hist)
        run.clip_similarity = clean_json(clip_sim)
        info = dict(run.layer_info or {})
        for l, v in layer_info.items():
            info[l] = {**info.get(l, {}), **v}
        run.layer_info = clean_json(info)
        run.layers = list(dict.fromkeys(list(run.layers or []) + layers))
        run.embedder = emb_id
        run.embedder_warning = warning
        run.k_clip = k_clip
        run.pushup = clean_json(pushup)
        if not run.accuracy and acc:
            run.accuracy = clean_json(acc)
        run.finished_at = utcnow()
    ctx.log(f"metrics stored for {len(unit_rows)} units of {len(layers)} layer(s); embedder {emb_id}")
    return {"layers": layers, "units": len(unit_rows), "embedder": emb_id, "headline": clean_json(headline)}
