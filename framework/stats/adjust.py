"""Multiple-comparison adjustment within each declared family: Holm, Bonferroni and Benjamini–Hochberg."""

from __future__ import annotations

import numpy as np
import scipy  # scipy.stats loads on first use
import pandas as pd


def adjusted_p(p: np.ndarray, method: str) -> np.ndarray:
    """Holm, Bonferroni or Benjamini–Hochberg adjusted p-values (finite ``p`` only).

    Equal to statsmodels' ``multipletests``, which is not used here because every call runs a full
    ``gc.collect()`` (~70 ms), which dominates simulation loops.
    """
    m = len(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "fdr_bh":
        return scipy.stats.false_discovery_control(p, method="bh")
    order = np.argsort(p, kind="stable")  # holm: step-down, monotone
    steps = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(steps, 1.0)
    return out


def adjust(tests: pd.DataFrame, method: str, by=("test", "metric", "term")) -> pd.DataFrame:
    """Adjust p within each family: the rows sharing ``by`` and the confirmatory/exploratory label.

    Rows whose test already adjusted them (permutation max-T, NBS) keep their p_adj and adj_method.
    """
    tests = tests.copy()
    own = tests["adj_method"].notna() if "adj_method" in tests else pd.Series(False, index=tests.index)
    if "p_adj" not in tests:
        tests["p_adj"] = np.nan
    tests["adj_method"] = tests["adj_method"].where(own, method) if "adj_method" in tests else method
    for _, idx in tests[~own].groupby([*by, "family"], sort=False).groups.items():
        p = tests.loc[idx, "p"].to_numpy()
        ok = np.isfinite(p)
        adj = np.full(p.shape, np.nan)
        if ok.any():
            adj[ok] = adjusted_p(p[ok], method)
        tests.loc[idx, "p_adj"] = adj
    return tests
