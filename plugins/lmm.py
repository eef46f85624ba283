"""Test plugin ``lmm``: a linear mixed model per edge with statsmodels MixedLM.

``value ~ group * window + (1 | subject)``, fitted by REML, with the reference group and the
baseline window as the reference levels. It reports the group × window interaction for every
non-baseline window: the difference between groups (target − reference) in the change from
baseline.

Degrees of freedom use the between-within method: a term that varies within subjects (window and
group × window) gets N_obs − N_subjects − (number of within-subject fixed effects). For a random
intercept model on complete, balanced data this equals the exact F-test denominator df; the batched
engine with Satterthwaite df is a later addition.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as st
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.tools.sm_exceptions import ConvergenceWarning, SingularMatrixWarning

from framework.contracts import Design, PluginParams, StatTest
from framework.hookspecs import hookimpl

TERM = "group:window"


def design_matrix(frame: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Treatment-coded fixed effects with readable column names."""
    target = design.groups[1]
    windows = [w for w in design.windows if w != design.baseline_window]
    X = pd.DataFrame({"intercept": 1.0, "group": (frame["group"] == target).astype(float)}, index=frame.index)
    for w in windows:
        X[f"window[{w}]"] = (frame["window"] == w).astype(float)
    for w in windows:
        X[f"group:window[{w}]"] = X["group"] * X[f"window[{w}]"]
    return X


class Lmm(StatTest):
    name = "lmm"

    class Params(PluginParams):
        reml: bool = True

    def fit_edge(self, frame: pd.DataFrame, design: Design):
        frame = frame.dropna(subset=["value"])
        X = design_matrix(frame, design)
        X = X.loc[:, X.any(axis=0)]  # a window no subject has is dropped
        model = MixedLM(frame["value"].to_numpy(), X, groups=frame["subject"].to_numpy())
        with warnings.catch_warnings():
            # A subject variance at the boundary (zero) is a legitimate REML answer, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", SingularMatrixWarning)
            try:
                result = model.fit(reml=self.params.reml)
            except np.linalg.LinAlgError:  # the gradient optimiser can step onto a singular point
                result = model.fit(reml=self.params.reml, method="powell")
        n_sub = frame["subject"].nunique()
        n_within = sum(c.startswith(("window[", "group:window[")) for c in X.columns)
        return result, X.columns, len(frame) - n_sub - n_within, n_sub

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        rows = []
        for (metric, a, b), frame in edges.groupby(["metric", "roi_a", "roi_b"], sort=False):
            result, columns, df, n_sub = self.fit_edge(frame, design)
            params = pd.Series(np.asarray(result.fe_params), index=columns)
            bse = pd.Series(np.asarray(result.bse_fe), index=columns)
            q = st.t.ppf(1 - design.alpha / 2, df)
            for w in design.windows:
                col = f"group:window[{w}]"
                if w == design.baseline_window or col not in params:
                    continue
                est, se = float(params[col]), float(bse[col])
                t = est / se if se > 0 else np.nan
                rows.append({
                    "metric": metric, "roi_a": a, "roi_b": b, "window": w, "term": TERM,
                    "estimate": est, "se": se, "stat": t, "df": float(df),
                    "p": float(2 * st.t.sf(abs(t), df)), "ci_low": est - q * se, "ci_high": est + q * se,
                    "n": n_sub,
                })
        return pd.DataFrame(rows)

    def describe(self) -> str:
        return ("a linear mixed model per edge (statsmodels MixedLM, value ~ group × window + (1 | subject), "
                f"{'REML' if self.params.reml else 'ML'}, between-within degrees of freedom)")


@hookimpl
def register_stat_tests(register):
    register(Lmm)
