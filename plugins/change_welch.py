"""Test plugin ``change_welch``: Welch's t-test between groups on the change from baseline.

For every edge and non-baseline window, each subject's change Δ = value(window) − value(baseline)
is compared between groups (target − reference) with Welch's unequal-variance t-test. The effect
size is Hedges' g (pooled-SD standardised difference with the small-sample correction J), with the
large-sample normal CI of Hedges & Olkin (1985): SE(g) = sqrt((n1+n2)/(n1 n2) + g²/(2 (n1+n2))).
A subject missing either window is dropped for that edge and window only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from framework.contracts import Design, StatTest
from framework.hookspecs import hookimpl

TERM = "group:window"


def hedges_g(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """Hedges' g of x − y and its (1 − alpha) normal-approximation CI."""
    n1, n2 = len(x), len(y)
    pooled = np.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / (n1 + n2 - 2))
    g = (1 - 3 / (4 * (n1 + n2) - 9)) * (x.mean() - y.mean()) / pooled
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    z = st.norm.ppf(1 - alpha / 2)
    return float(g), float(g - z * se), float(g + z * se)


class ChangeWelch(StatTest):
    name = "change_welch"

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        ref, target = design.groups
        alpha = design.alpha
        group_of = dict(zip(design.subjects["subject"], design.subjects["group"]))
        wide = edges.pivot(index=["metric", "roi_a", "roi_b", "subject"], columns="window", values="value")
        rows = []
        for (metric, a, b), frame in wide.groupby(level=["metric", "roi_a", "roi_b"], sort=False):
            groups = frame.index.get_level_values("subject").map(group_of)
            for w in design.windows:
                if w == design.baseline_window or w not in frame.columns:
                    continue
                delta = (frame[w] - frame[design.baseline_window]).to_numpy()
                x = delta[(groups == target) & np.isfinite(delta)]
                y = delta[(groups == ref) & np.isfinite(delta)]
                if min(len(x), len(y)) < 2:
                    continue  # too few subjects left for this edge and window
                res = st.ttest_ind(x, y, equal_var=False)
                ci = res.confidence_interval(1 - alpha)
                se = float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)))
                g, g_lo, g_hi = hedges_g(x, y, alpha)
                rows.append({
                    "metric": metric, "roi_a": a, "roi_b": b, "window": w, "term": TERM,
                    "estimate": float(x.mean() - y.mean()), "se": se, "stat": float(res.statistic),
                    "df": float(res.df), "p": float(res.pvalue), "ci_low": float(ci.low), "ci_high": float(ci.high),
                    "n": int(len(x) + len(y)), "effect_size": g, "effect_size_kind": "hedges_g",
                    "effect_size_ci_low": g_lo, "effect_size_ci_high": g_hi,
                })
        return pd.DataFrame(rows)

    def describe(self) -> str:
        return "Welch's t-test on the change from baseline, with Hedges' g"


@hookimpl
def register_stat_tests(register):
    register(ChangeWelch)
