"""Null calibration of the crossover tests on ROI-level simulated studies (no drug effect).

Each study is a two-period crossover (``simulate_crossover_edges``): every subject keeps its own
connectivity in both sessions, each session has its own baseline and infusion runs, windows as
params.yaml's, and a period effect (every edge's latent correlation +``--period-shift`` in period 2's
infusion windows). Scenarios:

  balanced    13 subjects per sequence
  unbalanced  8 target-first, 18 reference-first: a period effect biases an analysis that ignores it
  missing     balanced, and 7.5 % of subject × session × window cells (baselines included) missing: a
              within-subject difference needs four cells (both baselines, both windows), so about
              27 % of them are missing, more than the parallel calibration's 15 % of cells leaves
              missing of its changes (28 %)

Every configuration runs on the same studies. Printed per scenario and configuration: the single
(Left_Amygdala–vmPFC, 10–20 min, unadjusted), confirmatory and exploratory family-wise rates with
exact 95 % CIs, and the share of rows without a p-value (a reason instead: REML not converged, too
few subjects), which count as not significant.

    .venv/bin/python benchmarks/calibration_crossover.py [--n 1000] [--scenarios balanced unbalanced missing]
        [--period-shift 0.1] [--out crossover_null.csv]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from fclab.framework.executor import as_executor, progress
from fclab.framework.params import StatsParams
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.simulation.power import outcomes, rates
from fclab.framework.simulation.roi_level import RoiStudy, simulate_crossover_edges

CONFIGS = {
    "mmrm difference us KR": {"name": "mmrm", "baseline": "covariate"},
    "mmrm difference us change KR": {"name": "mmrm"},
    "mmrm difference us period:window KR": {"name": "mmrm", "baseline": "covariate", "period": "window"},
    "mmrm difference us Satterthwaite": {"name": "mmrm", "baseline": "covariate", "df": "satterthwaite"},
    "mmrm slots us KR": {"name": "mmrm", "crossover": "slots"},
    "mmrm slots cs KR": {"name": "mmrm", "crossover": "slots", "covariance": "cs"},
    "mmrm slots csh KR": {"name": "mmrm", "crossover": "slots", "covariance": "csh"},
    "hills-armitage t": {"name": "change_welch"},
    "paired t": {"name": "change_welch", "period": "ignore"},
    "permutation sequences": {"name": "permutation", "n_perm": 1000},
    "permutation sign-flip": {"name": "permutation", "n_perm": 1000, "period": "ignore"},
}
SCENARIOS = {"balanced": (13, 13, 0.0), "unbalanced": (18, 8, 0.0), "missing": (13, 13, 0.075)}
SLOW = ("mmrm slots us KR",)  # 36 covariance parameters: does not converge once cells are missing
EDGE, WINDOW = ("Left_Amygdala", "vmPFC"), "10-20min"
GROUPS = ("placebo", "ketamine")


def stats_params(config: dict) -> StatsParams:
    pairs = [(a, b) for a in ("Left_Amygdala", "Right_Amygdala") for b in ("vmPFC", "dmPFC", "amPFC")]
    return StatsParams(design="crossover", groups=GROUPS, tests=[config], confirmatory=pairs)


def _chunk(args):
    from fclab.framework.stats.engine import run_stats

    study, seeds, configs, missing = args
    frames = []
    for seed in seeds:
        edges, sessions = simulate_crossover_edges(study, seed, study.period_shift_r)
        if missing:
            rng = np.random.default_rng([seed, 1])
            cells = edges[["subject", "session", "window"]].drop_duplicates().reset_index(drop=True)
            gone = cells[rng.random(len(cells)) < missing]
            hit = pd.MultiIndex.from_frame(edges[["subject", "session", "window"]]).isin(pd.MultiIndex.from_frame(gone))
            edges.loc[hit, "value"] = np.nan
        for label, config in configs.items():
            p = stats_params(config)
            res = run_stats(p, edges, list(study.windows), build_all("test", p.tests), sessions=sessions)
            frames.append(outcomes(res, p, seed, EDGE, WINDOW).assign(
                test=label, no_p=float(res["p"].isna().mean())))
    return pd.concat(frames, ignore_index=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--configs", nargs="+", default=[c for c in CONFIGS if c not in SLOW], choices=list(CONFIGS))
    ap.add_argument("--period-shift", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    configs = {k: CONFIGS[k] for k in a.configs}
    frames = []
    for scenario in a.scenarios:
        n_ref, n_target, missing = SCENARIOS[scenario]
        study = RoiStudy(n_ref=n_ref, n_target=n_target, groups=GROUPS, design="crossover",
                         period_shift_r=a.period_shift)
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(a.seed).spawn(a.n)]
        chunks = [(study, seeds[i:i + 25], configs, missing) for i in range(0, a.n, 25)]
        t0 = time.perf_counter()
        out = pd.concat(list(progress(as_executor(a.jobs).map(_chunk, chunks), len(chunks), "studies (x25)")),
                        ignore_index=True)
        r = rates(out)
        r = r[r.outcome.isin(["single", "confirmatory", "exploratory"])].assign(scenario=scenario)
        r["no_p"] = r["test"].map(out.groupby("test")["no_p"].mean())
        print(f"{scenario}: {a.n} null studies ({time.perf_counter() - t0:.0f} s)")
        print(r[["test", "term", "outcome", "rate", "ci_low", "ci_high", "no_p"]].to_string(index=False), flush=True)
        frames.append(r)
    if a.out:
        pd.concat(frames, ignore_index=True).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
