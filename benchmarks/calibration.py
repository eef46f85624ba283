"""Null calibration of every test: false-positive rates and FWER on null data of two kinds.

* ``--kind roi``: realistic ROI-level null studies (fclab.framework.simulation.roi_level; the default study's design,
  runs, windows and denoising, no group effect);
* ``--kind relabel --study DIR``: random relabellings of the groups on the connectivity values of a
  study in DIR (for example a voxel-level null study made by ``fclab simulate`` with
  ``effect_delta_r: 0``, then ``fclab extract`` and ``fclab connectivity`` in DIR).

Every simulation or relabelling goes through the stats stage's run_stats with the params.yaml
stats section (its correction, families and confirmatory edges) and the tests below. Printed per
test and term, with exact (Clopper–Pearson) 95% CIs against the band [0.035, 0.065]:

  single        P(p < α) at the first confirmatory edge, second non-baseline window
  confirmatory  FWER: P(any p_adj < α) in the confirmatory family
  exploratory   FWER: P(any p_adj < α) in the exploratory family

    .venv/bin/python benchmarks/calibration.py --kind roi --n 1000 [--jobs 2] [--out roi.csv]
    .venv/bin/python benchmarks/calibration.py --kind relabel --study /tmp/null101 --n 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from fclab.framework import commands
from fclab.framework.params import load_params

TESTS = ["lmm", "mmrm", {"name": "mmrm", "baseline": "response", "as": "mmrm_response"}, "change_welch",
         "change_mannwhitney", "ancova", {"name": "permutation", "n_perm": 999}]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["roi", "relabel"], default="roi")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--study", default=None, help="directory holding results/connectivity/edges.parquet")
    ap.add_argument("--out", default=None, help="write the rates to this CSV")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    if a.study:
        os.chdir(a.study)
    frames = []
    for spec in TESTS:  # one pass per test: two variants of a plugin must not share a `test` label
        label = spec["as"] if isinstance(spec, dict) and "as" in spec else None
        spec = {k: v for k, v in spec.items() if k != "as"} if isinstance(spec, dict) else spec
        t0 = time.perf_counter()
        r = commands.calibrate(params, a.kind, a.n, a.seed, a.jobs, tests=[spec], out_dir=Path("/tmp/fclab-calibration"))
        if label:
            r["test"] = label
        print(f"{r['test'].iloc[0]}: {a.n} {a.kind} nulls in {time.perf_counter() - t0:.0f} s", flush=True)
        frames.append(r)
    r = pd.concat(frames, ignore_index=True)
    print(f"alpha {params.stats.alpha}, correction {params.stats.correction}; target band {commands.CALIBRATION_BAND}")
    print(r.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if a.out:
        r.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
