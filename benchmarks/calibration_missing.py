"""mmrm's calibration when windows are missing, Satterthwaite against Kenward–Roger.

On each voxel-level null study (see calibration.py for how /tmp/null101, 202 and 303 are made), 1,000
group relabellings (the stats stage's run_stats with params.yaml's stats section and only `mmrm`);
after each relabelling, subject × window cells (baseline included, every edge) go missing:

  random   15 % of cells in either group
  group    25 % in the target group (ketamine), 5 % in the reference group: an exclusion for motion
           that strikes one group (about 14 % of cells overall)

The missing cells are drawn afresh per relabelling from its seed. Printed per study, mechanism and df
method: the single, confirmatory and exploratory false-positive rates with exact 95 % CIs.

    .venv/bin/python benchmarks/calibration_missing.py [--n 1000] [--studies /tmp/null101 ...]
        [--methods satterthwaite kenward-roger] [--mechanisms random group] [--out missing.csv]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from fclab.framework.connectome.edgestore import read_edges
from fclab.framework.params import load_params
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.simulation.power import rates, relabel_many

MECHANISMS = {"random": (0.15, 0.15), "group": (0.05, 0.25)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--studies", nargs="+", default=["/tmp/null101", "/tmp/null202", "/tmp/null303"])
    ap.add_argument("--methods", nargs="+", default=["satterthwaite", "kenward-roger"])
    ap.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), choices=list(MECHANISMS))
    ap.add_argument("--covariance", default="us")
    ap.add_argument("--baseline", default="covariate", choices=["covariate", "response"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    p = load_params("params.yaml")
    windows = [w.name for w in p.connectivity.windows]
    frames = []
    for study in a.studies:
        e = read_edges(f"{study}/results/connectivity/edges.parquet", windows).long()
        for mech in a.mechanisms:
            for method in a.methods:
                spec = {"name": "mmrm", "df": method, "covariance": a.covariance, "baseline": a.baseline}
                st = p.stats.model_copy(update={"tests": [spec]})
                t0 = time.perf_counter()
                out = relabel_many(e, st, build_all("test", st.tests), windows, a.n, 7, ("Left_Amygdala", "vmPFC"),
                                   "10-20min", jobs=a.jobs, missing=MECHANISMS[mech])
                r = rates(out)
                r = r[r.outcome.isin(["single", "confirmatory", "exploratory"])].assign(
                    study=study, mechanism=mech, df=method)
                print(f"{study} {mech} {method} ({time.perf_counter() - t0:.0f} s)")
                print(r[["term", "outcome", "rate", "ci_low", "ci_high"]].to_string(index=False), flush=True)
                frames.append(r)
    if a.out:
        pd.concat(frames).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
