"""Test plugin ``ancova``: Δ ~ group + baseline (+ covariates), ordinary least squares per edge and window.

For every edge and non-baseline window, the change from baseline is regressed on group (target = 1),
the subject's baseline value of that edge (centred) and any covariates (centred). ``estimate`` is
the baseline-adjusted group difference, with its t statistic on n − p df. The normal equations of
all edges and windows are solved in one batch; a subject missing either window is dropped for that
edge and window only.

``effect_size`` is Hedges' g of the adjusted difference: it divided by the unadjusted pooled SD of Δ
and multiplied by J, with the Hedges & Olkin normal CI (the What Works Clearinghouse convention).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy  # scipy.stats loads on first use

from fclab.api import (Design, StatTest, change_cube, edge_cube, group_moments, hedges_g_moments, hookimpl, long_rows,
                       refs)

TERM = "group:window"


class Ancova(StatTest):
    terms = ("group:window",)
    name = "ancova"
    packed_edges = True
    references = (refs.ANCOVA, refs.HEDGES_OLKIN)

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        keys, delta, is_target = change_cube(edges, design)
        _, cube = edge_cube(edges, design)
        base = cube[:, :, design.windows.index(design.baseline_window)]  # (E, S)
        cov, _ = design.covariate_matrix(self.name)
        E, S, W = delta.shape
        ok = np.isfinite(delta) & np.isfinite(base)[:, :, None]  # (E, S, W)
        yv = np.where(ok, delta, 0.0).transpose(0, 2, 1)  # (E, W, S)
        m = ok.transpose(0, 2, 1).astype(float)
        n = m.sum(axis=2)
        b = np.where(ok, base[:, :, None], 0.0).transpose(0, 2, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.where(m > 0, b - (b * m).sum(axis=2, keepdims=True) / n[..., None], 0.0)  # centred
        X = np.concatenate([
            m[..., None], (m * is_target)[..., None], b[..., None],
            m[..., None] * cov[None, None] if cov.shape[1] else np.zeros((E, W, S, 0)),
        ], axis=3)  # (E, W, S, p), zero rows where missing
        p = X.shape[3]
        XtX = np.einsum("ewsp,ewsq->ewpq", X, X)
        Xty = np.einsum("ewsp,ews->ewp", X, yv)
        df = n - p
        fit = (df > 0) & (np.linalg.matrix_rank(XtX) == p) & ((m * is_target).sum(2) >= 2) \
            & ((m * ~is_target).sum(2) >= 2)
        XtX = np.where(fit[..., None, None], XtX, np.eye(p))
        inv = np.linalg.inv(XtX)
        beta = np.einsum("ewpq,ewq->ewp", inv, Xty)
        resid = yv - np.einsum("ewsp,ewp->ews", X, beta)
        with np.errstate(invalid="ignore", divide="ignore"):
            s2 = (resid**2 * m).sum(axis=2) / df
            est, se = beta[..., 1], np.sqrt(s2 * inv[..., 1, 1])
            t = est / se
            q = scipy.stats.t.ppf(1 - design.alpha / 2, df)
            (n1, m1, v1), (n2, m2, v2) = group_moments(np.where(ok, delta, np.nan), is_target)
            g, g_lo, g_hi = hedges_g_moments(n1, m1, v1, n2, m2, v2, design.alpha, diff=est)
        cols = {"estimate": est, "se": se, "stat": t, "df": df.astype(float), "p": 2 * scipy.stats.t.sf(np.abs(t), df),
                "ci_low": est - q * se, "ci_high": est + q * se, "effect_size": g,
                "effect_size_ci_low": g_lo, "effect_size_ci_high": g_hi}
        cols = {k: np.where(fit, v, np.nan) for k, v in cols.items()}
        out = long_rows(keys, design.effect_windows, TERM, cols, n=n.astype(int))
        out["effect_size_kind"] = "hedges_g"
        out["reason"] = np.where(fit.T.ravel(), None, "too few subjects with data, or a singular design")
        return out

    def describe(self) -> str:
        return ("ANCOVA of the change from baseline on group, adjusting for the baseline value (OLS, residual "
                "degrees of freedom)")


@hookimpl
def register_stat_tests(register):
    register(Ancova)
