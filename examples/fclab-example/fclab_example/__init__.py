"""An example fclab plugin distribution: everything it needs comes from ``fclab.api``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import stats as st

from fclab.api import (Design, Metric, PluginParams, Scale, StatTest, change_cube, correlation, hedges_g_moments,
                       group_moments, hookimpl, long_rows)

MI_BITS = Scale("mi_bits", "mutual information (bits)", signed=False, low=0.0)


class GaussianCopulaMI(Metric):
    """Mutual information of each ROI pair under a Gaussian copula: each signal is replaced by the
    normal quantiles of its ranks, and I = −½ log2(1 − r²) for their correlation r (Ince et al. 2017,
    Hum Brain Mapp 38:1541). Rank-based, so unchanged by any increasing transform of a signal."""

    name = "gc_mi"
    scale = "mi_bits"
    scales = (MI_BITS,)
    affine_invariant = True

    def problem(self, n_volumes: int, tr: float) -> str | None:
        return None if n_volumes >= 4 else "gc_mi needs at least 4 volumes"

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        n = ts.shape[-2]
        copula = st.norm.ppf(st.rankdata(ts, axis=-2) / (n + 1))
        r = np.clip(correlation(copula), -1 + 1e-9, 1 - 1e-9)  # identical rank orders: finite, ~14.4 bits
        with np.errstate(divide="ignore", invalid="ignore"):
            mi = -0.5 * np.log2(1.0 - r**2)
        return mi

    def describe(self) -> str:
        return "Gaussian-copula mutual information in bits (Ince et al. 2017)"


class BootstrapDiff(StatTest):
    """The group difference (target − reference) in the change from baseline, per edge and window,
    with a percentile bootstrap interval (subjects resampled within each group) and Hedges' g. It
    gives no p-value: an interval-only test."""

    name = "bootstrap_diff"
    terms = ("group:window",)

    class Params(PluginParams):
        n_boot: int = Field(2000, ge=100)
        seed: int = 0

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        keys, delta, is_target = change_cube(edges, design)  # (edges, subjects, windows)
        (n1, m1, v1), (n2, m2, v2) = group_moments(delta, is_target)
        rng = np.random.default_rng(self.params.seed)
        tgt, ref = np.flatnonzero(is_target), np.flatnonzero(~is_target)
        boot = np.empty((self.params.n_boot,) + delta.shape[::2])
        for b in range(self.params.n_boot):
            t = delta[:, rng.choice(tgt, tgt.size)]
            r = delta[:, rng.choice(ref, ref.size)]
            with np.errstate(invalid="ignore"):
                boot[b] = np.nanmean(t, axis=1) - np.nanmean(r, axis=1)
        q = [100 * design.alpha / 2, 100 * (1 - design.alpha / 2)]
        with np.errstate(invalid="ignore", divide="ignore"):
            lo, hi = np.nanpercentile(boot, q, axis=0)
            g, g_lo, g_hi = hedges_g_moments(n1, m1, v1, n2, m2, v2, design.alpha)
        est = m1 - m2
        ok = (n1 >= 2) & (n2 >= 2)
        cols = {"estimate": est, "se": np.nanstd(boot, axis=0, ddof=1), "ci_low": np.minimum(lo, est),
                "ci_high": np.maximum(hi, est), "effect_size": g, "effect_size_ci_low": g_lo,
                "effect_size_ci_high": g_hi}
        cols = {k: np.where(ok, v, np.nan) for k, v in cols.items()}
        out = long_rows(keys, design.effect_windows, "group:window", cols, n=n1 + n2)
        out["effect_size_kind"] = "hedges_g"
        out["reason"] = np.where(ok.T.ravel(), None, "fewer than 2 subjects with data in a group")
        return out

    def describe(self) -> str:
        return f"a percentile bootstrap of the group difference in change ({self.params.n_boot} resamples)"


@hookimpl
def register_metrics(register):
    register(GaussianCopulaMI)


@hookimpl
def register_stat_tests(register):
    register(BootstrapDiff)
