"""Recovery of a planted drug effect in ROI-level crossover studies, and power against parallel designs.

coverage  For seeds of a 26-subject crossover (13 per sequence, the default study's planted effects:
          a ketamine-only Gaussian decrease of left and right amygdala–vmPFC peaking 15 min in, and a
          period effect of +0.1 in period 2's infusion windows): every confirmatory condition:window
          interval of each test against the true contrast on the measured scale, the detection of the
          planted target (Left_Amygdala–vmPFC 10–20 min, p_adj < 0.05), false positives (p_adj < 0.05
          in cells whose true contrast is below 0.02 in magnitude, per study and family: the
          confirmatory family's 18 such cells, the exploratory family's 16) and the bias
          at the target. The truth is the counterfactual: the same seeds without the effects differ
          only by them, and over 1,200 subjects their mean difference in the change from baseline is
          the estimand (target − reference). ``--carryover`` adds carry-over of the effect into the
          reference session after the target one, which the two-period design cannot separate: the
          rows then show what it does to each test against the same truth.
power     Detection of the planted target with the effects scaled, for three designs of one infusion
          protocol: the crossover (26 subjects, 52 sessions), a parallel design of as many scan
          sessions (26 + 26 subjects) and one of as many subjects (13 + 13), with and without a
          subject's own response to the infusion context (``response_jitter_r``), which a parallel
          design's change from baseline keeps and a crossover's within-subject difference removes.
          Tests: mmrm (each design's default: baseline covariate for parallel, change for crossover;
          and the crossover with baseline: covariate) and change_welch.

    .venv/bin/python benchmarks/recovery_crossover.py coverage [--seeds 300] [--carryover 0]
    .venv/bin/python benchmarks/recovery_crossover.py power [--n-sims 150] [--scales 0.2 0.3 0.45]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from fclab.framework.executor import as_executor, progress
from fclab.framework.params import StatsParams, load_params
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.simulation.power import power_planted
from fclab.framework.simulation.roi_level import RoiStudy, simulate_crossover_edges

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("midazolam", "ketamine")
TARGET = ("Left_Amygdala", "vmPFC", "10-20min")
CONFIRMATORY = [(a, b) for a in ("Left_Amygdala", "Right_Amygdala") for b in ("vmPFC", "dmPFC", "amPFC")]
TESTS = {"mmrm difference us change KR (default)": {"name": "mmrm"},
         "mmrm difference us baseline covariate KR": {"name": "mmrm", "baseline": "covariate"},
         "mmrm slots cs KR": {"name": "mmrm", "crossover": "slots", "covariance": "cs"},
         "hills-armitage t": {"name": "change_welch"},
         "paired t": {"name": "change_welch", "period": "ignore"}}
KEY = ["roi_a", "roi_b", "window"]


def default_study(**kw) -> RoiStudy:
    p = load_params(ROOT / "params.yaml")
    return RoiStudy.from_params(p, effects=tuple(p.simulate.planted()), **kw)


def crossover_study(**kw) -> RoiStudy:
    return default_study(n_ref=13, n_target=13, groups=GROUPS, design="crossover", period_shift_r=0.1, **kw)


def truth(study: RoiStudy, n: int = 600, seed: int = 7) -> pd.Series:
    """The true condition:window contrast per edge and window: the mean counterfactual difference of
    the target sessions' change from baseline (the reference sessions carry none) over 2n subjects."""
    big = dataclasses.replace(study, n_ref=n, n_target=n, carryover=0.0)
    with_, s = simulate_crossover_edges(big, seed, big.period_shift_r)
    without, _ = simulate_crossover_edges(dataclasses.replace(big, effects=()), seed, big.period_shift_r)
    d = with_.assign(diff=with_["value"].to_numpy() - without["value"].to_numpy()).merge(s, on=["subject", "session"])
    base = d[d.window == d.window.iloc[0]].set_index(["roi_a", "roi_b", "subject", "session"])["diff"]
    rest = d[d.window != d.window.iloc[0]].copy()
    rest["change"] = rest["diff"].to_numpy() - base.reindex(
        pd.MultiIndex.from_frame(rest[["roi_a", "roi_b", "subject", "session"]])).to_numpy()
    per = rest.groupby(KEY + ["condition"])["change"].mean().unstack("condition")
    return per[GROUPS[1]] - per[GROUPS[0]]


