"""Synthetic visualization speed at equal quality: batched vs one unit at a time vs lucent.

For each case (the demo CNN's ``relu3`` and EfficientNet-Lite0's ``_blocks.5``, 16–32 units),
the same steps, image size, learning rate and objective (``a_j`` of SPEC §1):

* "batched": ``engine.synthesis.synthesize`` with every unit of the case in one batch;
* baseline "one_at_a_time": the same function called once per unit (the same code);
* baseline "lucent": ``torch-lucent``'s ``render_vis``, one unit per call (its normal use),
  with its Fourier + decorrelated parameterisation, its standard transforms (scaled to the
  image size), Adam at the same lr, and an objective computing the same ``a_j`` (for a
  ReLU layer the same lifted pre-activation objective as ours). lucent is installed into a
  throwaway virtualenv (``python -m venv`` + ``pip install -c constraints torch-lucent``),
  which sees this project's site-packages through a ``.pth`` file so the installed CPU
  torch is reused and no CUDA torch is pulled; it is skipped, with the reason, when it
  cannot be installed;
* optionally "batched_4_seeds": ``synthesize_many`` with 4 seeds per unit (``n_synth``),
  reported per image.

Candidates run interleaved (the order rotates each repeat), 3 repeats, min and median.
Quality: ONE evaluator, ``engine.synthetic_measures.unit_scores_of_images``, scores every
candidate's final, untransformed uint8 images; the table gives the mean ``a_j`` reached.
Writes ``bench/results/synthesis.json`` and ``.md``.

Usage: ``.venv/bin/python bench/synthesis.py [--repeats 3] [--no-lucent] [--quick]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))

import fvaudit  # noqa: E402,F401  (torchvision guard first)
import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_VENV = Path(tempfile.gettempdir()) / "fvaudit-bench-lucent-venv"

CASES = {
    "fmnist-cnn": {"layer": "relu3", "units": 32, "steps": 128, "seeds_case": True},
    "efficientnet-lite0": {"layer": "_blocks.5", "units": 16, "steps": 48, "seeds_case": False},
}
#: The render speed-ups off (BN folding, channels_last, own-channel conv): the batched
#: renderer as it was before them, to measure what they bring.
PLAIN = {"fold_bn": False, "channels_last": False, "own_channel_only": False}
LR = 0.05


# ------------------------------------------------------------------ lucent side

def _lucent_transforms(size: int):
    """lucent's standard_transforms (pad 12, jitter 8, scale ±10 %, rotate ±10°, jitter 4 at
    224 px), with the pixel amounts scaled to the image size."""
    from lucent.optvis import transform

    px = lambda v: max(2, round(v * size / 224))  # noqa: E731  (jitter needs d > 1)
    return [
        transform.pad(px(12), mode="constant", constant_value=0.5),
        transform.jitter(px(8)),
        transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        transform.random_rotate(list(range(-10, 11)) + 5 * [0]),
        transform.jitter(px(4)),
    ]


def lucent_worker(job_path: str, out_path: str) -> None:
    """Runs inside the lucent virtualenv: render every unit with lucent, time the renders."""
    from lucent.optvis import objectives, param, render

    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.synthesis.objectives import _relu_input_layer

    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(int(os.environ.get("FVAUDIT_BENCH_THREADS", torch.get_num_threads())))
    model = load_model(job["model"])
    module = model.module.eval()
    c, h, w = model.input_shape
    pre = _relu_input_layer(model, job["layer"])
    hooked = (pre or job["layer"]).replace(".", "_")  # lucent names modules with "_"

    def objective(u: int):
        def f(T):
            z = T(hooked)[:, u]
            if pre is not None:  # the same lifted pre-ReLU a_j as engine.synthesis
                return -(z.clamp_min(0).pow(2).sum() + 1e-2 * z.sum())
            return -z.pow(2).sum()
        return objectives.Objective(f)

    def one(u: int, steps: int) -> np.ndarray:
        param_f = lambda: param.image(w, h=h, channels=1 if c == 1 else None, fft=True, decorrelate=c == 3)  # noqa: E731
        imgs = render.render_vis(module, objective(u), param_f,
                                 optimizer=lambda p: torch.optim.Adam(p, lr=job["lr"]),
                                 transforms=_lucent_transforms(h) + [model.normalize], thresholds=(steps,),
                                 preprocess=False, progress=False, show_image=False, fixed_image_size=h)
        return imgs[-1][0]

    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"])
    one(job["units"][0], 2)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    out = [one(u, job["steps"]) for u in job["units"]]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    images = (np.clip(np.stack(out), 0, 1) * 255).round().astype(np.uint8)
    np.savez(out_path, images=images, seconds=seconds, cpu_seconds=cpu, torch_file=torch.__file__,
             threads=torch.get_num_threads())


class Lucent:
    """The throwaway virtualenv with torch-lucent, or the reason it could not be made."""

    def __init__(self, venv: Path, fresh: bool) -> None:
        self.venv = venv
        self.python = venv / "bin" / "python"
        self.skipped: str | None = None
        self.version: str | None = None
        try:
            self._ensure(fresh)
        except Exception as exc:  # any install failure → skipped with its message
            self.skipped = f"torch-lucent could not be installed into {venv}: {exc}"
            print(f"SKIP lucent: {self.skipped}", flush=True)

    def _ok(self) -> bool:
        if not self.python.exists():
            return False
        r = subprocess.run([str(self.python), "-c", "import fvaudit, lucent, importlib.metadata as m; "
                            "print(m.version('torch-lucent'))"], capture_output=True, text=True)
        if r.returncode == 0:
            self.version = r.stdout.strip()
        return r.returncode == 0

    def _ensure(self, fresh: bool) -> None:
        import shutil

        if fresh and self.venv.exists():
            shutil.rmtree(self.venv)
        if self._ok():
            return
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True)
        site = Path(subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        # this project's packages (CPU torch, torchvision, fvaudit) visible, like --system-site-packages
        (site / "_fvaudit_parent.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
        import torchvision

        cons = self.venv / "constraints.txt"
        cons.write_text(f"torch=={torch.__version__.split('+')[0]}\ntorchvision=={torchvision.__version__.split('+')[0]}\n")
        r = subprocess.run([str(self.python), "-m", "pip", "install", "-q", "-c", str(cons), "torch-lucent"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1])
        if not self._ok():
            raise RuntimeError("installed, but `import lucent` fails")

    def run(self, model: str, layer: str, units: list[int], steps: int) -> tuple[float, float, np.ndarray]:
        with tempfile.TemporaryDirectory() as d:
            job, out = Path(d) / "job.json", Path(d) / "out.npz"
            job.write_text(json.dumps({"model": model, "layer": layer, "units": units, "steps": steps, "lr": LR, "seed": 0}))
            r = subprocess.run([str(self.python), str(Path(__file__).resolve()), "--lucent-worker", str(job), str(out)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if r.returncode != 0:
                raise RuntimeError(f"lucent worker failed: {r.stderr.strip()[-2000:]}")
            z = np.load(out)
            torch_file = str(z["torch_file"])
            if str(self.venv) in torch_file:
                raise RuntimeError(f"the lucent venv pulled its own torch ({torch_file}); it must reuse the project's")
            return float(z["seconds"]), float(z["cpu_seconds"]), z["images"][:, None]


# ------------------------------------------------------------------ fvaudit side

def run_batched(model, layer, units, steps, seeds=(0,), batch=None, **options):
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import synthesize_many

    cfg = SynthesisConfig(steps=steps, lr=LR, batch_units=batch or len(units) * len(seeds), **options)
    t0, c0 = time.perf_counter(), time.process_time()
    res = synthesize_many(model, layer, units, list(seeds), cfg)
    return time.perf_counter() - t0, time.process_time() - c0, np.stack([r.images for r in res], 1)  # [J, n, H, W, C]


def run_one_at_a_time(model, layer, units, steps, **options):
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import synthesize

    cfg = SynthesisConfig(steps=steps, lr=LR, batch_units=1, **options)
    t0, c0 = time.perf_counter(), time.process_time()
    imgs = [synthesize(model, layer, [u], cfg).images for u in units]
    return time.perf_counter() - t0, time.process_time() - c0, np.concatenate(imgs)[:, None]


def bench_case(name: str, spec: dict, repeats: int, lucent: Lucent | None, seeds_case: bool,
               only: set[str] | None = None) -> dict:
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.measure.synthetic import unit_scores_of_images

    model = load_model(name)
    layer, steps = spec["layer"], spec["steps"]
    units = list(range(spec["units"]))
    J = len(units)
    cands = {
        "batched": lambda: run_batched(model, layer, units, steps),
        "one_at_a_time": lambda: run_one_at_a_time(model, layer, units, steps),
        "batched_plain": lambda: run_batched(model, layer, units, steps, **PLAIN),
        # the whole layer in one batch even on a CPU (no cpu_pixels_per_batch cap)
        "batched_one_batch": lambda: run_batched(model, layer, units, steps, cpu_pixels_per_batch=0),
    }
    per = {"batched": J, "one_at_a_time": J, "batched_plain": J, "batched_one_batch": J}
    if only:
        cands = {k: v for k, v in cands.items() if k in only or k == "batched"}
    if (seeds_case or spec.get("seeds_case")) and (not only or "batched_4_seeds" in only):
        cands["batched_4_seeds"] = lambda: run_batched(model, layer, units, steps, seeds=(0, 1, 2, 3), batch=min(4 * J, 64))
        per["batched_4_seeds"] = 4 * J
    if lucent is not None and lucent.skipped is None and (not only or "lucent" in only):
        cands["lucent"] = lambda: lucent.run(name, layer, units, steps)
        per["lucent"] = J
    # warm-up (oneDNN primitive caches, lazy imports), untimed; lucent warms up in its worker
    run_batched(model, layer, units[:2], 2)
    if "batched_plain" in cands:
        run_batched(model, layer, units[:2], 2, **PLAIN)
    run_one_at_a_time(model, layer, units[:1], 2)
    times: dict[str, list[float]] = {k: [] for k in cands}
    cpu: dict[str, list[float]] = {k: [] for k in cands}
    images: dict[str, np.ndarray] = {}
    order = list(cands)
    for r in range(repeats):
        rot = order[r % len(order):] + order[: r % len(order)]
        for k in rot:
            t, c, im = cands[k]()
            times[k].append(t / per[k])
            cpu[k].append(c / per[k])
            images[k] = im
            print(f"  {name} {layer} repeat {r + 1} {k}: {t / per[k] * 1e3:.1f} ms/image, cpu {c / per[k] * 1e3:.1f} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    out = {"model": name, "layer": layer, "units": J, "steps": steps, "size": list(model.input_shape[1:]), "lr": LR,
           "plain_options": PLAIN, "candidates": {}}
    for k in cands:
        im = images[k]
        a = unit_scores_of_images(model, layer, units, im, "score")  # ONE evaluator for every candidate
        out["candidates"][k] = {
            "s_per_image_min": min(times[k]), "s_per_image_median": statistics.median(times[k]),
            "s_per_image_all": times[k], "images": per[k],
            "cpu_s_per_image_min": min(cpu[k]), "cpu_s_per_image_median": statistics.median(cpu[k]),
            "objective_mean": float(a.mean()), "objective_median": float(np.median(a.mean(1))),
        }
    b = out["candidates"]["batched"]
    for k, c in out["candidates"].items():
        c["speedup_of_batched_min"] = c["s_per_image_min"] / b["s_per_image_min"]
        c["speedup_of_batched_median"] = c["s_per_image_median"] / b["s_per_image_median"]
        c["cpu_speedup_of_batched_median"] = c["cpu_s_per_image_median"] / b["cpu_s_per_image_median"]
        c["objective_vs_batched"] = c["objective_mean"] / b["objective_mean"]
    if "one_at_a_time" in images:
        d = np.abs(images["batched"][:, :1].astype(int) - images["one_at_a_time"].astype(int))
        out["batched_vs_one_at_a_time_max_pixel_diff"] = int(d.max())
    return out


def to_markdown(res: dict) -> str:
    lines = ["# Synthetic visualization: batched vs one unit at a time vs lucent", "",
             f"`{res['command']}` — {res['when']}, torch {res['torch']} on {res['torch_threads']} CPU threads, "
             f"load average {res['load_before']} before / {res['load_after']} after (`uptime`); lucent: "
             f"{res['lucent']}.", "",
             "Time per image (min / median of the repeats); ratio = baseline time / batched time; quality = mean "
             "a_j of the final images scored by one evaluator (`unit_scores_of_images`), relative to batched.", ""]
    for c in res["cases"]:
        lines += [f"## {c['model']} `{c['layer']}`: {c['units']} units, {c['steps']} steps, {c['size'][0]}×{c['size'][1]} px", "",
                  "| candidate | ms / image (min) | ms / image (median) | ratio to batched (min) | ratio (median) "
                  "| CPU ms / image (median) | CPU ratio | mean a_j | a_j vs batched |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for k, v in c["candidates"].items():
            lines.append(f"| {k} | {v['s_per_image_min'] * 1e3:.1f} | {v['s_per_image_median'] * 1e3:.1f} | "
                         f"{v['speedup_of_batched_min']:.2f}× | {v['speedup_of_batched_median']:.2f}× | "
                         f"{v['cpu_s_per_image_median'] * 1e3:.1f} | {v['cpu_speedup_of_batched_median']:.2f}× | "
                         f"{v['objective_mean']:.4g} | {v['objective_vs_batched']:.3f} |")
        if "batched_vs_one_at_a_time_max_pixel_diff" in c:
            lines += ["", f"batched vs one-at-a-time: max pixel difference {c['batched_vs_one_at_a_time_max_pixel_diff']} "
                          "(same seeds and transforms per unit; what differs is floating-point batching, which "
                          "the optimisation can amplify over the steps — compare the mean a_j)."]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--lucent-worker":
        lucent_worker(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--no-lucent", action="store_true")
    ap.add_argument("--fresh-venv", action="store_true", help="recreate the lucent virtualenv")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--seeds-case", action="store_true", help="also time synthesize_many with 4 seeds per unit "
                    "on every case (default: on the demo CNN only)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every candidate (default 1: on 2 shared cores, 2 threads collapse under "
                         "load, measured 5x slower at load 18)")
    ap.add_argument("--candidates", default="",
                    help="comma list to run (batched always runs): one_at_a_time, batched_plain, batched_one_batch, "
                         "batched_4_seeds, lucent; default all but batched_one_batch")
    ap.add_argument("--steps", type=int, default=0, help="override every case's steps (same for all candidates)")
    ap.add_argument("--quick", action="store_true", help="few steps, 1 repeat: a smoke run, not a measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "synthesis.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["FVAUDIT_BENCH_THREADS"] = str(args.threads)
    wants_lucent = not args.no_lucent and (not args.candidates or "lucent" in args.candidates.split(","))
    lucent = Lucent(args.venv, args.fresh_venv) if wants_lucent else None
    load_before = os.getloadavg()
    cases = []
    for name in args.models.split(","):
        spec = dict(CASES[name])
        if args.steps:
            spec.update(steps=args.steps)
        if args.quick:
            spec.update(steps=4, units=min(spec["units"], 4))
        print(f"{name} {spec['layer']}: {spec['units']} units, {spec['steps']} steps", flush=True)
        only = set(args.candidates.split(",")) if args.candidates else {"one_at_a_time", "batched_plain", "batched_4_seeds", "lucent"}
        cases.append(bench_case(name, spec, 1 if args.quick else args.repeats, lucent, args.seeds_case, only))
    res = {"command": "python bench/synthesis.py " + " ".join(sys.argv[1:]), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
           "lucent": ("skipped: " + lucent.skipped) if lucent and lucent.skipped else
                     (("not run (--no-lucent)" if args.no_lucent else "not run (not among --candidates)") if lucent is None
                      else f"torch-lucent {lucent.version} in {lucent.venv}"),
           "cases": cases}
    for c in cases:
        print(f"\n{c['model']} {c['layer']} ({c['units']} units, {c['steps']} steps, {c['size'][0]} px)")
        for k, v in c["candidates"].items():
            print(f"  {k:16s} {v['s_per_image_min'] * 1e3:9.1f} ms/image (min) {v['s_per_image_median'] * 1e3:9.1f} (median)"
                  f"  x{v['speedup_of_batched_min']:.2f} / x{v['speedup_of_batched_median']:.2f} of batched"
                  f"  mean a_j {v['objective_mean']:.4g} ({v['objective_vs_batched']:.3f} of batched)")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
        args.out.with_suffix(".md").write_text(to_markdown(res))
        print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
