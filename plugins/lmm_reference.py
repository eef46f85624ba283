"""Test plugin ``lmm_reference``: the same model as ``lmm``, one statsmodels MixedLM fit per edge.

It exists to check the batched engine and is slow (tens of milliseconds per edge). The design
matrix and contrasts are those of ``lmm``. Estimates and standard errors are statsmodels' own: its
``cov_params`` comes from the observed information of the joint (fixed, variance) parameters, which
on unbalanced data differs slightly (~1e-4 relative) from the model-based ``σ² (X'V⁻¹X)⁻¹`` that
``lmm`` reports. Degrees of freedom are not Satterthwaite's: within-subject contrasts get the
between-within df (N − subjects − within-subject effects), the group contrast within a window the
between-subject df (subjects − between-subject effects).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy  # scipy.stats loads on first use

from fclab.api import Contrast, Design, PluginParams, StatTest, contrasts, edge_cube, hookimpl, subject_design


def fit_mixedlm(y: np.ndarray, X: np.ndarray, subjects: np.ndarray, reml: bool = True):
    """One statsmodels MixedLM fit, tightly converged; a boundary subject variance is legitimate."""
    from statsmodels.regression.mixed_linear_model import MixedLM  # here: statsmodels takes ~0.5 s to import
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, SingularMatrixWarning

    model = MixedLM(y, X, groups=subjects)
    with warnings.catch_warnings():
        for w in (ConvergenceWarning, RuntimeWarning, SingularMatrixWarning):
            warnings.simplefilter("ignore", w)
        try:
            return model.fit(reml=reml, method="bfgs", gtol=1e-10)
        except np.linalg.LinAlgError:  # the gradient optimiser can step onto a singular point
            return model.fit(reml=reml, method="powell")


class LmmReference(StatTest):
    terms = ("group:window", "group", "group:trend")
    name = "lmm_reference"
    packed_edges = True

    class Params(PluginParams):
        contrasts: list[Contrast] = ["group:window", "group", "group:trend"]
        reml: bool = True

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        X, names = subject_design(design, self.name)
        keys, y = edge_cube(edges, design)
        todo = contrasts(design, names, self.params.contrasts)
        between = {"intercept", "group"} | {n for n in names if not n.startswith(("window[", "group:window["))}
        is_within = {term: term != "group" for term, _, _ in todo}
        subj = np.broadcast_to(np.arange(X.shape[0])[:, None], X.shape[:2])
        rows = []
        for e in range(len(keys)):
            keep = np.isfinite(y[e])
            Xe = X[keep]
            used = np.abs(Xe).sum(axis=0) > 0
            n_sub = int(keep.any(axis=1).sum())
            ok = n_sub >= 2 and np.linalg.matrix_rank(Xe) == used.sum() == X.shape[-1] and keep.sum() > X.shape[-1]
            res = fit_mixedlm(y[e][keep], Xe, subj[keep], self.params.reml) if ok else None
            if res is not None:
                beta, cov = np.asarray(res.fe_params), np.asarray(res.cov_params())[: len(names), : len(names)]
            df_within = keep.sum() - n_sub - (len(names) - len(between))
            df_between = n_sub - len(between)
            for term, window, L in todo:
                row = {**keys.iloc[e].to_dict(), "window": window, "term": term, "n": n_sub}
                if res is None:
                    rows.append({**row, "reason": "fixed effects not estimable from the observations present"})
                    continue
                est, se = float(L @ beta), float(np.sqrt(L @ cov @ L))
                df = float(df_within if is_within[term] else df_between)
                t = est / se
                q = scipy.stats.t.ppf(1 - design.alpha / 2, df)
                rows.append({**row, "estimate": est, "se": se, "stat": t, "df": df,
                             "p": float(2 * scipy.stats.t.sf(abs(t), df)), "ci_low": est - q * se, "ci_high": est + q * se,
                             "reason": None})
        return pd.DataFrame(rows)

    def describe(self) -> str:
        return ("a linear mixed model per edge (statsmodels MixedLM, value ~ group × window + (1 | subject), "
                f"{'REML' if self.params.reml else 'ML'}, between-within degrees of freedom)")


@hookimpl
def register_stat_tests(register):
    register(LmmReference)
