"""Benchmark: group statistics over a 400-ROI connectome (79,800 edges), 26 subjects × 5 windows.

Prints, side by side in one run, wall time (untraced) and peak traced memory (tracemalloc, a second
call) of
  - fclab's batched REML mixed model (fclab.framework.stats.lmm.fit_reml + the four group × window
    contrasts with Satterthwaite df), on the (edges, subjects, windows) array;
  - the ``lmm`` plugin end to end from the long edge table (reshaping and result rows included);
  - the statsmodels MixedLM loop (default fit, as users write it), timed on a sample of edges and
    scaled to all edges, with the largest relative difference of its estimates from fclab's;
  - fclab's ``permutation`` engine (max-|t| over every edge × window, Welch t) with 5,000
    subject-level relabelings, against nilearn's ``permuted_ols`` on the equivalent two-sample
    contrast (the change from baseline regressed on group, with an intercept), same relabeling count.

    .venv/bin/python benchmarks/group_stats.py [--n-perm 5000] [--sample 40] [--skip-nilearn]
"""

from __future__ import annotations

import argparse
import itertools
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd

from fclab.framework.pluginhost.contracts import Design
from fclab.framework.stats.lmm import fit_reml
from fclab.framework.stats.permutation import max_t_pvalues
from fclab.api import contrasts, subject_design
from fclab.plugins.lmm import Lmm

R, S, WINDOWS = 400, 26, ("baseline", "0-10min", "10-20min", "20-30min", "30-40min")


def measure(fn, memory: bool = True):
    """Wall time of an untraced call, then peak traced memory (MB) of a second, traced call.

    tracemalloc slows allocation-heavy numpy code, so the two are measured separately.
    """
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    if not memory:
        return out, wall, float("nan")
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, wall, peak / 1e6


def study(seed=0):
    rng = np.random.default_rng(seed)
    subjects = pd.DataFrame({"subject": [f"s{i:02d}" for i in range(S)], "group": ["midazolam"] * 14 + ["ketamine"] * 12})
    E = R * (R - 1) // 2
    y = rng.normal(0.3, 0.15, (E, S, 1)) + rng.normal(0, 0.12, (E, S, len(WINDOWS)))
    design = Design(("midazolam", "ketamine"), "baseline", WINDOWS, subjects)
    return y, design


def long_table(y, design):
    rois = [f"R{i:03d}" for i in range(R)]
    pairs = np.array(list(itertools.combinations(range(R), 2)))
    E, S_, W = y.shape
    e = np.tile(np.arange(E), S_ * W)
    cat = pd.Categorical.from_codes
    sub = np.repeat(np.arange(S_), E * W)
    return pd.DataFrame({
        "subject": cat(sub, design.subjects["subject"]),
        "group": cat((design.subjects["group"] == "ketamine").to_numpy().astype(int)[sub], ["midazolam", "ketamine"]),
        "window": cat(np.tile(np.repeat(np.arange(W), E), S_), list(WINDOWS)),
        "metric": cat(np.zeros(len(e), int), ["pearson"]),
        "roi_a": cat(pairs[e, 0], rois), "roi_b": cat(pairs[e, 1], rois),
        "value": y.transpose(1, 2, 0).ravel(),
    })


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-perm", type=int, default=5000)
    ap.add_argument("--sample", type=int, default=40, help="edges for the statsmodels loop")
    ap.add_argument("--skip-nilearn", action="store_true")
    a = ap.parse_args(argv)
    y, design = study()
    E = y.shape[0]
    X, names = subject_design(design, "lmm")
    todo = contrasts(design, names, ["group:window"])
    rows = []

    def engine():
        fit = fit_reml(y, X)
        return fit, [fit.contrast(L) for _, _, L in todo]

    (fit, res), wall, peak = measure(engine)
    rows.append(("lmm: fclab batched REML (array)", E, wall, peak))
    table = {"edges": long_table(y, design)}
    _, wall_p, peak_p = measure(lambda: Lmm(Lmm.Params(contrasts=["group:window"])).run(table["edges"], design))
    rows.append(("lmm: fclab plugin from the long table", E, wall_p, peak_p))
    table.clear()  # free the 10.4 M-row table before the loop and permutation measurements

    from statsmodels.regression.mixed_linear_model import MixedLM

    rng = np.random.default_rng(1)
    sample = rng.choice(E, a.sample, replace=False)
    groups = np.repeat(np.arange(S), len(WINDOWS))
    Xf = X.reshape(-1, X.shape[-1])
    col = names.index("group:window[10-20min]")

    def loop():
        est = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for e in sample:
                est.append(MixedLM(y[e].ravel(), Xf, groups=groups).fit(reml=True).fe_params[col])
        return np.array(est)

    est, wall_s, peak_s = measure(loop)
    rows.append((f"lmm: statsmodels MixedLM loop (scaled from {a.sample} edges)", E, wall_s * E / a.sample, peak_s))
    diff = np.max(np.abs(est - fit.beta[sample, col]) / np.abs(est))

    Xd = y[:, :, 1:] - y[:, :, :1]  # change from baseline (E, S, W-1)
    data = Xd.transpose(1, 2, 0).reshape(S, -1)
    is_target = (design.subjects["group"] == "ketamine").to_numpy()
    (_, p, p_fwer, n_rel, _), wall_perm, peak_perm = measure(
        lambda: max_t_pvalues(data, is_target, np.zeros(data.shape[1], int), a.n_perm, 0))
    rows.append((f"permutation: fclab max-|t|, {n_rel} relabelings", data.shape[1], wall_perm, peak_perm))
    if not a.skip_nilearn:
        from nilearn.mass_univariate import permuted_ols

        walls_nl = []
        for jobs in (1, 2):
            _, wall_nl, peak_nl = measure(lambda: permuted_ols(
                is_target[:, None].astype(float), data, n_perm=a.n_perm, two_sided_test=True, random_state=0,
                n_jobs=jobs, verbose=0), memory=jobs == 1)  # workers' memory is not traced
            walls_nl.append(wall_nl)
            rows.append((f"permutation: nilearn permuted_ols, {a.n_perm} perms, n_jobs={jobs}", data.shape[1],
                         wall_nl, peak_nl))

    print(f"{E} edges (R = {R}), {S} subjects x {len(WINDOWS)} windows; 2 cores")
    print(f"{'what':<62} {'tests':>8} {'wall s':>10} {'peak MB':>9}")
    for what, n, wall_, peak_ in rows:
        print(f"{what:<62} {n:>8} {wall_:>10.2f} {peak_:>9.1f}")
    print(f"speed-up of the batched lmm over the statsmodels loop: {wall_s * E / a.sample / wall:,.0f}x (array), "
          f"{wall_s * E / a.sample / wall_p:,.0f}x (plugin)")
    if not a.skip_nilearn:
        print(f"permutation wall time, fclab / nilearn: {wall_perm / walls_nl[0]:.2f} (n_jobs=1), "
              f"{wall_perm / walls_nl[1]:.2f} (n_jobs=2; worker memory is not traced)")
    print(f"largest relative difference, statsmodels vs fclab group:window[10-20min] estimates: {diff:.1e}")
    print(f"smallest FWER p over the null connectome: {np.nanmin(p_fwer):.3f} (expected well above 0.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
