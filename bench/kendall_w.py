"""Benchmark Kendall-τ-W (SPEC §3): bound-and-prune against today's full-matrix path and
the scipy double loop, interleaved in one process.

τ-W needs the largest τ of every row of two J × J matrices (θ_init × θ_final and
θ_init × θ_init): 2·J·(J−1) pairs, 130 560 for J = 256. Three ways, timed in turn in
each of ``--repeats`` rounds (the order rotates between rounds), min and median kept:

- ``pruned``: ``metrics.kendall_tau_w`` (``fvaudit.engine.measure.kendall``: bucket bounds from
  one int8 product, fine bounds, the exact kernel on the few pairs that can win);
- ``matrix``: today's path, both full matrices by ``kendall_tau_matrix``, then the maxima;
- ``scipy``: ``scipy.stats.kendalltau`` over a random subset of the pairs, extrapolated
  to all of them (the full loop takes minutes).

Every round checks that ``pruned`` gives the ``matrix`` path's τ-W bit for bit, and
once, outside the timing, that both equal scipy's τ-W to 1e-12 on a few whole units
(2·(J−1) scipy calls each) and scipy's τ on the subset of pairs.

    python bench/kendall_w.py            # J = 256 units, N = 10 000 images
    python bench/kendall_w.py --quick    # J = 64, N = 2 000: seconds

Scores are ReLU'd correlated gaussians, so, like conv activations, about half are
exactly 0 (ties), and one unit is silent everywhere (its τ is NaN, as scipy returns it).
The machine load (``os.getloadavg``) is recorded before and after each round: on a
shared machine the ratios, measured side by side, mean more than the seconds.
Writes bench/results/kendall_w.json (kendall_w_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parent.parent
try:
    from fvaudit.engine.measure import kendall
    from fvaudit.engine import measure
except ImportError:
    sys.path.insert(0, str(ROOT / "backend"))
    from fvaudit.engine.measure import kendall
    from fvaudit.engine import measure


def make_scores(n: int, j: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Score matrices [N, J] before / after: correlated units, about half exact zeros, one
    silent unit, and a few units whose rankings are swapped by the "attack"."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 32)).astype(np.float32)
    mix = rng.standard_normal((32, j)).astype(np.float32) / np.sqrt(32)
    pre = latent @ mix + 0.5 * rng.standard_normal((n, j)).astype(np.float32)
    init = np.maximum(pre, 0)
    post = pre + 0.3 * rng.standard_normal((n, j)).astype(np.float32)
    swap = rng.choice(j, size=max(2, j // 16), replace=False)
    post[:, swap] = post[:, np.roll(swap, 1)]            # whack-a-mole: rankings move units
    final = np.maximum(post, 0)
    init[:, 0] = 0.0                                      # a silent unit
    final[:, 0] = 0.0
    return init.astype(np.float32), final.astype(np.float32)


def scipy_pairs(init, final, which, j_idx, i_idx) -> np.ndarray:
    out = np.empty(len(which))
    for p in range(len(which)):
        other = final if which[p] == 0 else init
        out[p] = kendalltau(init[:, j_idx[p]], other[:, i_idx[p]]).statistic
    return out


def scipy_tau_w(init, final, j: int) -> float:
    """τ-W of unit j by the scipy double loop (SPEC §3: nanmax over i ≠ j, NaN for a 0 denominator)."""
    others = [i for i in range(init.shape[1]) if i != j]
    num = np.array([kendalltau(init[:, j], final[:, i]).statistic for i in others])
    den = np.array([kendalltau(init[:, j], init[:, i]).statistic for i in others])
    if np.isnan(num).all() or np.isnan(den).all() or np.nanmax(den) == 0:
        return float("nan")
    return float(np.nanmax(num) / np.nanmax(den))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="J = 64, N = 2000, 100 scipy pairs")
    ap.add_argument("--units", "-J", type=int, default=None, help="units J (default 256; 64 with --quick)")
    ap.add_argument("--images", "-N", type=int, default=None, help="images N (default 10000; 2000 with --quick)")
    ap.add_argument("--pairs", type=int, default=None, help="scipy pairs timed per round (default 600; 100 quick)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--check-units", type=int, default=3, help="units whose τ-W is checked against scipy in full")
    ap.add_argument("--n-jobs", type=int, default=None, help="threads for fvaudit (default: usable CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = ap.parse_args()
    J = args.units or (64 if args.quick else 256)
    N = args.images or (2000 if args.quick else 10000)
    n_pairs = args.pairs or (100 if args.quick else 600)
    out = args.out or ROOT / "bench" / "results" / ("kendall_w_quick.json" if args.quick else "kendall_w.json")

    init, final = make_scores(N, J, args.seed)
    total_pairs = 2 * J * (J - 1)
    print(f"Kendall-τ-W, J = {J} units, N = {N} images ({total_pairs} column pairs, "
          f"{(init == 0).mean():.0%} zero scores), {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")

    rng = np.random.default_rng(args.seed + 1)
    which = rng.integers(0, 2, n_pairs)                    # 0: init×final, 1: init×init
    j_idx = rng.integers(0, J, n_pairs)
    i_idx = (j_idx + rng.integers(1, J, n_pairs)) % J      # i ≠ j

    stats: dict[str, list[float]] = {"pruned": [], "matrix": [], "scipy": []}
    loads = []
    results = {}

    def run_pruned():
        results["pruned"] = measure.kendall_tau_w(init, final, n_jobs=args.n_jobs)

    def run_matrix():
        cross = measure.kendall_tau_matrix(init, final, n_jobs=args.n_jobs)
        same = measure.kendall_tau_matrix(init, n_jobs=args.n_jobs)
        results["matrices"] = (cross, same)
        results["matrix"] = measure.kendall_tau_w(init, final, tau_init=same, tau_cross=cross)

    def run_scipy():
        results["scipy_pairs"] = scipy_pairs(init, final, which, j_idx, i_idx)

    runners = [("scipy", run_scipy), ("matrix", run_matrix), ("pruned", run_pruned)]
    identical = True
    for rep in range(args.repeats):
        load_before = os.getloadavg()[0]
        for name, fn in runners[rep % 3:] + runners[:rep % 3]:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            stats[name].append(dt * total_pairs / n_pairs if name == "scipy" else dt)
        same_bits = np.array_equal(results["pruned"], results["matrix"], equal_nan=True)
        identical &= same_bits
        loads.append((load_before, os.getloadavg()[0]))
        print(f"round {rep + 1}: scipy (extrapolated) {stats['scipy'][-1]:8.1f} s   matrix {stats['matrix'][-1]:6.2f} s"
              f"   pruned {stats['pruned'][-1]:6.2f} s   identical bits: {same_bits}   load {loads[-1][0]:.1f}→{loads[-1][1]:.1f}")

    # correctness against scipy, outside the timing
    cross, same = results["matrices"]
    got = np.where(which == 0, cross[j_idx, i_idx], same[j_idx, i_idx])
    ref = results["scipy_pairs"]
    nan_mismatch = int((np.isnan(got) != np.isnan(ref)).sum())
    both = ~np.isnan(ref) & ~np.isnan(got)
    max_diff_pairs = float(np.abs(got[both] - ref[both]).max()) if both.any() else 0.0
    check_units = list(range(min(J, args.check_units)))   # unit 0 is the silent one: NaN
    want = np.array([scipy_tau_w(init, final, j) for j in check_units])
    have = results["pruned"][check_units]
    nan_mismatch += int((np.isnan(want) != np.isnan(have)).sum())
    ok = ~np.isnan(want) & ~np.isnan(have)
    max_diff_w = float(np.abs(want[ok] - have[ok]).max()) if ok.any() else 0.0
    top_c, top_s = kendall.kendall_w_maxima(init, final, n_jobs=args.n_jobs)

    summary = {name: {"min_s": min(v), "median_s": statistics.median(v), "all_s": v} for name, v in stats.items()}
    ratio = {
        "scipy_over_pruned_min": summary["scipy"]["min_s"] / summary["pruned"]["min_s"],
        "scipy_over_pruned_median": summary["scipy"]["median_s"] / summary["pruned"]["median_s"],
        "matrix_over_pruned_min": summary["matrix"]["min_s"] / summary["pruned"]["min_s"],
        "matrix_over_pruned_median": summary["matrix"]["median_s"] / summary["pruned"]["median_s"],
        "scipy_over_matrix_median": summary["scipy"]["median_s"] / summary["matrix"]["median_s"],
        "per_round_scipy_over_pruned": [s / p for s, p in zip(stats["scipy"], stats["pruned"])],
    }
    print()
    print(f"{'':8s} {'min s':>9s} {'median s':>9s}")
    for name in ("scipy", "matrix", "pruned"):
        print(f"{name:8s} {summary[name]['min_s']:9.2f} {summary[name]['median_s']:9.2f}")
    print(f"pruned vs scipy loop: {ratio['scipy_over_pruned_median']:.1f}x (median), "
          f"{ratio['scipy_over_pruned_min']:.1f}x (min); per round "
          + ", ".join(f"{r:.1f}x" for r in ratio["per_round_scipy_over_pruned"]))
    print(f"pruned vs matrix path: {ratio['matrix_over_pruned_median']:.1f}x (median), "
          f"{ratio['matrix_over_pruned_min']:.1f}x (min); matrix vs scipy {ratio['scipy_over_matrix_median']:.1f}x")
    print(f"exact τ on {top_c.exact_pairs + top_s.exact_pairs} of {top_c.eligible_pairs + top_s.eligible_pairs} pairs "
          f"({(top_c.exact_pairs + top_s.exact_pairs) / max(1, top_c.eligible_pairs + top_s.eligible_pairs):.2%}), "
          f"fine bound on {top_c.fine_pairs + top_s.fine_pairs}")
    print(f"identical bits (pruned = matrix) every round: {identical}; max |τ − scipy| on {n_pairs} pairs "
          f"{max_diff_pairs:.1e}, max |τ-W − scipy| on units {check_units}: {max_diff_w:.1e}, "
          f"NaN mismatches {nan_mismatch}")
    print(f"load average per round (before→after): {', '.join(f'{a:.1f}→{b:.1f}' for a, b in loads)}")

    result = {
        "benchmark": "kendall_tau_w", "units_J": J, "images_N": N, "column_pairs": total_pairs,
        "zero_share": float((init == 0).mean()), "repeats": args.repeats,
        "baseline": "scipy.stats.kendalltau double loop over all i≠j pairs, twice "
                    f"(timed on {n_pairs} random pairs per round, extrapolated)",
        "previous": "kendall_tau_matrix for both matrices, then the row maxima (today's path before issue 15)",
        "timings": summary, "ratios": ratio,
        "exact_pairs": top_c.exact_pairs + top_s.exact_pairs, "fine_pairs": top_c.fine_pairs + top_s.fine_pairs,
        "eligible_pairs": top_c.eligible_pairs + top_s.eligible_pairs,
        "identical_bits_pruned_vs_matrix": bool(identical),
        "max_abs_diff_tau_vs_scipy": max_diff_pairs, "max_abs_diff_tau_w_vs_scipy": max_diff_w,
        "tau_w_units_checked": check_units, "nan_mismatches_vs_scipy": nan_mismatch,
        "load_average_before_after": loads,
        "n_jobs": args.n_jobs, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "quick": bool(args.quick), "seed": args.seed,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    good = identical and nan_mismatch == 0 and max_diff_pairs <= 1e-12 and max_diff_w <= 1e-12
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
