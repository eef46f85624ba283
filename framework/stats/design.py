"""Model matrices, contrasts and effect sizes that test plugins share (exported by ``fclab.api``).

``subject_design`` and ``contrasts`` encode ``value ~ group * window (+ covariates)`` with the
reference group and the baseline window as reference levels; ``contrast_table`` turns any batched fit
with a ``contrast(L, alpha)`` method (fclab's REML mixed model, its MMRM) into result rows;
``welch_change`` is Welch's t-test on the change from baseline with Hedges' g, which the permutation
test reuses for its estimates and intervals.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.special

from fclab.framework.pluginhost.contracts import Design
from fclab.framework.stats.cubes import change_cube, long_rows


# Student's t and the normal quantile as scipy.stats computes them (its t.sf is special.stdtr(df, -x),
# t.ppf special.stdtrit, norm.ppf special.ndtri; tests/test_stats.py checks them to the bit, edge
# cases included): the statistics stage then never imports scipy.stats, ~0.3 s of its start-up.
def t_sf(x, df):
    """scipy.stats.t.sf(x, df)."""
    return scipy.special.stdtr(df, -np.asarray(x, float))


def t_ppf(q, df):
    """scipy.stats.t.ppf(q, df)."""
    return scipy.special.stdtrit(df, q)


def norm_ppf(q):
    """scipy.stats.norm.ppf(q)."""
    return scipy.special.ndtri(q)


# Satterthwaite df can never exceed n − p (observations minus fixed effects). Computed at a REML optimum
# found to a Newton decrement of 1e-12 (mmrm) or ~1e-10 in log γ (lmm), they carry that precision: with
# one window after baseline, where the exact df is n − p, the mmrm's came out up to 3e-7 above it
# (relative), so a bound of 1e-8 turned every such row into p = NaN. Within DF_RTOL of the bound the df
# is the bound; beyond it, or not positive, the row has no p-value and says why.
DF_RTOL = 1e-5
DF_REASON = "Satterthwaite df not in (0, observations − fixed effects]"


def bounded_df(df: np.ndarray, p_max: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(df, reason): ``df`` clipped to ``p_max`` within ``DF_RTOL``; NaN with ``DF_REASON`` where a
    fitted edge's df is not finite, not positive or beyond the bound by more."""
    with np.errstate(invalid="ignore"):
        bad = fitted & ~(np.isfinite(df) & (df > 0) & (df <= p_max * (1 + DF_RTOL)))
    return np.where(bad, np.nan, np.minimum(df, p_max)), np.where(bad, DF_REASON, None)

Contrast = Literal["group:window", "group", "group:trend"]
CHANGE_TERM = "group:window"


def subject_design(design: Design, test: str) -> tuple[np.ndarray, list[str]]:
    """Fixed effects per subject and window slot: (S, K, p) and the column names."""
    target = design.groups[1]
    g = (design.subjects["group"] == target).to_numpy(float)
    cov, cov_names = design.covariate_matrix(test)
    eff = design.effect_windows
    K = len(design.windows)
    W = np.array([[float(w == e) for e in eff] for w in design.windows])  # (K, windows − 1)
    S = len(g)
    parts = [np.ones((S, K, 1)), np.broadcast_to(g[:, None, None], (S, K, 1)),
             np.broadcast_to(W[None], (S, K, len(eff))), g[:, None, None] * W[None],
             np.broadcast_to(cov[:, None, :], (S, K, cov.shape[1]))]
    names = ["intercept", "group", *[f"window[{w}]" for w in eff], *[f"group:window[{w}]" for w in eff],
             *cov_names]
    return np.concatenate(parts, axis=2), names


def contrasts(design: Design, names: list[str], which) -> list[tuple[str, str, np.ndarray]]:
    """(term, window, L) for every requested contrast over the columns ``names``:

    * ``group:window`` — the group difference (target − reference) in the change from baseline, per
      non-baseline window;
    * ``group`` — the group difference within each window, baseline included;
    * ``group:trend`` — the group difference in the least-squares linear slope of the change from
      baseline across the non-baseline windows, per window step (``window`` = ``trend``).
    """
    col = {n: i for i, n in enumerate(names)}
    eff = design.effect_windows
    out = []

    def unit(*cols):
        L = np.zeros(len(names))
        for c in cols:
            L[col[c]] += 1.0
        return L

    if "group:window" in which:
        out += [("group:window", w, unit(f"group:window[{w}]")) for w in eff]
    if "group" in which:
        out += [("group", w, unit("group") + (unit(f"group:window[{w}]") if w in eff else 0))
                for w in design.windows]
    if "group:trend" in which and len(eff) >= 2:
        c = np.arange(len(eff), dtype=float)
        c -= c.mean()
        L = sum(ck * unit(f"group:window[{w}]") for ck, w in zip(c, eff)) / (c**2).sum()
        out.append(("group:trend", "trend", L))
    return out


