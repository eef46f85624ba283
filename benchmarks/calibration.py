"""Null calibration: false-positive rates of every test on simulated studies with no group effect.

Each simulation is a fresh ROI-level study (framework.roisim) with the default study's design:
12 ketamine vs 14 midazolam, the five amygdala/mPFC ROIs, a baseline and four 10-min infusion
windows, subject and window jitter as in the full simulation, and no planted effect. Every study
goes through the stats stage's run_stats with the params.yaml stats section (its correction,
families and confirmatory edges), with every built-in test selected. Printed per test and term:

  single        P(p < α) at the pre-specified edge and window (Left_Amygdala–vmPFC, 10-20min)
  confirmatory  FWER: P(any p_adj < α) in the confirmatory family (6 edges × 4 windows)
  exploratory   FWER: P(any p_adj < α) in the exploratory family (4 edges × 4 windows)

with the exact (Clopper–Pearson) 95% CI, against the target band [0.035, 0.065]. ``nbs`` adjusts
over the whole network, so its FWER is ``any`` (P(any p_adj < α)); its ``single`` is not a test
of one edge. With five ROIs NBS component sizes are very discrete, so ``--nbs-rois N`` adds a
second calibration of ``nbs`` alone on an N-ROI null connectome (resting correlation 0.3 between
every pair), for both component scores.

    .venv/bin/python benchmarks/calibration.py [--n-sims 1000] [--jobs 2] [--out calibration.csv]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from framework.params import load_params
from framework.power import rates, simulate_many
from framework.roisim import RoiStudy

ALL_TESTS = ["lmm", "lmm_reference", "change_welch", "change_mannwhitney", "ancova",
             {"name": "permutation", "n_perm": 999}, {"name": "nbs", "n_perm": 999, "threshold": 3.0}]
BAND = (0.035, 0.065)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sims", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--skip-reference", action="store_true", help="leave out the slow lmm_reference")
    ap.add_argument("--out", default=None, help="write the rates to this CSV")
    ap.add_argument("--nbs-rois", type=int, default=0, help="also calibrate nbs on a null connectome of N ROIs")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    tests = [t for t in ALL_TESTS if not (a.skip_reference and t == "lmm_reference")]
    stats = params.stats.model_copy(update={"tests": tests})
    study = RoiStudy.from_params(params)
    t0 = time.perf_counter()
    out = simulate_many(study, stats, a.n_sims, a.seed, ("Left_Amygdala", "vmPFC"), "10-20min", a.jobs)
    r = rates(out)
    r = r[(r["outcome"] != "single_adj") & ((r["outcome"] != "any") | (r["test"] == "nbs"))]
    r["in_band"] = r["rate"].between(*BAND)
    print(f"{a.n_sims} null studies in {time.perf_counter() - t0:.0f} s ({a.jobs} jobs), "
          f"alpha {stats.alpha}, correction {stats.correction}; target band {BAND}")
    print(r.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if a.nbs_rois:
        r = pd.concat([r, nbs_connectome(a, params)], ignore_index=True)
    if a.out:
        r.to_csv(a.out, index=False)
    return 0


def nbs_connectome(a, params) -> pd.DataFrame:
    """nbs alone on a null connectome of ``a.nbs_rois`` ROIs, extent and intensity scores."""
    R = a.nbs_rois
    rois = tuple(f"R{i:02d}" for i in range(R))
    base = np.full((R, R), 0.3) + 0.7 * np.eye(R)
    study = RoiStudy.from_params(params, rois=rois, base=base)
    frames = []
    for score in ("extent", "intensity"):
        stats = params.stats.model_copy(update={
            "tests": [{"name": "nbs", "n_perm": 999, "threshold": 3.0, "score": score}], "confirmatory": []})
        t0 = time.perf_counter()
        out = simulate_many(study, stats, a.n_sims, a.seed + 1, rois[:2], list(study.windows)[1], a.jobs)
        r = rates(out)
        r = r[r["outcome"] == "any"].assign(test=f"nbs ({R} ROIs, {score})")
        r["in_band"] = r["rate"].between(*BAND)
        print(f"\nnbs on a {R}-ROI null connectome ({R * (R - 1) // 2} edges x 4 windows), score {score}: "
              f"{a.n_sims} studies in {time.perf_counter() - t0:.0f} s")
        print(r.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        frames.append(r)
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
