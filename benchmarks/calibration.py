"""Null calibration: false-positive rates of every test on simulated studies with no group effect.

Each simulation is a fresh ROI-level study (framework.roisim) with the default study's design:
12 ketamine vs 14 midazolam, the five amygdala/mPFC ROIs, a baseline and four 10-min infusion
windows, subject and window jitter as in the full simulation, and no planted effect. Every study
goes through the stats stage's run_stats with the params.yaml stats section (its correction,
families and confirmatory edges), with every built-in test selected. Printed per test and term:

  single        P(p < α) at the pre-specified edge and window (Left_Amygdala–vmPFC, 10-20min)
  confirmatory  FWER: P(any p_adj < α) in the confirmatory family (6 edges × 4 windows)
  exploratory   FWER: P(any p_adj < α) in the exploratory family (4 edges × 4 windows)

with the exact (Clopper–Pearson) 95% CI, against the target band [0.035, 0.065].

    .venv/bin/python benchmarks/calibration.py [--n-sims 1000] [--jobs 2] [--out calibration.csv]
"""

from __future__ import annotations

import argparse
import sys
import time

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
    a = ap.parse_args(argv)
    params = load_params(a.params)
    tests = [t for t in ALL_TESTS if not (a.skip_reference and t == "lmm_reference")]
    stats = params.stats.model_copy(update={"tests": tests})
    study = RoiStudy.from_params(params)
    t0 = time.perf_counter()
    out = simulate_many(study, stats, a.n_sims, a.seed, ("Left_Amygdala", "vmPFC"), "10-20min", a.jobs)
    r = rates(out)
    r = r[r["outcome"] != "single_adj"]
    r["in_band"] = r["rate"].between(*BAND)
    print(f"{a.n_sims} null studies in {time.perf_counter() - t0:.0f} s ({a.jobs} jobs), "
          f"alpha {stats.alpha}, correction {stats.correction}; target band {BAND}")
    print(r.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if a.out:
        r.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
