"""Simulation-based power and null calibration of the statistical tests, at ROI level.

Each simulated study (``fclab.framework.simulation.roi_level``) goes through the same ``run_stats`` as a real one, so
the tests, their contrasts and the family-wise adjustments are exactly those of the stats stage.
Per study and per (test, term) this records:

* ``single``: whether the pre-specified edge and window has p < α (unadjusted);
* ``confirmatory`` / ``exploratory``: whether any row of that family has p_adj < α (the FWER event
  under the null; the detection event for the planted edge under an effect is ``single_adj``);
* ``single_adj``: whether the pre-specified edge and window has p_adj < α;
* ``any``: whether any row of the test has p_adj < α (the FWER event of a test whose family is the
  whole network, like ``nbs``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from fclab.framework.executor import Executor, as_executor, progress
from fclab.framework.params import StatsParams
from fclab.framework.simulation.roi_level import RoiStudy, simulate_crossover_edges, simulate_edges


def study_outcomes(study: RoiStudy, stats: StatsParams, tests: list, seed, edge: tuple[str, str], window: str) -> pd.DataFrame:
    """Simulate one study, run every test (``tests``: the plugins ``stats.tests`` selects), and return
    one row of outcomes per (test, term)."""
    from fclab.framework.stats.engine import run_stats

    if study.design == "crossover":
        edges, sessions = simulate_crossover_edges(study, seed, study.period_shift_r, study.carryover)
        res = run_stats(stats, edges, list(study.windows), tests, sessions=sessions)
    else:
        edges = simulate_edges(study, seed)
        res = run_stats(stats, edges, list(study.windows), tests)
    return outcomes(res, stats, seed, edge, window)


def outcomes(res: pd.DataFrame, stats: StatsParams, seed, edge: tuple[str, str], window: str) -> pd.DataFrame:
    """One row per (test, term) of a tests table: the null-calibration events listed above. Every term a
    test reports is there; a term without windows (``group:trend``, window ``trend``) has its single
    cell at the edge's ``trend`` row."""
    pair = frozenset(edge)
    cell = np.where(res["window"] == "trend", "trend", window)
    is_edge = np.array([frozenset(x) == pair for x in zip(res["roi_a"], res["roi_b"])]) & (res["window"] == cell)
    rows = []
    for (test, term), f in res.groupby(["test", "term"], sort=False):
        sel = is_edge[f.index]
        row = {"seed": seed, "test": test, "term": term,
               "single": bool((f.loc[sel, "p"] < stats.alpha).any()),
               "single_adj": bool((f.loc[sel, "p_adj"] < stats.alpha).any())}
        for fam in ("confirmatory", "exploratory"):
            g = f[f["family"] == fam]
            row[fam] = bool((g["p_adj"] < stats.alpha).any()) if len(g) else np.nan
        row["any"] = bool((f["p_adj"] < stats.alpha).any())
        rows.append(row)
    return pd.DataFrame(rows)


def _chunk(args):
    study, stats, tests, seeds, edge, window = args
    return pd.concat([study_outcomes(study, stats, tests, s, edge, window) for s in seeds], ignore_index=True)


def simulate_many(study: RoiStudy, stats: StatsParams, tests: list, n_sims: int, seed: int, edge, window,
                  jobs: int | Executor = 1) -> pd.DataFrame:
    """Outcomes of ``n_sims`` simulated studies (independent seeds from one SeedSequence)."""
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_sims)]
    chunks = [seeds[i:i + 25] for i in range(0, n_sims, 25)]
    args = [(study, stats, tests, c, tuple(edge), window) for c in chunks]
    parts = progress(as_executor(jobs).map(_chunk, args), len(args), "simulated studies (x25)")
    return pd.concat(list(parts), ignore_index=True)


def _relabel_chunk(args):
    from fclab.framework.stats.engine import run_stats

    edges, subjects, groups, windows, stats, tests, seeds, edge, window, missing = args
    cells = edges[["subject", "window"]].drop_duplicates().reset_index(drop=True)
    frames = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(groups)
        label = dict(zip(subjects, perm))
        relabelled = edges.assign(group=edges["subject"].map(label))
        if missing is not None:
            rate = np.where(cells["subject"].map(label) == stats.groups[1], missing[1], missing[0])
            gone = cells[rng.random(len(cells)) < rate]
            hit = pd.MultiIndex.from_frame(relabelled[["subject", "window"]]).isin(pd.MultiIndex.from_frame(gone))
            relabelled.loc[hit, "value"] = np.nan
        res = run_stats(stats, relabelled, windows, tests)
        frames.append(outcomes(res, stats, seed, edge, window))
    return pd.concat(frames, ignore_index=True)


