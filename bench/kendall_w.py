"""Benchmark Kendall-τ-W (SPEC §3) against the scipy double loop.

τ-W needs τ between every pair of units twice (θ_init × θ_final and θ_init × θ_init):
2·J·(J−1) pairs, 130 560 for J = 256. The baseline is ``scipy.stats.kendalltau`` called
for every pair; it is far too slow to run in full, so it runs on a random subset of
pairs and is extrapolated to all of them. The same subset checks that
``fvaudit.engine.metrics`` gives scipy's values.

    python bench/kendall_w.py            # J = 256 units, N = 10 000 images
    python bench/kendall_w.py --quick    # J = 64, N = 2 000: seconds

Scores are ReLU'd correlated gaussians, so, like conv activations, many are exactly 0
(ties), and one unit is silent everywhere (its τ is NaN, as scipy returns it).
Writes bench/results/kendall_w.json (kendall_w_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parent.parent
try:
    from fvaudit.engine import metrics as M
except ImportError:
    sys.path.insert(0, str(ROOT / "backend"))
    from fvaudit.engine import metrics as M


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="J = 64, N = 2000, 100 baseline pairs")
    ap.add_argument("--units", "-J", type=int, default=None, help="units J (default 256; 64 with --quick)")
    ap.add_argument("--images", "-N", type=int, default=None, help="images N (default 10000; 2000 with --quick)")
    ap.add_argument("--pairs", type=int, default=None, help="baseline pairs timed (default 300; 100 with --quick)")
    ap.add_argument("--n-jobs", type=int, default=None, help="threads for fvaudit (default: usable CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = ap.parse_args()
    J = args.units or (64 if args.quick else 256)
    N = args.images or (2000 if args.quick else 10000)
    n_pairs = args.pairs or (100 if args.quick else 300)
    out = args.out or ROOT / "bench" / "results" / ("kendall_w_quick.json" if args.quick else "kendall_w.json")

    init, final = make_scores(N, J, args.seed)
    total_pairs = 2 * J * (J - 1)
    print(f"Kendall-τ-W, J = {J} units, N = {N} images ({total_pairs} column pairs, "
          f"{(init == 0).mean():.0%} zero scores), {os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    w = M.kendall_tau_w(init, final, n_jobs=args.n_jobs)
    t_w = time.perf_counter() - t0
    print(f"fvaudit kendall_tau_w:              {t_w:9.2f} s")

    t0 = time.perf_counter()
    cross = M.kendall_tau_matrix(init, final, n_jobs=args.n_jobs)
    t_cross = time.perf_counter() - t0
    t0 = time.perf_counter()
    same = M.kendall_tau_matrix(init, n_jobs=args.n_jobs)
    t_same = time.perf_counter() - t0
    print(f"  (kendall_tau_matrix init×final {t_cross:.2f} s, init×init {t_same:.2f} s)")
    w_again = M.kendall_tau_w(init, final, tau_init=same, tau_cross=cross)
    assert np.array_equal(np.isnan(w), np.isnan(w_again)) and np.allclose(w[~np.isnan(w)], w_again[~np.isnan(w)],
                                                                          rtol=0, atol=0)

    # baseline: scipy on a random subset of the 2·J·(J−1) off-diagonal pairs
    rng = np.random.default_rng(args.seed + 1)
    which = rng.integers(0, 2, n_pairs)                    # 0: init×final, 1: init×init
    j_idx = rng.integers(0, J, n_pairs)
    i_idx = (j_idx + rng.integers(1, J, n_pairs)) % J      # i ≠ j
    ref = np.empty(n_pairs)
    t0 = time.perf_counter()
    for p in range(n_pairs):
        other = final if which[p] == 0 else init
        ref[p] = kendalltau(init[:, j_idx[p]], other[:, i_idx[p]]).statistic
    t_base = time.perf_counter() - t0
    got = np.where(which == 0, cross[j_idx, i_idx], same[j_idx, i_idx])
    nan_mismatch = int((np.isnan(got) != np.isnan(ref)).sum())
    both = ~np.isnan(ref) & ~np.isnan(got)
    max_diff = float(np.abs(got[both] - ref[both]).max()) if both.any() else 0.0
    per_pair = t_base / n_pairs
    t_base_full = per_pair * total_pairs
    speedup = t_base_full / t_w

    print(f"scipy double loop: {n_pairs} pairs in {t_base:.2f} s ({per_pair * 1e3:.2f} ms/pair)")
    print(f"scipy double loop, extrapolated:    {t_base_full:9.2f} s  ({t_base_full / 3600:.2f} h)")
    print(f"speed-up (scipy / fvaudit):         {speedup:9.1f}x")
    print(f"max |fvaudit − scipy| on the {n_pairs} pairs: {max_diff:.3e}  (NaN mismatches: {nan_mismatch})")
    print(f"τ-W mean over units (NaN skipped): {M.nan_aggregate(w)}")

    result = {
        "benchmark": "kendall_tau_w",
        "units_J": J, "images_N": N, "column_pairs": total_pairs,
        "zero_share": float((init == 0).mean()),
        "fvaudit_kendall_tau_w_s": t_w,
        "fvaudit_matrix_init_final_s": t_cross,
        "fvaudit_matrix_init_init_s": t_same,
        "baseline": "scipy.stats.kendalltau double loop over all i≠j pairs, twice",
        "baseline_pairs_timed": n_pairs,
        "baseline_s_per_pair": per_pair,
        "baseline_extrapolated_s": t_base_full,
        "speedup": speedup,
        "max_abs_diff_vs_scipy": max_diff,
        "nan_mismatches_vs_scipy": nan_mismatch,
        "n_jobs": args.n_jobs, "cpu_count": os.cpu_count(),
        "numpy": np.__version__, "scipy": scipy.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "quick": bool(args.quick), "seed": args.seed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if nan_mismatch == 0 and max_diff <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