def _coverage_chunk(args):
    from fclab.framework.stats.engine import run_stats

    study, seeds, true = args
    rows = []
    for seed in seeds:
        edges, sessions = simulate_crossover_edges(study, seed, study.period_shift_r, study.carryover)
        for label, spec in TESTS.items():
            p = StatsParams(design="crossover", groups=GROUPS, tests=[spec], confirmatory=CONFIRMATORY)
            res = run_stats(p, edges, list(study.windows), build_all("test", p.tests), sessions=sessions)
            res = res[res.term == "condition:window"].copy()
            res["truth"] = true.reindex(pd.MultiIndex.from_frame(res[KEY])).to_numpy()
            conf = res[res.family == "confirmatory"]
            null = res[res["truth"].abs() < 0.02]
            fp = {f"false_positive_{fam}": bool((null.loc[null.family == fam, "p_adj"] < 0.05).any())
                  for fam in ("confirmatory", "exploratory")}
            hit = res.set_index(KEY).loc[TARGET]
            rows.append({"seed": seed, "test": label,
                         "covered_planted": ((conf.ci_low <= conf.truth) & (conf.truth <= conf.ci_high))[
                             conf.truth.abs() >= 0.02].tolist(),
                         "covered_other": ((conf.ci_low <= conf.truth) & (conf.truth <= conf.ci_high))[
                             conf.truth.abs() < 0.02].tolist(),
                         "detected": bool(hit["p_adj"] < 0.05), **fp,
                         "error": float(hit["estimate"] - hit["truth"])})
    return rows


def rate(x) -> str:
    x = np.asarray(x, bool)
    lo, hi = proportion_confint(int(x.sum()), len(x), alpha=0.05, method="beta")
    return f"{x.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def coverage(a):
    study = crossover_study(carryover=a.carryover)
    t0 = time.perf_counter()
    true = truth(study)
    print(f"true contrast at {' '.join(TARGET)}: {true.loc[TARGET]:.4f}; planted cells (|truth| >= 0.02): "
          f"{int((true.abs() >= 0.02).sum())} of {len(true)}")
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(a.seed).spawn(a.seeds)]
    chunks = [(study, seeds[i:i + 10], true) for i in range(0, len(seeds), 10)]
    rows = [r for part in progress(as_executor(a.jobs).map(_coverage_chunk, chunks), len(chunks), "seeds (x10)")
            for r in part]
    out = pd.DataFrame(rows)
    print(f"{a.seeds} crossover studies, carry-over {a.carryover} ({time.perf_counter() - t0:.0f} s)")
    table = []
    for test, f in out.groupby("test", sort=False):
        table.append({"test": test,
                      "coverage, planted cells": rate(sum(f["covered_planted"], [])),
                      "coverage, other cells": rate(sum(f["covered_other"], [])),
                      "power at target": rate(f["detected"]),
                      "false positive, confirmatory": rate(f["false_positive_confirmatory"]),
                      "false positive, exploratory": rate(f["false_positive_exploratory"]),
                      "bias at target": f"{f['error'].mean():+.4f} (SE {f['error'].std(ddof=1) / np.sqrt(len(f)):.4f})"})
    print(pd.DataFrame(table).to_string(index=False))


def power(a):
    t0 = time.perf_counter()
    frames = []
    for response in a.responses:
        designs = {"crossover 26 subjects (52 sessions)": (crossover_study(response_jitter_r=response), "crossover"),
                   "crossover, mmrm baseline: covariate": (crossover_study(response_jitter_r=response), "crossover"),
                   "parallel 26+26 (52 sessions)": (default_study(n_ref=26, n_target=26, groups=GROUPS,
                                                                  response_jitter_r=response), "parallel"),
                   "parallel 13+13 (26 sessions)": (default_study(n_ref=13, n_target=13, groups=GROUPS,
                                                                  response_jitter_r=response), "parallel")}
        for label, (study, design) in designs.items():
            tests = ([{"name": "mmrm", "baseline": "covariate"}] if "covariate" in label else ["mmrm", "change_welch"])
            stats = StatsParams(design=design, groups=GROUPS, tests=tests, confirmatory=CONFIRMATORY)
            curve, edge, window = power_planted(study, stats, build_all("test", stats.tests), study.effects,
                                                a.scales, a.n_sims, a.seed, a.jobs)
            frames.append(curve[curve.outcome == "single_adj"].assign(design=label, response_jitter_r=response))
    out = pd.concat(frames, ignore_index=True)
    out["power"] = [f"{r:.2f} [{lo:.2f}, {hi:.2f}]" for r, lo, hi in zip(out.rate, out.ci_low, out.ci_high)]
    print(f"power at {edge[0]}–{edge[1]} {window} (p_adj < 0.05), {a.n_sims} studies per cell "
          f"({time.perf_counter() - t0:.0f} s)")
    wide = out.pivot_table(index=["response_jitter_r", "test", "design"], columns="scale", values="power",
                           aggfunc="first", sort=False)
    wide.columns = [f"scale {c:g} (Δz {out[out.scale == c].delta_z.iloc[0]:.2f})" for c in wide.columns]
    print(wide.to_string())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["coverage", "power"])
    ap.add_argument("--seeds", type=int, default=300)
    ap.add_argument("--carryover", type=float, default=0.0)
    ap.add_argument("--n-sims", type=int, default=150)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.2, 0.3, 0.45])
    ap.add_argument("--responses", type=float, nargs="+", default=[0.0, 0.05])
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    coverage(a) if a.part == "coverage" else power(a)


if __name__ == "__main__":
    main()
