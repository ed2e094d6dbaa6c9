"""How long does the thesis' conv5 audit take on ImageNet? Measure every stage here, project the whole (issue 23).

One prepared command for a GPU machine lent for minutes (and for the CPU here): on the device
present (CUDA when available, else the CPU; the output says which), with generated 500×375
JPEGs in an ImageFolder (bench/_jpegs.py) and random-init torchvision AlexNet, ResNet-50 and
timm ViT-B/32 at 224 px (nothing is downloaded), it measures per stage, each against its own
ceiling measured in the same run:

* **scan** (``engine.scans.activations.scan``: decode in the loader's workers, forward, scores,
  top-k, score matrix; decode cache off, as at ImageNet size where a pass does not fit it)
  vs the **decode ceiling** (the pipeline's ``decode_image`` of the same files in a pool of as
  many processes as the scan's workers) and the **forward ceiling** (the model's forward over
  the same images already preprocessed, same batch, same AMP setting as the scan);
* **attack**: push-down steps/s (``engine.attack.run.run_attack``: distillation from the frozen
  θ_init + the attack loss on the layer's units' top-k) vs a **plain fine-tune step**
  (cross-entropy, Adam) of the same batch through the same input pipeline; **evaluation**
  throughput (``evaluate_accuracy``) vs the forward ceiling;
* **metrics**: Kendall-τ and τ-W for J = 256 and J = 768 units over N = 50 000 images
  (post-ReLU scores for the CNNs' layers, dense ones for ViT's residual stream), τ-W checked
  identical to ``scipy.stats.kendalltau`` on sampled pairs and whole units, vs the scipy
  double loop extrapolated from the sampled pairs; the **embedding** of top-k images with the
  default embedder's architecture (open_clip ViT-B-32; random weights, the same cost) vs
  its forward over preprocessed images;
* **synthesis**: a whole layer's units at 224 px, 256 steps (the render's time per batch-step,
  the slope between two render lengths, so set-up is not counted) vs a plain
  forward + backward of the same batch (input and weight gradients, as in a training step).

Then it prints, per model, the projected wall time of the thesis' audit (bench/_projection.py
says what each stage counts and how it extrapolates), the stage that dominates, and writes
everything to bench/results/imagenet_projection_<device>.{json,md}.

Every rate is timed over repeated calls until ``--min-seconds`` have passed (at least
``--min-reps`` calls, after a warm-up); the spread (max/min over the calls) is printed with it.

    python bench/imagenet_projection.py                   # all three models, CPU or GPU
    python bench/imagenet_projection.py --models alexnet  # one
    python bench/imagenet_projection.py --tiny --out /tmp/p.json   # seconds: the smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "bench"))

import fvaudit  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _jpegs import ensure_folder  # noqa: E402
from attack import WARMUP, StepClock  # noqa: E402  (bench/attack.py: timestamps run_attack's steps)
from _projection import STAGES, AuditPlan, Rates, hms, project  # noqa: E402

#: short name → (registry name, the thesis' conv5 layer, score distribution of that layer)
MODELS = {
    "alexnet": ("alexnet", "features.11", "relu"),                  # conv5 after its ReLU, 256 units
    "resnet50": ("resnet50", "layer4", "relu"),                     # conv5_x's output, 2048 units
    "vit_b_32": ("timm:vit_base_patch32_224", "blocks.11", "dense"),  # the last block's tokens, 768 units
}


@dataclass(frozen=True)
class Settings:
    """How much of each stage is run (the full and the tiny presets; CPU and GPU differ)."""

    scan_images: int
    scan_batch: int
    attack_batch: int
    attack_steps: int                 # timed steps (two warm-up steps come first)
    eval_images: int
    eval_batch: int
    metric_js: tuple[int, ...]
    metric_n: int
    scipy_pairs: int                  # sampled (j, i) pairs checked against scipy and timed with it
    scipy_units: int                  # whole τ-W units checked against scipy (2·(J − 1) calls each)
    embed_images: int
    synth_steps: int                  # the short render; the long one is twice as long
    min_seconds: float
    min_reps: int


def settings_for(device: torch.device, tiny: bool) -> Settings:
    if tiny:
        return Settings(scan_images=16, scan_batch=8, attack_batch=4, attack_steps=2, eval_images=16, eval_batch=8,
                        metric_js=(12, 24), metric_n=300, scipy_pairs=20, scipy_units=1, embed_images=4,
                        synth_steps=2, min_seconds=0.0, min_reps=2)
    if device.type == "cuda":
        return Settings(scan_images=4096, scan_batch=256, attack_batch=256, attack_steps=24, eval_images=4096,
                        eval_batch=512, metric_js=(256, 768), metric_n=50_000, scipy_pairs=400, scipy_units=2,
                        embed_images=1024, synth_steps=24, min_seconds=3.0, min_reps=5)
    # 2 CPU cores: batch 256 of ResNet-50 takes minutes a step; measured smaller and scaled (see _projection)
    return Settings(scan_images=384, scan_batch=64, attack_batch=32, attack_steps=4, eval_images=384, eval_batch=64,
                    metric_js=(256, 768), metric_n=50_000, scipy_pairs=200, scipy_units=1, embed_images=96,
                    synth_steps=4, min_seconds=4.0, min_reps=3)


# ------------------------------------------------------------------ timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_seconds: float, min_reps: int, warmup: int = 1) -> list[float]:
    """Seconds of each call of ``fn`` (after ``warmup`` untimed calls), repeated until both
    ``min_reps`` calls and ``min_seconds`` have passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    out, t_all = [], time.perf_counter()
    while len(out) < min_reps or time.perf_counter() - t_all < min_seconds:
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def rate(per_call_s: list[float], units_per_call: float) -> dict:
    """Units/s from the median call, the calls' spread (max/min) and how many were timed."""
    med = statistics.median(per_call_s)
    return {"rate": units_per_call / med, "spread": max(per_call_s) / min(per_call_s), "calls": len(per_call_s),
            "seconds": sum(per_call_s)}


