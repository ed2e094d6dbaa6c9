"""Job kind ``attack``: push-down / push-up / fine-tune baseline (SPEC §2).

Runs the engine's :func:`~fvaudit.engine.attacks.run_attack` with a work directory per
job, so a job requeued after its worker died resumes from the last checkpoint (the
engine draws every step's batches from ``(seed, step)``: the resumed path equals the
uninterrupted one). The selected (within the accuracy budget) and final weights become
safetensors artifacts; accuracy, α trajectory and loss history go to the run.
"""
from __future__ import annotations

from dataclasses import asdict

from fvaudit.db.models import ImageSet, Model, Run, clean_json
from fvaudit.jobs.common import (layer_scan, load_db_model, load_scan, open_db_image_set,
                                 resolve_weights)
from fvaudit.jobs.context import JobContext
from fvaudit.jobs.specs import AttackSpec


def attack_config(spec: AttackSpec, layer: str, device: str):
    from fvaudit.engine.attacks import AttackConfig, Target

    a = spec.attack
    return AttackConfig(kind=a.kind, targets=[Target(layer, list(a.units) if a.units is not None else None)], k=a.k,
                        alpha=a.alpha, alpha_max=a.alpha_max, acc_budget_pp=a.acc_budget_pp, eval_every=a.eval_every,
                        eval_size=a.eval_size, lr=a.lr, steps=a.steps, batch_size=a.batch_size,
                        score_norm=a.score_norm, decoy_class=a.decoy_class, decoy_ids=a.decoy_ids,
                        n_decoys=a.n_decoys, seed=a.seed, device=device, checkpoint_every=a.checkpoint_every)


def run(spec: AttackSpec, ctx: JobContext) -> dict:
    from fvaudit.engine.attacks import run_attack

    with ctx.session() as db:
        model_row = db.get(Model, spec.model_id)
        train_row = db.get(ImageSet, spec.train_set_id)
        val_row = db.get(ImageSet, spec.val_set_id)
        if model_row is None or train_row is None or val_row is None:
            raise RuntimeError("the model or an image set of this attack no longer exists")
        ckpt, _ = resolve_weights(db, ctx.store, model_row, None, spec.checkpoint_path)
        train = open_db_image_set(db, train_row)
        val = open_db_image_set(db, val_row)
        init_scans = None
        if spec.init_scan_job_id is not None:
            scan = load_scan(db, spec.init_scan_job_id, spec.train_set_id)
            init_scans = {spec.attack.layer: layer_scan(ctx.store, scan, spec.attack.layer)}
        db.expunge(model_row)
    ctx.reporter.stage("load model")
    model = load_db_model(model_row, ckpt, ctx.device)
    layer = model.layer(spec.attack.layer).name
    if init_scans is not None and layer not in init_scans:
        init_scans = {layer: next(iter(init_scans.values()))}
    cfg = attack_config(spec, layer, ctx.device)
    cfg.validate()
    res = run_attack(model, train, val, cfg, out_dir=ctx.work_dir, reporter=ctx.reporter, init_scans=init_scans,
                     resume=True)
    ctx.reporter.stage("store weights")
    with ctx.session() as db:
        sel = ctx.store.put_file(db, res.selected_path, "checkpoint", ".safetensors", move=False)
        fin = ctx.store.put_file(db, res.final_path, "checkpoint", ".safetensors", move=False)
        summary = res.summary()
        summary.pop("selected_path", None)
        summary.pop("final_path", None)
        accuracy = {"init": res.acc_init, "final": res.acc_selected, "last": res.acc_final,
                    "selected_step": res.selected_step, "steps": res.steps, "over_budget": res.final_over_budget,
                    "delta": res.acc_selected - res.acc_init}
        if ctx.run_id is not None:
            run = db.get(Run, ctx.run_id)
            run.accuracy = clean_json(accuracy)
            run.alpha_trajectory = clean_json([asdict(e) for e in res.alpha_trajectory])
            run.history = clean_json(res.history)
            run.attack_summary = clean_json(summary)
            run.selected_id, run.final_id = sel.id, fin.id
            info = dict(run.layer_info or {})
            info[layer] = {"units": model.layer(layer).units, "attacked": res.attacked[layer], "dead": res.dead[layer]}
            run.layer_info = clean_json(info)
            if not run.layers:
                run.layers = [layer]
    ctx.log(f"attack done: {res.steps} steps, accuracy {res.acc_init:.2f} → {res.acc_selected:.2f} "
            f"(selected step {res.selected_step}{', final state over budget' if res.final_over_budget else ''})")
    return {"selected_sha": sel.sha256, "final_sha": fin.sha256, "accuracy": accuracy,
            "attacked": res.attacked, "dead": res.dead, "decoy_ids": res.decoy_ids, "layer": layer,
            "decoy_class": spec.attack.decoy_class, "kind": spec.attack.kind}
