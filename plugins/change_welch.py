"""Test plugin ``change_welch``: Welch's t-test between groups on the change from baseline.

For every edge and non-baseline window, each subject's change Δ = value(window) − value(baseline)
is compared between groups (target − reference) with Welch's unequal-variance t-test, vectorised
over edges and windows. The effect size is Hedges' g (pooled-SD standardised difference with the
small-sample correction J), with the large-sample normal CI of Hedges & Olkin (1985):
SE(g) = sqrt((n1+n2)/(n1 n2) + g²/(2 (n1+n2))). A subject missing either window is dropped for
that edge and window only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from fclab.framework.contracts import Design, StatTest
from fclab.framework.hookspecs import hookimpl
from fclab.framework.stats import change_cube, long_rows

TERM = "group:window"


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
    """Hedges' g from group moments (vectorised); ``diff`` replaces m1 − m2 (e.g. an adjusted one)."""
    pooled = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    g = (1 - 3 / (4 * (n1 + n2) - 9)) * ((m1 - m2) if diff is None else diff) / pooled
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    z = st.norm.ppf(1 - alpha / 2)
    return g, g - z * se, g + z * se


class ChangeWelch(StatTest):
    terms = ("group:window",)
    name = "change_welch"

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        keys, delta, is_target = change_cube(edges, design)
        (n1, m1, v1), (n2, m2, v2) = group_moments(delta, is_target)
        with np.errstate(invalid="ignore", divide="ignore"):
            a, b = v1 / n1, v2 / n2
            se = np.sqrt(a + b)
            est = m1 - m2
            t = est / se
            df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
            q = st.t.ppf(1 - design.alpha / 2, df)
            g, g_lo, g_hi = hedges_g_moments(n1, m1, v1, n2, m2, v2, design.alpha)
        ok = (n1 >= 2) & (n2 >= 2)
        cols = {"estimate": est, "se": se, "stat": t, "df": df, "p": 2 * st.t.sf(np.abs(t), df),
                "ci_low": est - q * se, "ci_high": est + q * se, "effect_size": g,
                "effect_size_ci_low": g_lo, "effect_size_ci_high": g_hi}
        cols = {k: np.where(ok, v, np.nan) for k, v in cols.items()}
        out = long_rows(keys, design.effect_windows, TERM, cols, n=n1 + n2)
        out["effect_size_kind"] = "hedges_g"
        out["reason"] = np.where(ok.T.ravel(), None, "fewer than 2 subjects with data in a group")
        return out

    def describe(self) -> str:
        return "Welch's t-test on the change from baseline, with Hedges' g"


@hookimpl
def register_stat_tests(register):
    register(ChangeWelch)