# ------------------------------------------------------------------ input pipeline stages

def _decode(args) -> int:
    from fvaudit.engine.data.images import decode_image

    path, size = args
    return decode_image(Path(path), size).shape[0]


def decode_ceiling(paths: list[str], size: int, workers: int, st: Settings, device) -> dict:
    jobs = [(p, size) for p in paths]
    if workers <= 1:
        calls = timed(lambda: [_decode(j) for j in jobs], device, st.min_seconds, st.min_reps)
    else:
        with get_context("fork").Pool(workers) as pool:
            calls = timed(lambda: pool.map(_decode, jobs, chunksize=8), device, st.min_seconds, st.min_reps)
    return rate(calls, len(paths))


def forward_ceiling(model, x: torch.Tensor, batch: int, device, amp: bool, st: Settings) -> dict:
    from fvaudit.engine.data.pipeline import autocast, prepare_module, to_device

    module = prepare_module(model.module.eval(), device, amp)
    xb = to_device(x[:batch], device, amp)

    def once():
        with torch.inference_mode(), autocast(device, amp):
            module(xb)

    return rate(timed(once, device, st.min_seconds, st.min_reps, warmup=2), len(xb))


def scan_rate(model, image_set, layer, ids, st: Settings, device, workers) -> tuple[dict, object]:
    """Images/s of a scan, without its start-up (the loader's processes, the first batches: at
    ImageNet size a scan runs for hours, here for seconds): scans of all ``ids`` and of their
    first half are timed in turn and the rate is the slope, (n − n/2) / (t_n − t_n/2)."""
    from fvaudit.engine.scans.activations import scan

    half = ids[: len(ids) // 2]
    last, times = {}, {"full": [], "half": []}
    t_end = time.perf_counter() + st.min_seconds
    while len(times["full"]) < max(2, st.min_reps // 2) or time.perf_counter() < t_end:
        for key, sel in (("half", half), ("full", ids)):
            t = time.perf_counter()
            last[key] = scan(model, image_set, [layer], k=min(10, len(sel)), batch_size=st.scan_batch, ids=sel,
                             workers=workers, device=device, cache="off")
            times[key].append(time.perf_counter() - t)
    slope = (len(ids) - len(half)) / max(1e-9, statistics.median(times["full"]) - statistics.median(times["half"]))
    res = rate(times["full"], len(ids))
    res.update(with_startup=res["rate"], rate=slope, half_s=times["half"], full_s=times["full"])
    return res, last["full"]


def eval_rate(model, image_set, ids, st: Settings, device, workers) -> dict:
    """``evaluate_accuracy`` as an attack's evaluations call it (one ``Batches`` made once; each
    call starts the loader's processes again): evaluations of all ``ids`` and of their first
    half in turn; the rate is the slope and the intercept the fixed seconds of one evaluation."""
    from fvaudit.engine.attack.run import evaluate_accuracy
    from fvaudit.engine.data.pipeline import Batches

    amp = device.type == "cuda"
    half = ids[: len(ids) // 2]
    made = {key: Batches(image_set, sel, model, preload_limit_mb=0, workers=workers, pin_memory=amp)
            for key, sel in (("half", half), ("full", ids))}
    times: dict[str, list[float]] = {"full": [], "half": []}

    def once(key, sel):
        t = time.perf_counter()
        evaluate_accuracy(model, image_set, sel, batch_size=st.eval_batch, device=str(device), amp=amp,
                          batches=made[key])
        sync(device)
        return time.perf_counter() - t

    once("half", half)                                        # warm-up
    t_end = time.perf_counter() + st.min_seconds
    while len(times["full"]) < max(2, st.min_reps // 2) or time.perf_counter() < t_end:
        for key, sel in (("half", half), ("full", ids)):
            times[key].append(once(key, sel))
    full, part = statistics.median(times["full"]), statistics.median(times["half"])
    slope = (len(ids) - len(half)) / max(1e-9, full - part)
    res = rate(times["full"], len(ids))
    res.update(with_startup=res["rate"], rate=slope, fixed_s=max(0.0, full - len(ids) / slope),
               half_s=times["half"], full_s=times["full"])
    return res


# ------------------------------------------------------------------ attack vs plain fine-tuning

WARMUP_STEPS = WARMUP     # bench/attack.py's: steps before the timed span


def step_rate(stamps: dict[int, float]) -> dict:
    """Steps/s over the steps after the warm-up, with the spread of single steps."""
    steps = sorted(s for s in stamps if s >= WARMUP_STEPS)
    per = [stamps[b] - stamps[a] for a, b in zip(steps, steps[1:])]
    return {"rate": len(per) / (stamps[steps[-1]] - stamps[steps[0]]), "spread": max(per) / min(per),
            "calls": len(per), "seconds": stamps[steps[-1]] - stamps[steps[0]]}


def plain_finetune(model, train, batch: int, steps: int, device, workers: int) -> dict:
    """Cross-entropy fine-tuning of a copy, same batch and input pipeline as the attack."""
    from fvaudit.engine.data.pipeline import Batches, StepFeed, autocast, prepare_module, to_device
    from fvaudit.engine.models.sources import clone_model

    amp = device.type == "cuda"
    module = prepare_module(clone_model(model).module, device, amp).train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-5)
    ids = train.ids
    train_b = Batches(train, ids, model, workers=workers, pin_memory=device.type == "cuda")

    def draw(step):
        rng = np.random.default_rng([0, step])
        return np.sort(rng.choice(len(ids), size=min(batch, len(ids)), replace=False)), None

    stamps = {}
    for step, (pos, x), _ in StepFeed(draw, train_b, None, 0, steps):
        y = torch.as_tensor(train.labels[ids[pos]], device=device)
        with autocast(device, amp):
            loss = F.cross_entropy(module(to_device(x, device, amp)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        stamps[step + 1] = time.perf_counter()
    return step_rate(stamps)


def attack_rate(model, train, val, layer: str, init_layers, batch: int, steps: int, device, workers: int) -> dict:
    from fvaudit.engine.attack.config import AttackConfig, Target
    from fvaudit.engine.attack.run import run_attack

    dead = set(init_layers[layer].dead_units)
    units = [u for u in range(model.layer(layer).units) if u not in dead]
    cfg = AttackConfig(kind="push_down", targets=[Target(layer, units)], steps=steps, batch_size=batch,
                       attack_batch_size=max(1, batch // 4), eval_every=steps, eval_size=0, lr=1e-5, alpha=0.5,
                       seed=0, workers=workers, device=str(device))
    clock = StepClock()
    run_attack(model, train, val, cfg, init_scans=init_layers, reporter=clock)
    return step_rate(clock.t)


# ------------------------------------------------------------------ metrics

def metric_scores(n: int, j: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Score matrices [N, J] before / after an attack, bench/kendall_w.py's recipe: units mixing
    32 shared latents plus their own noise, the "attack" adding noise and swapping a sixteenth
    of the units' rankings (whack-a-mole). ``relu``: after a ReLU, so about half exact zeros,
    and one silent unit (a conv layer's post-ReLU channel scores); ``dense``: the same without
    the ReLU, no ties (a ViT block's residual-stream tokens)."""
    from kendall_w import make_scores

    if kind == "relu":
        return make_scores(n, j, seed)
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 32)).astype(np.float32)
    mix = rng.standard_normal((32, j)).astype(np.float32) / np.sqrt(32)
    init = latent @ mix + 0.5 * rng.standard_normal((n, j)).astype(np.float32)
    final = init + 0.3 * rng.standard_normal((n, j)).astype(np.float32)
    swap = rng.choice(j, size=max(2, j // 16), replace=False)
    final[:, swap] = final[:, np.roll(swap, 1)]
    return init.astype(np.float32), final.astype(np.float32)


def _scipy_tau(args) -> float:
    from scipy.stats import kendalltau

    a, b = args
    return kendalltau(a, b).statistic


def scipy_tau_w_unit(init, final, j: int, pool) -> float:
    """SPEC §3's τ-W of unit j by scipy: nanmax over i ≠ j of τ(init_j, final_i) ÷ the same over init_i."""
    others = [i for i in range(init.shape[1]) if i != j]
    cross = pool.map(_scipy_tau, [(init[:, j], final[:, i]) for i in others], chunksize=16)
    same = pool.map(_scipy_tau, [(init[:, j], init[:, i]) for i in others], chunksize=16)
    num, den = np.nanmax(cross) if not np.all(np.isnan(cross)) else np.nan, \
        np.nanmax(same) if not np.all(np.isnan(same)) else np.nan
    return float(num / den) if den and np.isfinite(den) and den != 0 else float("nan")


def metrics_stage(st: Settings, kinds: set[str], workers: int) -> dict:
    """τ and τ-W per J and score kind; identity to scipy on sampled pairs and whole units."""
    from fvaudit.engine.measure.kendall import kendall_tau, kendall_tau_matrix, kendall_tau_w

    out = {}
    with get_context("fork").Pool(max(1, workers)) as pool:
        for kind in sorted(kinds):
            for j in st.metric_js:
                init, final = metric_scores(st.metric_n, j, kind)
                t = time.perf_counter()
                tau = kendall_tau(init, final)
                t_tau = time.perf_counter() - t
                t = time.perf_counter()
                tau_w = kendall_tau_w(init, final)
                t_tau_w = time.perf_counter() - t
                rng = np.random.default_rng([j, 3])
                pj, pi = rng.integers(0, j, st.scipy_pairs), rng.integers(0, j, st.scipy_pairs)
                t = time.perf_counter()                             # in this process: one core's seconds
                ref = np.asarray([_scipy_tau((init[:, a], final[:, b])) for a, b in zip(pj, pi)])
                t_pairs = time.perf_counter() - t
                ours = np.array([kendall_tau_matrix(init[:, [a]], final[:, [b]])[0, 0] for a, b in zip(pj, pi)])
                both = ~np.isnan(ref)
                pair_diff = float(np.max(np.abs(ours[both] - ref[both]))) if both.any() else 0.0
                nan_agree = bool(np.array_equal(np.isnan(ours), np.isnan(ref)))
                units = [int(u) for u in rng.choice(np.arange(1, j), size=min(st.scipy_units, j - 1), replace=False)]
                unit_diff = max(abs(scipy_tau_w_unit(init, final, u, pool) - float(tau_w[u])) for u in units)
                all_pairs = 2 * j * (j - 1) + j                      # τ-W's two J × J tables and τ's diagonal
                scipy_s = t_pairs / st.scipy_pairs * all_pairs       # the double loop on one core
                out[f"{kind}_{j}"] = {
                    "kind": kind, "J": j, "N": st.metric_n, "tau_s": t_tau, "tau_w_s": t_tau_w,
                    "seconds": t_tau + t_tau_w, "scipy_extrapolated_s": scipy_s,
                    "scipy_over_ours": scipy_s / (t_tau + t_tau_w),
                    "pairs_checked": int(st.scipy_pairs), "max_abs_diff_pairs": pair_diff, "nan_agree": nan_agree,
                    "units_checked": units, "max_abs_diff_tau_w_units": float(unit_diff),
                    "tau_median": float(np.nanmedian(tau)), "tau_w_median": float(np.nanmedian(tau_w)),
                }
                print(f"  metrics {kind:5} J={j:4d} N={st.metric_n}: τ {t_tau:.2f} s, τ-W {t_tau_w:.2f} s "
                      f"(scipy ≈ {hms(scipy_s)} on one core; |Δ| pairs {pair_diff:.1e}, units {unit_diff:.1e})",
                      flush=True)
    return out


# ------------------------------------------------------------------ embedding and synthesis

def embedding_stage(paths: list[str], device, st: Settings) -> dict:
    from PIL import Image
    from fvaudit.engine.measure.embedders import DEFAULT_EMBEDDER, get_embedder

    emb = get_embedder("open_clip:ViT-B-32:random-init", device, batch_size=64 if device.type == "cuda" else 16,
                       reuse=False)

    def with_decode():
        ims = []
        for p in paths:
            with Image.open(p) as im:
                ims.append(im.convert("RGB"))
        emb.embed(ims)

    x = torch.stack([emb.preprocess(Image.open(p).convert("RGB")) for p in paths[: emb.batch_size]])
    full = rate(timed(with_decode, device, st.min_seconds, st.min_reps), len(paths))
    fwd = rate(timed(lambda: emb.embed_batch(x), device, st.min_seconds, st.min_reps), len(x))
    return {"embedder": emb.id, "stands_for": DEFAULT_EMBEDDER, "embed": full, "forward_ceiling": fwd,
            "ratio": full["rate"] / fwd["rate"]}


def synthesis_stage(model, layer: str, device, st: Settings) -> dict:
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import batch_size, synthesize_many

    cfg = SynthesisConfig(steps=st.synth_steps, device=str(device))
    b = min(batch_size(cfg, model.input_shape), model.layer(layer).units)
    units = list(range(b))

    def render(steps):
        t = time.perf_counter()
        synthesize_many(model, layer, units, [0], SynthesisConfig(steps=steps, device=str(device)))
        sync(device)
        return time.perf_counter() - t

    render(st.synth_steps)                                   # warm-up: the render's prepared copy is made
    short = [render(st.synth_steps) for _ in range(2)]
    long = [render(2 * st.synth_steps) for _ in range(2)]
    per_step = max(1e-9, (min(long) - min(short)) / st.synth_steps)
    # ceiling: a plain forward + backward of the same batch through the whole model (input and weight
    # gradients, as a training step computes them), no parameterisation, transforms or early stop
    module = model.module.to(device).eval()
    x = torch.rand(b, *model.input_shape, device=device, requires_grad=True)

    def fwd_bwd():
        x.grad = None
        module(x).float().sum().backward()

    ceil = timed(fwd_bwd, device, st.min_seconds, st.min_reps)
    ceil_s = statistics.median(ceil)
    return {"batch": b, "s_per_batch_step": per_step, "short_s": short, "long_s": long,
            "fwd_bwd_s": ceil_s, "fwd_bwd_spread": max(ceil) / min(ceil), "ratio": ceil_s / per_step}


# ------------------------------------------------------------------ one model

def bench_model(short: str, folder: Path, st: Settings, device, workers: int, metric_times: dict) -> dict:
    from fvaudit.engine.data import pipeline
    from fvaudit.engine.data.images import FolderImageSet, decode_image, stratified_ids, subset
    from fvaudit.engine.models.sources import load_model

    name, layer, kind = MODELS[short]
    torch.manual_seed(0)
    model = load_model(name, pretrained=False)
    units = model.layer(layer).units
    train = FolderImageSet(folder, verify=False)
    size = pipeline.decode_size_for(model)
    ids = stratified_ids(train.labels, min(st.scan_images, len(train)), seed=1)
    paths = [str(train.paths[i]) for i in ids]
    amp = device.type == "cuda"
    res: dict = {"model": name, "layer": layer, "units": units, "score_kind": kind}
    t0 = time.perf_counter()

    def say(stage, text):
        print(f"  {short:9} {stage:11} {text}  [{time.perf_counter() - t0:.0f} s]", flush=True)

    res["decode_ceiling"] = decode_ceiling(paths, size, max(1, workers), st, device)
    say("decode", f"{res['decode_ceiling']['rate']:.0f} images/s ceiling ({workers} processes)")
    x = model.preprocess_many([decode_image(Path(p), size) for p in paths[: st.scan_batch]])
    res["forward_ceiling"] = forward_ceiling(model, x, st.scan_batch, device, amp, st)
    say("forward", f"{res['forward_ceiling']['rate']:.0f} images/s ceiling (batch {st.scan_batch})")
    res["scan"], init = scan_rate(model, train, layer, ids, st, device, workers)
    ceiling = min(res["decode_ceiling"]["rate"], res["forward_ceiling"]["rate"])
    res["scan"].update(over_decode=res["scan"]["rate"] / res["decode_ceiling"]["rate"],
                       over_forward=res["scan"]["rate"] / res["forward_ceiling"]["rate"],
                       over_ceiling=res["scan"]["rate"] / ceiling,
                       bound="decode" if res["decode_ceiling"]["rate"] < res["forward_ceiling"]["rate"] else "forward")
    say("scan", f"{res['scan']['rate']:.0f} images/s = {res['scan']['over_ceiling']:.2f} × its ceiling "
                f"({res['scan']['bound']}-bound)")
    val = subset(train, stratified_ids(train.labels, 8, seed=3))
    steps = WARMUP_STEPS + st.attack_steps + 1
    res["plain_finetune"] = plain_finetune(model, train, st.attack_batch, steps, device, workers)
    res["push_down"] = attack_rate(model, train, val, layer, init.layers, st.attack_batch, steps, device, workers)
    res["push_down"]["over_plain"] = res["push_down"]["rate"] / res["plain_finetune"]["rate"]
    res["attack_batch"] = st.attack_batch
    say("attack", f"push-down {res['push_down']['rate']:.3g} steps/s vs plain fine-tune "
                  f"{res['plain_finetune']['rate']:.3g} (batch {st.attack_batch}): "
                  f"{res['push_down']['over_plain']:.2f}×")
    eval_ids = ids[: st.eval_images]
    res["evaluation"] = eval_rate(model, train, eval_ids, st, device, workers)
    res["evaluation"]["over_ceiling"] = res["evaluation"]["rate"] / ceiling
    say("evaluation", f"{res['evaluation']['rate']:.0f} images/s = {res['evaluation']['over_ceiling']:.2f} × ceiling, "
                      f"+ {res['evaluation']['fixed_s']:.2f} s per evaluation")
    res["synthesis"] = synthesis_stage(model, layer, device, st)
    say("synthesis", f"{res['synthesis']['s_per_batch_step'] * 1e3:.0f} ms per step of {res['synthesis']['batch']} "
                     f"images; forward+backward {res['synthesis']['fwd_bwd_s'] * 1e3:.0f} ms = "
                     f"{res['synthesis']['ratio']:.2f} × the render step")
    res["metric_s_by_j"] = {j: v["seconds"] for key, v in metric_times.items() if v["kind"] == kind
                            for j in [v["J"]]}
    return res


def to_rates(res: dict, embed_img_s: float) -> Rates:
    return Rates(units=res["units"], scan_img_s=res["scan"]["rate"], attack_steps_s=res["push_down"]["rate"],
                 attack_batch=res["attack_batch"], eval_img_s=res["evaluation"]["rate"],
                 eval_fixed_s=res["evaluation"]["fixed_s"], embed_img_s=embed_img_s,
                 synth_batch=res["synthesis"]["batch"], synth_s_per_batch_step=res["synthesis"]["s_per_batch_step"],
                 metric_s_by_j={int(k): float(v) for k, v in res["metric_s_by_j"].items()})


# ------------------------------------------------------------------ report

def markdown(out: dict) -> str:
    lines = [f"# The thesis' conv5 audit on ImageNet, projected: {out['device']}", "",
             f"`python bench/imagenet_projection.py{' --tiny' if out['tiny'] else ''}` — {out['when']}, "
             f"{out['device']}, torch {out['torch']}, {out['workers']} loader processes, load average "
             f"{out['loadavg_before']} before / {out['loadavg_after']} after; JPEGs: {out['jpegs']['source']}, "
             f"{out['jpegs']['mean_kb']:.0f} KB mean, 500×375. Bench took {out['bench_s']:.0f} s.", "",
             "## Projected wall time per stage", "",
             "| model | layer (J) | " + " | ".join(STAGES) + " | total | dominant |",
             "|---|---|" + "---|" * len(STAGES) + "---|---|"]
    for m in out["models"]:
        p = m["projection"]
        lines.append(f"| {m['model']} | {m['layer']} ({m['units']}) | "
                     + " | ".join(hms(p["seconds"][s]) for s in STAGES)
                     + f" | **{hms(p['total_s'])}** | {p['dominant']} ({p['dominant_share']:.0%}) |")
    lines += ["", "## Measured rates, each against its ceiling (same run)", "",
              "| model | decode ceil img/s | forward ceil img/s | scan img/s | scan / ceiling | push-down steps/s | "
              "plain steps/s | push-down / plain | eval img/s | eval / ceiling | render s/step (batch) | "
              "fwd+bwd / render step |", "|---|" + "---|" * 11]
    for m in out["models"]:
        lines.append(
            f"| {m['model']} | {m['decode_ceiling']['rate']:.0f} | {m['forward_ceiling']['rate']:.0f} | "
            f"{m['scan']['rate']:.0f} | {m['scan']['over_ceiling']:.2f} ({m['scan']['bound']}-bound) | "
            f"{m['push_down']['rate']:.3g} (batch {m['attack_batch']}) | {m['plain_finetune']['rate']:.3g} | "
            f"{m['push_down']['over_plain']:.2f} | {m['evaluation']['rate']:.0f} | "
            f"{m['evaluation']['over_ceiling']:.2f} | {m['synthesis']['s_per_batch_step']:.3g} "
            f"({m['synthesis']['batch']}) | {m['synthesis']['ratio']:.2f} |")
    e = out["embedding"]
    lines += ["", f"Embedding ({e['embedder']}, standing for {e['stands_for']}): {e['embed']['rate']:.1f} images/s "
              f"with decode, forward ceiling {e['forward_ceiling']['rate']:.1f}: {e['ratio']:.2f} × ceiling.", "",
              "## Kendall-τ and τ-W over N images (identity to scipy checked on sampled pairs and whole units)", "",
              "| scores | J | N | τ s | τ-W s | τ + τ-W s | scipy double loop (extrapolated, 1 core) | × | "
              "max abs diff pairs | max abs diff τ-W units |", "|---|" + "---|" * 9]
    for v in out["metrics"].values():
        lines.append(f"| {v['kind']} | {v['J']} | {v['N']} | {v['tau_s']:.2f} | {v['tau_w_s']:.2f} | "
                     f"{v['seconds']:.2f} | {hms(v['scipy_extrapolated_s'])} | {v['scipy_over_ours']:.0f} | "
                     f"{v['max_abs_diff_pairs']:.1e} | {v['max_abs_diff_tau_w_units']:.1e} |")
    lines += ["", "## How each stage was extrapolated", ""]
    for m in out["models"]:
        lines.append(f"**{m['model']}**")
        lines += [f"- {s}: {m['projection']['how'][s]}" for s in STAGES]
        lines.append("")
    lines += ["Plan: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                   for k, v in out["plan"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from fvaudit.engine.data import pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny settings: every stage runs once, in seconds")
    ap.add_argument("--folder", type=Path, default=Path("/tmp/fv-bench-jpegs"))
    ap.add_argument("--folder-n", type=int, default=None, help="JPEGs in the generated folder")
    ap.add_argument("--photos", type=Path, default=None, help="folder of scikit-image's sample photos")
    ap.add_argument("--workers", type=int, default=pipeline.default_workers())
    ap.add_argument("--eval-every", type=int, default=AuditPlan.eval_every)
    ap.add_argument("--confirm-share", type=float, default=AuditPlan.confirm_share)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/imagenet_projection_<device>.json)")
    args = ap.parse_args(argv)
    shorts = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in shorts if s not in MODELS]
    if unknown or not shorts:
        ap.error(f"--models: unknown {unknown or 'none given'}; choose from {', '.join(MODELS)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    st = settings_for(device, args.tiny)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()})"
    print(f"device: {dev_name}{' (tiny settings)' if args.tiny else ''}", flush=True)
    t_start, load0 = time.perf_counter(), os.getloadavg()
    # as at ImageNet size: nothing preloaded into memory, no decode cache (a pass does not fit it);
    # restored at the end (the smoke test may run this in a test process)
    saved = (pipeline.PRELOAD_LIMIT_MB, pipeline.options())
    pipeline.PRELOAD_LIMIT_MB = 0
    pipeline.configure(cache="off")
    try:
        return _run(args, shorts, device, st, dev_name, t_start, load0)
    finally:
        pipeline.PRELOAD_LIMIT_MB = saved[0]
        pipeline.configure(**asdict(saved[1]))


def _run(args, shorts, device, st: Settings, dev_name: str, t_start: float, load0) -> dict:
    n_folder = args.folder_n or max(st.scan_images, 2 * st.attack_batch, 64)   # batches are drawn at random
    ensure_folder(args.folder, n_folder, args.photos)
    made = json.loads((args.folder / "made.json").read_text())
    jpgs = sorted(args.folder.glob("*/*.jpg"))[:500]
    mean_kb = sum(p.stat().st_size for p in jpgs) / max(1, len(jpgs)) / 1e3
    print(f"JPEGs: {args.folder} ({made['n']} of 500×375, from {made['source']}, {mean_kb:.0f} KB mean)", flush=True)
    kinds = {MODELS[s][2] for s in shorts}
    print("metrics (model-independent):", flush=True)
    metrics = metrics_stage(st, kinds, args.workers)
    print("embedding:", flush=True)
    embed = embedding_stage([str(p) for p in jpgs[: st.embed_images]], device, st)
    print(f"  {embed['embed']['rate']:.1f} images/s ({embed['ratio']:.2f} × the forward ceiling)", flush=True)
    plan = AuditPlan(eval_every=args.eval_every, confirm_share=args.confirm_share)
    results = []
    for s in shorts:
        print(f"{s}:", flush=True)
        r = bench_model(s, args.folder, st, device, args.workers, metrics)
        r["projection"] = project(to_rates(r, embed["embed"]["rate"]), plan)
        results.append(r)
    out = {"device": dev_name, "device_type": device.type, "tiny": args.tiny, "settings": asdict(st),
           "plan": plan.as_dict(), "workers": args.workers, "torch": torch.__version__,
           "jpegs": {"folder": str(args.folder), "source": made["source"], "mean_kb": mean_kb, "n": made["n"]},
           "metrics": metrics, "embedding": embed, "models": results,
           "loadavg_before": [round(x, 1) for x in load0], "loadavg_after": [round(x, 1) for x in os.getloadavg()],
           "bench_s": time.perf_counter() - t_start, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"\nProjected wall time of the thesis' conv5 audit on {dev_name} (plan: {plan.steps:,} attack steps, "
          f"{plan.scan_images:,} scanned images, {plan.eval_images:,.0f} evaluated images):")
    print(f"{'model':28} " + " ".join(f"{s:>12}" for s in STAGES) + f" {'total':>10}  dominant")
    for r in results:
        p = r["projection"]
        print(f"{r['model']:28} " + " ".join(f"{hms(p['seconds'][s]):>12}" for s in STAGES)
              + f" {hms(p['total_s']):>10}  {p['dominant']} ({p['dominant_share']:.0%})")
    for r in results:
        print(f"{r['model']}:")
        for s in STAGES:
            print(f"  {s:12} {r['projection']['how'][s]}")
    path = args.out or ROOT / "bench" / "results" / f"imagenet_projection_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    path.with_suffix(".md").write_text(markdown(out))
    print(f"written to {path} and {path.with_suffix('.md').name} ({out['bench_s']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