def relabel_many(edges: pd.DataFrame, stats: StatsParams, tests: list, windows: list[str], n: int, seed: int, edge, window,
                 jobs: int | Executor = 1, missing: tuple[float, float] | None = None) -> pd.DataFrame:
    """Outcomes of ``n`` random relabellings of the groups on a study's own connectivity values.

    Each relabelling permutes the group labels over subjects (group sizes kept; a subject's windows
    move together, as in the permutation test), so every group effect is null while the data keep
    their real covariance across windows, subjects and edges. With ``missing`` = (rate in the
    reference group, rate in the target group), each subject × window (baseline included) is then
    missing for every edge with its relabelled group's rate, as a motion exclusion would remove it.
    """
    edges = edges[edges["group"].isin(stats.groups)]
    table = edges[["subject", "group"]].drop_duplicates("subject")
    subjects, groups = table["subject"].to_numpy(), table["group"].to_numpy()
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]
    chunks = [seeds[i:i + 25] for i in range(0, n, 25)]
    args = [(edges, subjects, groups, windows, stats, tests, c, tuple(edge), window, missing) for c in chunks]
    parts = progress(as_executor(jobs).map(_relabel_chunk, args), len(args), "relabellings (x25)")
    return pd.concat(list(parts), ignore_index=True)


def rates(outcomes: pd.DataFrame, alpha_ci: float = 0.05) -> pd.DataFrame:
    """Rate of each outcome per (test, term), with its Clopper–Pearson interval."""
    rows = []
    for (test, term), f in outcomes.groupby(["test", "term"], sort=False):
        for what in ("single", "single_adj", "confirmatory", "exploratory", "any"):
            x = f[what].dropna().astype(bool)
            if not len(x):
                continue
            lo, hi = proportion_confint(int(x.sum()), len(x), alpha=alpha_ci, method="beta")
            rows.append({"test": test, "term": term, "outcome": what, "n_sims": len(x),
                         "rate": x.mean(), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def power_curve(study: RoiStudy, stats: StatsParams, tests: list, deltas, n_sims: int, seed: int, edge, window,
                jobs: int | Executor = 1) -> pd.DataFrame:
    """Power (rate of p_adj < α at the planted edge and window) for each Δz in ``deltas``."""
    from dataclasses import replace

    frames = []
    for k, dz in enumerate(deltas):
        s = replace(study, effect=(edge[0], edge[1], window, float(dz)))
        out = simulate_many(s, stats, tests, n_sims, seed + k, edge, window, jobs)
        r = rates(out)
        r = r[r["outcome"].isin(["single", "single_adj"])].assign(delta_z=float(dz))
        frames.append(r)
    return pd.concat(frames, ignore_index=True)


def planted_target(study: RoiStudy) -> tuple[tuple[str, str], str]:
    """The edge and window where ``study.effects`` shift the correlation most (what power is of)."""
    from fclab.framework.simulation.roi_level import planted_shifts

    shifts = planted_shifts(study, list(study.windows))
    (window, (i, j, _)), _ = max((((w, k), abs(v)) for w, d in shifts.items() for k, v in d.items()),
                                 key=lambda item: item[1])
    return (study.rois[i], study.rois[j]), window


def power_planted(study: RoiStudy, stats: StatsParams, tests: list, effects, scales, n_sims: int, seed: int,
                  jobs: int | Executor = 1) -> tuple[pd.DataFrame, tuple[str, str], str]:
    """Power of detecting ``effects`` (simulate.effects) with every Δr multiplied by each scale.

    Detection is p_adj < α at the edge and window the effects shift most. ``delta_z`` in the
    result is that window's mean planted shift on Fisher's z scale at the baseline correlation.
    """
    from dataclasses import replace

    from fclab.framework.simulation.roi_level import planted_shifts

    base = replace(study, effect=None, effects=tuple(effects))
    edge, window = planted_target(base)
    i, j = study.rois.index(edge[0]), study.rois.index(edge[1])
    r0 = float(study.base[i, j])
    frames = []
    for k, sc in enumerate(scales):
        s = replace(base, effects=tuple(e.model_copy(update={"delta_r": e.delta_r * float(sc)}) for e in effects))
        shift = sum(v for (a, b, _), v in planted_shifts(s, [window]).get(window, {}).items()
                    if (a, b) == tuple(sorted((i, j))))
        out = simulate_many(s, stats, tests, n_sims, seed + k, edge, window, jobs)
        r = rates(out)
        r = r[r["outcome"].isin(["single", "single_adj"])].assign(
            scale=float(sc), delta_z=float(abs(np.arctanh(np.clip(r0 + shift, -0.999, 0.999)) - np.arctanh(r0))))
        frames.append(r)
    return pd.concat(frames, ignore_index=True), edge, window


def detectable_effect(curve: pd.DataFrame, target: float = 0.8, outcome: str = "single_adj") -> pd.DataFrame:
    """The smallest Δz with the target power per test, by linear interpolation along the curve."""
    rows = []
    for (test, term), f in curve[curve["outcome"] == outcome].groupby(["test", "term"], sort=False):
        f = f.sort_values("delta_z")
        x, y = f["delta_z"].to_numpy(), f["rate"].to_numpy()
        above = np.flatnonzero(y >= target)
        if not len(above):
            dz = np.nan
        elif above[0] == 0:
            dz = x[0]
        else:
            i = above[0]
            dz = x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1])
        rows.append({"test": test, "term": term, "power": target, "delta_z": dz})
    return pd.DataFrame(rows)
