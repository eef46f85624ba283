"""Test plugin ``change_mannwhitney``: the Mann–Whitney U test between groups on the change from baseline.

For every edge and non-baseline window, Δ = value(window) − value(baseline) is compared between
groups with scipy's two-sided Mann–Whitney U test (exact p without ties for small groups, else the
normal approximation with tie and continuity corrections). ``stat`` is U of the target group.

* ``estimate``: the Hodges–Lehmann shift (median of all target − reference differences), with the
  distribution-free confidence interval of the order statistics of those differences (Bauer 1972),
  whose rank uses the normal approximation to U.
* ``effect_size``: the rank-biserial correlation r = 2U/(n₁n₂) − 1 (positive: target higher), with
  the CI of the R package effectsize: Fisher's z with SE = sqrt((n₁ + n₂ + 1) / (3 n₁ n₂)).

A subject missing either window is dropped for that edge and window only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy  # scipy.stats loads on first use

from fclab.api import Design, StatTest, change_cube, hookimpl, refs

TERM = "group:window"


def rank_biserial(u: float, n1: int, n2: int, alpha: float = 0.05) -> tuple[float, float, float]:
    r = 2 * u / (n1 * n2) - 1
    se = np.sqrt((n1 + n2 + 1) / (3 * n1 * n2))
    z = scipy.stats.norm.ppf(1 - alpha / 2)
    zr = np.arctanh(np.clip(r, -0.9999999, 0.9999999))
    return float(r), float(np.tanh(zr - z * se)), float(np.tanh(zr + z * se))


def hodges_lehmann(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    d = np.sort((x[:, None] - y[None, :]).ravel())
    n1, n2 = len(x), len(y)
    k = int(np.floor(n1 * n2 / 2 - scipy.stats.norm.ppf(1 - alpha / 2) * np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)))
    k = max(k, 0)
    return float(np.median(d)), float(d[k]), float(d[len(d) - 1 - k])


class ChangeMannWhitney(StatTest):
    terms = ("group:window",)
    name = "change_mannwhitney"
    packed_edges = True
    references = (refs.MANN_WHITNEY,)
    caveat = ("conservative under a multiple-comparison correction: exact U p-values are discrete, so Holm's "
              "smallest thresholds fall between attainable values (family-wise error 0.018-0.029 on realistic "
              "null studies, docs/validation.md)")

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        keys, delta, is_target = change_cube(edges, design)
        rows = []
        for e, key in enumerate(keys.to_dict("records")):
            for j, w in enumerate(design.effect_windows):
                d = delta[e, :, j]
                x, y = d[is_target & np.isfinite(d)], d[~is_target & np.isfinite(d)]
                row = {**key, "window": w, "term": TERM, "n": int(len(x) + len(y))}
                if min(len(x), len(y)) < 2:
                    rows.append({**row, "reason": "fewer than 2 subjects with data in a group"})
                    continue
                res = scipy.stats.mannwhitneyu(x, y, alternative="two-sided")
                hl, lo, hi = hodges_lehmann(x, y, design.alpha)
                r, r_lo, r_hi = rank_biserial(float(res.statistic), len(x), len(y), design.alpha)
                rows.append({**row, "estimate": hl, "ci_low": lo, "ci_high": hi, "stat": float(res.statistic),
                             "p": float(res.pvalue), "effect_size": r, "effect_size_kind": "rank_biserial",
                             "effect_size_ci_low": r_lo, "effect_size_ci_high": r_hi, "reason": None})
        return pd.DataFrame(rows)

    def describe(self) -> str:
        return ("the Mann–Whitney U test on the change from baseline, with the Hodges–Lehmann shift and the "
                "rank-biserial correlation")


@hookimpl
def register_stat_tests(register):
    register(ChangeMannWhitney)
