"""`fvaudit` commands that run the engine in this process (no server): models, scan, attack,
metrics, report, visualize, demo-experiment, train-demo-model.

Every command writes a run directory (config, versions, score matrices, top-k, metrics as
JSON + CSV) and prints a human-readable summary. Long work shows a Rich progress bar.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from fvaudit import _tv_guard  # noqa: F401
from fvaudit.cli.common import (alpha, attack_tuning_args, cache_dir, format_alpha_trajectory, int_list,
                                make_embed_topk, model_args)
from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS
from fvaudit.engine.attack.kinds import ATTACK_KINDS, KIND_NAMES, per_attacked_unit


def register(sub) -> dict:
    """Add the engine commands to the `fvaudit` parser; returns {name: handler}."""

    sp = sub.add_parser("models", help="list models, or the layers of one model")
    sp.add_argument("--model")

    sp = sub.add_parser("scan", help="top-k and score matrices of layers over an image set")
    model_args(sp)
    sp.add_argument("--images", default="fashion-mnist:test", help="fashion-mnist:train|test or a class-folder path")
    sp.add_argument("--layers", required=True, help="comma-separated layer names")
    sp.add_argument("--k", type=int, default=10)
    sp.add_argument("--batch-size", type=int, default=256)
    sp.add_argument("--limit", type=int, help="use only the first N images")
    sp.add_argument("--shards", type=int, default=1, help="scan in this many row ranges one after another and "
                                                          "merge them (the result is the one-pass scan's, bit for bit)")
    sp.add_argument("--out", required=True, type=Path)

    sp = sub.add_parser("attack", help="push-down / push-up / fine-tune baseline, then measure it")
    model_args(sp)
    sp.add_argument("--train", default="fashion-mnist:train")
    sp.add_argument("--val", default="fashion-mnist:test", help="held-out set: accuracy and D_τ for the metrics")
    sp.add_argument("--kind", choices=list(KIND_NAMES), default="push_down",
                    help="; ".join(f"{k.name}: {k.description}" for k in ATTACK_KINDS.values()))
    sp.add_argument("--layers", required=True, help="comma-separated layer names, or all-conv")
    sp.add_argument("--units", type=int_list, help="comma-separated unit indices (default: all units)")
    sp.add_argument("--k", type=int, default=ATTACK_DEFAULTS["k"], help="size of D_attack(j)")
    sp.add_argument("--alpha", type=alpha, default=None, help="fixed α in [0,1] or 'dynamic' (default)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help=f"optimizer steps (default {ATTACK_DEFAULTS['steps']})")
    g.add_argument("--epochs", type=float)
    attack_tuning_args(sp)
    sp.add_argument("--score-norm", choices=["none", "init_mean", "batch_mean"], default=ATTACK_DEFAULTS["score_norm"])
    sp.add_argument("--decoy-class", help="push-up decoy class (name or index)")
    sp.add_argument("--target", action="append", metavar="IMAGE",
                    help="Slingshots kinds: the target image (a PNG/JPEG path, or SET:ID for an image of an image "
                         "set, e.g. fashion-mnist:train:42); once for every unit, or once per --units entry")
    sp.add_argument("--gamma", type=float, default=ATTACK_DEFAULTS["gamma"])
    sp.add_argument("--tunnel-sd", type=float, default=ATTACK_DEFAULTS["tunnel_sd"])
    sp.add_argument("--tunnel-batch", type=int, default=ATTACK_DEFAULTS["tunnel_batch"])
    sp.add_argument("--tunnel-path", choices=["segment", "clipped"], default=ATTACK_DEFAULTS["tunnel_path"])
    sp.add_argument("--slingshot-form", choices=["gradient", "activation"], default=ATTACK_DEFAULTS["slingshot_form"])
    sp.add_argument("--slingshot-norm", choices=["adam", "cosine", "relative", "none"],
                    default=ATTACK_DEFAULTS["slingshot_norm"])
    sp.add_argument("--slingshot-weight", type=float, default=ATTACK_DEFAULTS["slingshot_weight"])
    sp.add_argument("--unit-weight", type=float, default=ATTACK_DEFAULTS["unit_weight"])
    sp.add_argument("--softplus", action="store_true", help="ReLU → Softplus inside L_S while fine-tuning")
    sp.add_argument("--fv-objective", choices=["score", "channel_mean"], default=ATTACK_DEFAULTS["fv_objective"])
    sp.add_argument("--decoy-ids", type=int_list, help="push-up: explicit decoy image ids")
    sp.add_argument("--n-decoys", type=int, default=ATTACK_DEFAULTS["n_decoys"])
    sp.add_argument("--seed", type=int, default=ATTACK_DEFAULTS["seed"])
    sp.add_argument("--checkpoint-every", type=int, default=ATTACK_DEFAULTS["checkpoint_every"])
    sp.add_argument("--embedder", default="auto", help="auto | efficientnet-lite0 | open_clip:ViT-B-32:openai | none")
    sp.add_argument("--k-clip", type=int, default=5)
    sp.add_argument("--limit-train", type=int)
    sp.add_argument("--limit-val", type=int)
    sp.add_argument("--no-resume", action="store_true", help="start over even if out has a checkpoint")
    sp.add_argument("--out", required=True, type=Path)

    sp = sub.add_parser("metrics", help="compare two scans of the same image set (before/after)")
    sp.add_argument("--before", required=True, type=Path, help="run directory of `fvaudit scan` under θ_init")
    sp.add_argument("--after", required=True, type=Path, help="run directory of `fvaudit scan` under θ_final")
    sp.add_argument("--units", type=int_list, help="units to aggregate over (default: all live units)")
    sp.add_argument("--embedder", default="auto")
    sp.add_argument("--k-clip", type=int, default=5)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--out", type=Path, help="where to write metrics (default: --after)")

    sp = sub.add_parser("report", help="print the Table 3.1-style summary of run directories")
    sp.add_argument("runs", nargs="+", type=Path)

    sp = sub.add_parser("demo-experiment", help="the thesis' Table 3.1 on the Fashion-MNIST demo CNN")
    sp.add_argument("--out", type=Path, default=Path("runs/demo-experiment"))
    sp.add_argument("--steps", type=int, default=ATTACK_DEFAULTS["steps"])
    attack_tuning_args(sp)
    sp.add_argument("--embedder", default="auto")
    sp.add_argument("--rows", default="control,push_up,push_down,push_down_conv1",
                    help="comma-separated rows to run (control, push_up, push_down, push_down_conv1)")
    sp.add_argument("--quick", action="store_true", help="small subsets and few steps (a smoke run)")
    sp.add_argument("--device", default="cpu")

    sp = sub.add_parser("visualize", help="synthetic feature visualization of units (SPEC §4)")
    model_args(sp)
    sp.add_argument("--compare-checkpoint", help="also render the same units with these weights (before/after)")
    sp.add_argument("--layer", required=True)
    sp.add_argument("--units", type=int_list, help="comma-separated unit indices (default: all)")
    sp.add_argument("--steps", type=int, default=256)
    sp.add_argument("--lr", type=float, default=0.05)
    sp.add_argument("--batch-units", type=int, default=32)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, type=Path)

    sp = sub.add_parser("train-demo-model", help="train the Fashion-MNIST demo CNN (reproducible)")
    sp.add_argument("--out", type=Path, default=Path("backend/fvaudit/assets/fmnist_cnn.safetensors"))
    sp.add_argument("--epochs", type=int, default=6)
    sp.add_argument("--seed", type=int, default=0)
    return {"models": cmd_models, "scan": cmd_scan, "attack": cmd_attack, "metrics": cmd_metrics,
            "report": cmd_report, "train-demo-model": cmd_train_demo, "visualize": cmd_visualize,
            "demo-experiment": cmd_demo_experiment}


def cmd_models(args) -> int:
    from fvaudit.engine.models.sources import list_models, load_model

    if not args.model:
        for m in list_models():
            print(f"{m['name']:22} {m['source']:12} {m['description']}")
        return 0
    lm = load_model(args.model, pretrained=False)
    print(f"{lm.name}: input {lm.input_shape}, {len(lm.class_names)} classes")
    for info in lm.layers:
        print(f"  {info.name:28} {info.kind:6} {str(info.shape):18} units={info.units:<5} {info.module_type}"
              + (f"  [{info.label}]" if info.label else ""))
    return 0


def cmd_scan(args) -> int:
    from fvaudit.cli.progress import RichReporter
    from fvaudit.engine.scans.activations import scan
    from fvaudit.engine.audit import versions, write_scan
    from fvaudit.engine.data.images import open_image_set
    from fvaudit.engine.models.sources import load_model

    model = load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    images = open_image_set(args.images, cache_dir=cache_dir(), limit=args.limit)
    layers = [model.layer(l).name for l in args.layers.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with RichReporter() as rep:
        if args.shards > 1:
            from fvaudit.engine.scans.shards import scan_in_shards

            res = scan_in_shards(model, images, layers, args.k, args.shards, batch_size=args.batch_size,
                                 device=args.device, out_dir=args.out / "scores", reporter=rep)
        else:
            res = scan(model, images, layers, k=args.k, batch_size=args.batch_size, device=args.device,
                       out_dir=args.out / "scores", reporter=rep)
    write_scan(res, args.out, "scan", "model")
    (args.out / "config.json").write_text(json.dumps({
        "command": "scan", "model": model.name, "weights": model.weights, "checkpoint": args.checkpoint,
        "images": images.key, "images_spec": args.images, "limit": args.limit, "layers": layers, "k": args.k, "shards": args.shards, "n_images": res.n_images,
        "skipped": [{"id": i, "reason": r} for i, r in res.skipped],
        "skipped_at_index": [s.__dict__ for s in images.skipped],
        "seconds": res.seconds, "images_per_s": res.images_per_s}, indent=1))
    (args.out / "versions.json").write_text(json.dumps(versions(), indent=1))
    print(f"scanned {res.n_images} images of {images.key} in {res.seconds:.1f} s ({res.images_per_s:.0f} images/s)")
    n_skip = len(res.skipped) + len(images.skipped)
    if n_skip:
        print(f"skipped {n_skip} unreadable images (listed in {args.out / 'config.json'})")
    for layer, ls in res.layers.items():
        print(f"  {layer}: {ls.units} units, {len(ls.dead_units)} dead; top-{args.k} of unit 0: {ls.topk_ids[0].tolist()}")
    print(f"run directory: {args.out}")
    return 0


def _attack_config(args, model):
    from fvaudit.engine.attack.config import AttackConfig, Target, all_conv_targets

    if args.layers == "all-conv":
        if args.units:
            raise ValueError("--units cannot be combined with --layers all-conv")
        targets = all_conv_targets(model)
    else:
        names = [x for x in args.layers.split(",") if x]
        targets = [Target(model.layer(n).name, args.units if len(names) == 1 else None) for n in names]
    sling = {}
    if ATTACK_KINDS[args.kind].target_image:
        sling = dict(target_images=args.target, gamma=args.gamma, tunnel_sd=args.tunnel_sd,
                     tunnel_batch=args.tunnel_batch, tunnel_path=args.tunnel_path, slingshot_form=args.slingshot_form,
                     slingshot_norm=args.slingshot_norm, slingshot_weight=args.slingshot_weight,
                     unit_weight=args.unit_weight, softplus=args.softplus, fv_objective=args.fv_objective)
    elif args.target:
        raise ValueError(f"--target: only Slingshots kinds use a target image, not {args.kind}")
    return AttackConfig(kind=args.kind, targets=targets, k=args.k, alpha=args.alpha, steps=args.steps,
                        epochs=args.epochs, score_norm=args.score_norm, decoy_class=args.decoy_class,
                        decoy_ids=args.decoy_ids, n_decoys=args.n_decoys, seed=args.seed, device=args.device,
                        checkpoint_every=args.checkpoint_every, **sling, **tuning_fields(args))


def tuning_fields(args) -> dict:
    """AttackConfig fields from the shared tuning flags (names as in ATTACK_DEFAULTS)."""
    return dict(lr=args.lr, lr_schedule=args.lr_schedule, optimizer=args.optimizer, maintain=args.maintain,
                batch_size=args.batch_size,
                attack_batch_size=args.attack_batch_size, decoy_batch_size=args.decoy_batch_size,
                eval_every=args.eval_every, eval_size=args.eval_size, acc_budget_pp=args.acc_budget,
                alpha_max=args.alpha_max, alpha_factor=args.alpha_factor, anchor_weight=args.anchor_weight)


def cmd_attack(args) -> int:
    from fvaudit.cli.progress import RichReporter
    from fvaudit.engine.audit import run_audit
    from fvaudit.engine.data.images import open_image_set
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.measure.report import format_table

    model = load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    train = open_image_set(args.train, cache_dir=cache_dir(), limit=args.limit_train)
    val = open_image_set(args.val, cache_dir=cache_dir(), limit=args.limit_val)
    if args.target:
        args.target = resolve_targets(args.target, args.out / "targets")
    cfg = _attack_config(args, model)
    cfg.validate()
    if args.no_resume and (args.out / "checkpoint").exists():
        import shutil

        shutil.rmtree(args.out / "checkpoint")
    embed, emb_id, warning = make_embed_topk(args.embedder, val, args.device)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    with RichReporter() as rep:
        res = run_audit(f"{model.name} {','.join(t.layer for t in cfg.targets)} {cfg.kind}", model, train, val, cfg,
                        args.out, embed_topk=embed, embedder_id=emb_id, k_clip=args.k_clip, reporter=rep)
    print(format_table(res.rows()))
    a = res.attack
    print(f"embedder: {emb_id}; attacked units: {sum(len(v) for v in a.attacked.values())}, "
          f"dead left out: {sum(len(v) for v in a.dead.values())}; "
          f"selected step {a.selected_step}/{a.steps}"
          + (" (final state over the accuracy budget)" if a.final_over_budget else "")
          + f"; accuracies on all {a.acc_n_images} validation images, α controller on {a.eval_n_images}")
    print("α trajectory: " + format_alpha_trajectory(a.alpha_trajectory))
    if cfg.target_images:
        print_fv_target(model, res, cfg, val, args.embedder, args.device, args.out)
    print(f"run directory: {args.out}")
    return 0


def resolve_targets(values: list[str], out: Path) -> list[str]:
    """``--target`` values as image files: a path as it is; ``SET:ID`` (an image set spec and an
    image id, e.g. ``fashion-mnist:train:42``) decoded and written to ``out`` as a PNG."""
    from PIL import Image

    from fvaudit.engine.data.images import open_image_set

    paths = []
    for v in values:
        if Path(v).is_file():
            paths.append(v)
            continue
        spec, _, idx = v.rpartition(":")
        if not spec or not idx.isdigit():
            raise ValueError(f"--target: {v!r} is neither an image file nor SET:ID (e.g. fashion-mnist:train:42)")
        arr = open_image_set(spec, cache_dir=cache_dir()).load_array(int(idx))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{spec.replace(':', '_').replace('/', '_')}_{idx}.png"
        Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr).save(path)
        paths.append(str(path))
    return paths


def print_fv_target(model, res, cfg, val, embedder: str, device: str, out: Path) -> None:
    """SPEC §8.1's measures of a Slingshots run, from renders with seeds the attack never saw:
    printed and written to ``out/fv_target.json`` (per unit) with a contact sheet
    ``out/fv_target.png`` (rows: target, FV before, FV after)."""
    import numpy as np

    from fvaudit.engine.attack.slingshot import load_targets
    from fvaudit.engine.measure.fv_manipulation import measure_fv_manipulation
    from fvaudit.engine.synthesis.render import save_grid

    layer = cfg.targets[0].layer
    units = res.attack.attacked[layer]
    paths = per_attacked_unit(cfg.target_images, model.check_units(layer, cfg.targets[0].units), units)
    targets = load_targets(paths, len(units), model.input_shape)
    init_val, after_val = res.scans["val_init"][layer], res.scans["val_selected"][layer]
    from fvaudit.engine.measure.embedders import make_topk_embedder
    from fvaudit.engine.measure.synthetic import embed_images

    made = make_topk_embedder(embedder, val, cache_dir(), device)
    emb = (lambda im: embed_images(made.embedder, im)) if made is not None else None
    m = measure_fv_manipulation(model, res.attack.selected_model, layer, units, targets, embed=emb,
                                val_scores=(np.asarray(init_val.scores)[:, units], np.asarray(after_val.scores)[:, units]),
                                val_labels=np.asarray(val.labels),
                                topk_labels=np.asarray(val.labels)[np.asarray(init_val.topk_ids)[units]])
    agg = m.aggregates()
    (out / "fv_target.json").write_text(json.dumps({"aggregates": agg, "units": m.per_unit()}, indent=1))
    sheet = np.concatenate([m.targets, m.images_before[0], m.images_after[0]])
    save_grid(sheet, out / "fv_target.png", labels=[f"target {u}" for u in units] + [f"before {u}" for u in units]
              + [f"after {u}" for u in units], cols=len(units))

    def f(v):
        return "—" if v is None else f"{v:.3f}"

    print(f"synthetic visualization vs the target ({len(units)} units of {layer}, seeds {m.seeds}): "
          f"{agg['moved_share']:.0%} moved toward the target ({agg['moved_by']}); median SSIM to the target "
          f"{f(agg['ssim_target_before'])} → {f(agg['ssim_target_after'])}, to the original FV {f(agg['ssim_original_after'])}; "
          f"embedder cosine to the target {f(agg['cos_target_before'])} → {f(agg['cos_target_after'])}; "
          f"top-class AUROC {f(agg['auroc_before'])} → {f(agg['auroc_after'])}")
    print(f"per-unit measures: {out / 'fv_target.json'}; target / FV before / FV after: {out / 'fv_target.png'}")


def cmd_metrics(args) -> int:
    import numpy as np

    from fvaudit.engine.data.images import reopen_image_set
    from fvaudit.engine.measure.report import TableRow, format_table, measure_layer, write_layer_metrics

    cb = json.loads((args.before / "config.json").read_text())
    ca = json.loads((args.after / "config.json").read_text())
    if cb["images"] != ca["images"]:
        raise ValueError(f"--before scanned {cb['images']} but --after scanned {ca['images']}: use the same image set")
    # a run directory written before limits became stratified samples names the first `limit` ids
    images = reopen_image_set(cb["images_spec"], cb.get("limit"), cb["images"], cache_dir())
    embed, emb_id, warning = make_embed_topk(args.embedder, images, args.device)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    out = args.out or args.after
    rows = []
    for layer in cb["layers"]:
        if layer not in ca["layers"]:
            raise ValueError(f"layer {layer} is in --before but not in --after")
        safe = layer.replace("/", "_")
        a = np.load(args.before / "scores" / f"scores_{safe}.npy", mmap_mode="r")
        b = np.load(args.after / "scores" / f"scores_{safe}.npy", mmap_mode="r")
        units = args.units if args.units is not None else list(range(a.shape[1]))
        lm = measure_layer(layer, a, b, units, embed_topk=embed, embedder_id=emb_id, k_clip=args.k_clip)
        write_layer_metrics(lm, out)
        rows.append(TableRow(layer, {m: lm.aggregates.get(m, {}).get("mean") for m in lm.aggregates}, None, None))
    print(format_table(rows))
    print(f"embedder: {emb_id}; metrics written to {out}")
    return 0


def cmd_report(args) -> int:
    from fvaudit.engine.measure.report import format_table

    print(format_table(report_rows(args.runs)))
    return 0


def report_rows(runs: list[Path]) -> list:
    """Table 3.1 rows of attack run directories: each run's selected and final state, and, before a
    run, the row of an α = 0 control among ``runs`` with the same settings (SPEC §2 "Baseline")."""
    from fvaudit.engine.measure.report import TableRow

    loaded = []
    for run in runs:
        files = [run / "attack.json"] if (run / "attack.json").exists() else sorted(run.glob("*/attack.json"))
        if not files:
            raise ValueError(f"{run} holds no attack.json (not an attack run directory)")
        for f in files:
            loaded.append(json.loads(f.read_text()))
    controls = [d for d in loaded if d["config"]["kind"] == "finetune"]
    attacks = [d for d in loaded if d["config"]["kind"] != "finetune"]
    used = set()
    rows = []
    for d in attacks:
        ctl = next((c for c in controls if _same_settings(c["config"], d["config"])), None)
        if ctl is not None:
            used.add(id(ctl))
            layers = {t["layer"] for t in d["config"]["targets"]}
            rows += [dataclasses.replace(TableRow.from_json(r), state="control") for r in _rows_of(ctl)
                     if r.get("state", "selected") == "selected" and (r.get("layer") in layers or r.get("layer") is None)]
        # an attack's own rows; the control rows it carries are re-derived above from the runs given
        rows += [TableRow.from_json(r) for r in _rows_of(d) if r.get("state") != "control"]
    # fine-tune runs that are nobody's control are reported as runs of their own
    rows = [TableRow.from_json(r) for c in controls if id(c) not in used for r in _rows_of(c)] + rows
    return rows


def _rows_of(d: dict) -> list[dict]:
    return d.get("table_rows") or [d["table_row"]]


#: settings an attack shares with its α = 0 control (SPEC §2): everything but what makes it an attack
_ATTACK_ONLY = {"kind", "targets", "alpha", "alpha_init", "alpha_max", "alpha_factor", "decoy_class", "decoy_ids",
                "n_decoys", "attack_batch_size", "decoy_batch_size", "k", "score_norm", "device", "checkpoint_every",
                "max_candidates"}


def _same_settings(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in _ATTACK_ONLY} == {k: v for k, v in b.items() if k not in _ATTACK_ONLY}


def cmd_visualize(args) -> int:
    import numpy as np

    from fvaudit.cli.progress import RichReporter
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import save_grid, synthesize

    cfg = SynthesisConfig(steps=args.steps, lr=args.lr, batch_units=args.batch_units, seed=args.seed,
                          device=args.device)
    variants = [("before", args.checkpoint)] + ([("after", args.compare_checkpoint)] if args.compare_checkpoint else [])
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for tag, ckpt in variants:
        model = load_model(args.model, checkpoint=ckpt, device=args.device)
        with RichReporter() as rep:
            res = synthesize(model, args.layer, args.units, cfg, rep)
        safe = res.layer.replace("/", "_")
        save_grid(res.images, args.out / f"synthetic_{safe}_{tag}.png", labels=[str(u) for u in res.units])
        np.savez_compressed(args.out / f"synthetic_{safe}_{tag}.npz", images=res.images, units=np.array(res.units),
                            activation=res.activation)
        summary[tag] = {"weights": model.weights, "units": res.units, "activation": res.activation.tolist(),
                        "activation_start": res.activation_start.tolist(), "seconds": res.seconds}
        print(f"{tag}: {len(res.units)} units of {res.layer} in {res.seconds:.1f} s; mean activation "
              f"{res.activation.mean():.4g} (from {res.activation_start.mean():.4g}) -> {args.out / f'synthetic_{safe}_{tag}.png'}")
    (args.out / "synthetic.json").write_text(json.dumps({"config": cfg.__dict__, **summary}, indent=1))
    return 0


def cmd_train_demo(args) -> int:
    from fvaudit.engine.models.fmnist_cnn import save_demo_weights, train_fashion_cnn
    from fvaudit.engine.data.images import fashion_mnist

    tr, te = fashion_mnist("train"), fashion_mnist("test")
    model, acc = train_fashion_cnn(tr.images, tr.labels, te.images, te.labels, epochs=args.epochs, seed=args.seed,
                                   on_epoch=lambda e, a, t: print(f"epoch {e + 1}/{args.epochs}: test accuracy {a:.2f}% ({t:.0f} s)"))
    save_demo_weights(model, args.out, acc)
    print(f"test accuracy {acc:.2f}%; weights written to {args.out}")
    return 0


def cmd_demo_experiment(args) -> int:
    from fvaudit.cli.demo_experiment import run_demo_experiment

    return run_demo_experiment(args.out, steps=args.steps, embedder=args.embedder, quick=args.quick,
                               device=args.device, rows=[r for r in args.rows.split(",") if r],
                               tuning=tuning_fields(args))


