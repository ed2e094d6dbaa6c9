"""Attack steps/s against plain fine-tuning of the same model and batch (issue 15, goal ≥ 0.8).

On the generated folder of 500×375 photo JPEGs (bench/_jpegs.py), for the demo CNN and
EfficientNet-Lite0 at 224, each round runs, interleaved:

* baseline "plain fine-tuning": Adam on cross-entropy against the folder's labels, the same
  model, batch size, training-batch draws and input pipeline (`pipeline.Batches` +
  `pipeline.StepFeed`: streamed and decoded ahead in the DataLoader workers when the set does
  not fit the preload limit, as EfficientNet-Lite0's 5000 × 224² does; preloaded otherwise);
* "push-down": `engine.attacks.run_attack` (distillation from the frozen θ_init + the attack
  loss on a mini-batch of the units' top-k images), α = 0.5;
* "α = 0 control": run_attack with kind finetune (distillation only: the teacher forward).

Steps/s are timed between the reporter's per-step calls after two warm-up steps (no
evaluation inside the timed span). Min and median over ``--repeats`` rounds; writes
bench/results/attack_throughput.json.

Usage: python bench/attack.py [--folder /tmp/fv-bench-jpegs] [--n 5000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "bench"))

import fvaudit  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _jpegs import ensure_folder  # noqa: E402

WARMUP = 2


class StepClock:
    """A reporter that timestamps every training step."""

    def __init__(self):
        from fvaudit.engine.progress import NullReporter

        self._null = NullReporter()
        self.t: dict[int, float] = {}

    def __getattr__(self, name):
        return getattr(self._null, name)

    def advance(self, done, total=None, **info):
        if "loss" in info:
            self.t[int(done)] = time.perf_counter()

    def steps_per_s(self) -> float:
        last = max(self.t)
        return (last - WARMUP) / (self.t[last] - self.t[WARMUP])


def plain_finetune(model, train, steps: int, batch: int, seed: int, workers: int) -> float:
    from fvaudit.engine.data.pipeline import Batches, StepFeed
    from fvaudit.engine.models.sources import clone_model

    student = clone_model(model)
    module = student.module.eval()
    opt = torch.optim.Adam(module.parameters(), lr=1e-5)
    ids = train.ids
    train_b = Batches(train, ids, model, workers=workers)

    def draw(step):
        rng = np.random.default_rng([seed, step])
        return np.sort(rng.choice(len(ids), size=min(batch, len(ids)), replace=False)), None

    t = {}
    for step, (pos, x), _ in StepFeed(draw, train_b, None, 0, steps):
        y = torch.as_tensor(train.labels[ids[pos]])
        loss = F.cross_entropy(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t[step + 1] = time.perf_counter()
    return (steps - WARMUP) / (t[steps] - t[WARMUP])


def attack_rate(model, train, val, layer, init, kind: str, steps: int, batch: int, attack_batch: int, seed: int,
                workers: int) -> float:
    from fvaudit.engine.attack.config import AttackConfig, Target
    from fvaudit.engine.attack.run import run_attack

    units = [u for u in range(model.layer(layer).units) if u not in set(init[layer].dead_units)][:32]
    cfg = AttackConfig(kind=kind, targets=[Target(layer, units)], steps=steps, batch_size=batch,
                       attack_batch_size=attack_batch, eval_every=steps, eval_size=0, lr=1e-5,
                       alpha=0.5 if kind != "finetune" else None, seed=seed, workers=workers)
    clock = StepClock()
    run_attack(model, train, val, cfg, init_scans=init, reporter=clock)
    return clock.steps_per_s()


def bench_model(name, layer, folder, batch, attack_batch, steps, repeats, workers, init_n) -> dict:
    from fvaudit.engine.scans.activations import scan
    from fvaudit.engine.data.images import FolderImageSet, stratified_ids, subset
    from fvaudit.engine.models.sources import load_model

    model = load_model(name)
    train = FolderImageSet(folder, verify=False)
    val = subset(train, stratified_ids(train.labels, 20, seed=1))
    init = scan(model, train, [layer], k=10, ids=stratified_ids(train.labels, init_n, seed=2), batch_size=batch,
                workers=workers).layers
    rounds = {"plain_finetune": [], "push_down": [], "alpha0_control": []}
    for r in range(repeats):
        rounds["plain_finetune"].append(plain_finetune(model, train, steps, batch, seed=r, workers=workers))
        rounds["push_down"].append(attack_rate(model, train, val, layer, init, "push_down", steps, batch,
                                               attack_batch, r, workers))
        rounds["alpha0_control"].append(attack_rate(model, train, val, layer, init, "finetune", steps, batch,
                                                    attack_batch, r, workers))
        print(f"  {name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rounds.items()) + " steps/s",
              flush=True)
    st = lambda xs: {"min": min(xs), "median": statistics.median(xs), "all": xs}
    ratios = {f"{k}_over_plain": [a / p for a, p in zip(rounds[k], rounds["plain_finetune"])]
              for k in ("push_down", "alpha0_control")}
    return {"model": name, "layer": layer, "batch": batch, "attack_batch": attack_batch, "steps": steps,
            "timed_steps": steps - WARMUP, "workers": workers, "train_images": len(train),
            "steps_s": {k: st(v) for k, v in rounds.items()}, "ratios": {k: st(v) for k, v in ratios.items()}}


def main() -> None:
    from fvaudit.engine.data.pipeline import default_workers

    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", type=Path, default=Path("/tmp/fv-bench-jpegs"))
    ap.add_argument("--photos", type=Path, default=None)
    ap.add_argument("--folder-n", type=int, default=5000, help="JPEGs in the generated folder (all train the models)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps-demo", type=int, default=40)
    ap.add_argument("--steps-lite", type=int, default=8)
    ap.add_argument("--batch-lite", type=int, default=32)
    ap.add_argument("--init-n", type=int, default=300, help="images scanned for the units' top-k (D_attack)")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attack_throughput.json")
    args = ap.parse_args()
    ensure_folder(args.folder, args.folder_n, args.photos)
    runs = [bench_model("fmnist-cnn", "relu3", args.folder, 256, 64, args.steps_demo, args.repeats, args.workers,
                        args.init_n),
            bench_model("efficientnet-lite0", "_blocks.15", args.folder, args.batch_lite, max(1, args.batch_lite // 2),
                        args.steps_lite, args.repeats, args.workers, args.init_n)]
    load = os.getloadavg()
    print(f"\nsteps/s, min / median of {args.repeats} interleaved rounds; {args.workers} worker processes; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'model':20} {'batch':>5} {'plain fine-tune':>16} {'push-down':>12} {'α=0 control':>12} "
          f"{'push-down/plain':>16} {'control/plain':>14}")
    for r in runs:
        s, q = r["steps_s"], r["ratios"]
        cell = lambda d: f"{d['min']:.2f}/{d['median']:.2f}"
        print(f"{r['model']:20} {r['batch']:5d} {cell(s['plain_finetune']):>16} {cell(s['push_down']):>12} "
              f"{cell(s['alpha0_control']):>12} {cell(q['push_down_over_plain']):>16} "
              f"{cell(q['alpha0_control_over_plain']):>14}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
                                    "loadavg": load, "runs": runs}, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