def _result_rows(keys: pd.DataFrame, term: str, window: str, res: dict, n, reason) -> pd.DataFrame:
    frame = keys.copy()
    frame["window"] = window
    frame["term"] = term
    for k, v in res.items():
        frame[k] = v
    frame["n"] = n
    frame["reason"] = reason
    return frame


def contrast_n(cube: np.ndarray, design: Design, term: str, window: str) -> np.ndarray:
    """Per edge, the subjects contributing to a contrast, as every test counts them: those with a value
    in the windows it compares (``group:window``: the baseline and that window, as the change from
    baseline needs; ``group``: that window; ``group:trend``: the baseline and at least one later window).
    ``cube`` is ``edge_cube``'s (edges × subjects × windows) over ``design.windows``."""
    have = np.isfinite(cube)
    base = have[:, :, design.windows.index(design.baseline_window)]
    if term == "group":
        return have[:, :, design.windows.index(window)].sum(axis=1)
    if term == "group:trend":
        later = [design.windows.index(w) for w in design.effect_windows]
        return (base & have[:, :, later].any(axis=2)).sum(axis=1)
    return (base & have[:, :, design.windows.index(window)]).sum(axis=1)


def contrast_table(fit, keys: pd.DataFrame, design: Design, names: list[str], which,
                   cube: np.ndarray | None = None, terms=None, count=None) -> pd.DataFrame:
    """Result rows of every requested contrast of a batched fit (lmm's or mmrm's); a row without a
    p-value carries the fit's reason or the df's. With ``cube`` (``edge_cube``'s values), ``n`` is the
    subjects contributing to each contrast (``contrast_n``), as change_welch and permutation count them;
    without it, the subjects in the fit. ``terms`` ((term, window, L) rows) and ``count`` (term, window
    -> n per edge) replace ``contrasts`` and ``contrast_n`` for another design's model."""
    frames = []
    for term, window, L in contrasts(design, names, which) if terms is None else terms:
        res = fit.contrast(L, design.alpha)
        why = res.pop("df_reason")
        reason = np.where(fit.reason == None, why, fit.reason)  # noqa: E711
        n = (count(term, window) if count is not None else
             fit.n_subjects if cube is None else contrast_n(cube, design, term, window))
        frames.append(_result_rows(keys, term, window, res, n, reason))
    return pd.concat(frames, ignore_index=True)


def group_moments(delta: np.ndarray, is_target: np.ndarray):
    """Per group (target, reference): count, mean and sample variance over the subject axis (1)."""
    out = []
    for mask in (is_target, ~is_target):
        d = delta[:, mask]
        n = np.isfinite(d).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.nansum(d, axis=1) / n
            v = np.nansum((d - m[:, None]) ** 2, axis=1) / (n - 1)
        out.append((n, m, v))
    return out


def hedges_g(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """Hedges' g of x − y and its (1 − alpha) normal-approximation CI."""
    g, lo, hi = hedges_g_moments(len(x), x.mean(), x.var(ddof=1), len(y), y.mean(), y.var(ddof=1), alpha)
    return float(g), float(lo), float(hi)


def hedges_g_moments(n1, m1, v1, n2, m2, v2, alpha=0.05, diff=None):
    """Hedges' g from group moments (vectorised); ``diff`` replaces m1 − m2 (e.g. an adjusted one).
    The CI is the large-sample normal one of Hedges & Olkin (1985):
    SE(g) = sqrt((n1+n2)/(n1 n2) + g²/(2 (n1+n2)))."""
    pooled = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    g = (1 - 3 / (4 * (n1 + n2) - 9)) * ((m1 - m2) if diff is None else diff) / pooled
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    z = norm_ppf(1 - alpha / 2)
    return g, g - z * se, g + z * se


def welch_change(edges: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Welch's t-test between groups (target − reference) on each subject's change from baseline, for
    every edge and non-baseline window, with Hedges' g; result rows of term ``group:window``."""
    keys, delta, is_target = change_cube(edges, design)
    (n1, m1, v1), (n2, m2, v2) = group_moments(delta, is_target)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v2 / n2
        se = np.sqrt(a + b)
        est = m1 - m2
        t = est / se
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
        q = t_ppf(1 - design.alpha / 2, df)
        g, g_lo, g_hi = hedges_g_moments(n1, m1, v1, n2, m2, v2, design.alpha)
    ok = (n1 >= 2) & (n2 >= 2)
    cols = {"estimate": est, "se": se, "stat": t, "df": df, "p": 2 * t_sf(np.abs(t), df),
            "ci_low": est - q * se, "ci_high": est + q * se, "effect_size": g,
            "effect_size_ci_low": g_lo, "effect_size_ci_high": g_hi}
    cols = {k: np.where(ok, v, np.nan) for k, v in cols.items()}
    out = long_rows(keys, design.effect_windows, CHANGE_TERM, cols, n=n1 + n2)
    out["effect_size_kind"] = "hedges_g"
    out["reason"] = np.where(ok.T.ravel(), None, "fewer than 2 subjects with data in a group")
    return out
