"""Test plugin ``lmm``: the batched linear mixed model, fitted for every edge at once.

``value ~ group * window (+ covariates) + (1 | subject)`` by REML, with the reference group and
the baseline window as reference levels and covariates centred (see ``fclab.framework.mixed`` for the
algorithm). Missing values are allowed: each edge uses the observations it has. Contrasts, each a
``term`` in tests.parquet:

* ``group:window`` — the group difference (target − reference) in the change from baseline, per
  non-baseline window (the interaction coefficient);
* ``group`` — the group difference within each window, baseline included;
* ``group:trend`` — the group difference in the least-squares linear slope of the change from
  baseline across the non-baseline windows, per window step (``window`` = ``trend``).

Standard errors are the model-based ``σ² (X'V⁻¹X)⁻¹`` of lme4 and lmerTest; degrees of freedom are
Satterthwaite's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from fclab.framework.contracts import Design, PluginParams, StatTest
from fclab.framework.hookspecs import hookimpl
from fclab.framework.mixed import fit_reml
from fclab.framework.stats import edge_cube

Contrast = Literal["group:window", "group", "group:trend"]


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
    """(term, window, L) for every requested contrast over the columns ``names``."""
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


def result_rows(keys: pd.DataFrame, term: str, window: str, res: dict, n, reason) -> pd.DataFrame:
    frame = keys.copy()
    frame["window"] = window
    frame["term"] = term
    for k, v in res.items():
        frame[k] = v
    frame["n"] = n
    frame["reason"] = reason
    return frame


def contrast_table(fit, keys: pd.DataFrame, design: Design, names: list[str], which) -> pd.DataFrame:
    """Result rows of every requested contrast of a batched fit (lmm's or mmrm's); a row without a
    p-value carries the fit's reason or the df's."""
    frames = []
    for term, window, L in contrasts(design, names, which):
        res = fit.contrast(L, design.alpha)
        why = res.pop("df_reason")
        reason = np.where(fit.reason == None, why, fit.reason)  # noqa: E711
        frames.append(result_rows(keys, term, window, res, fit.n_subjects, reason))
    return pd.concat(frames, ignore_index=True)


class Lmm(StatTest):
    terms = ("group:window", "group", "group:trend")
    name = "lmm"
    caveat = ("anti-conservative when windows differ in variance or covariance, as when the baseline is a "
              "separate, shorter run: family-wise error up to 0.11 on realistic null studies (docs/validation.md); "
              "use mmrm for confirmatory tests")

    class Params(PluginParams):
        contrasts: list[Contrast] = ["group:window", "group", "group:trend"]

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        X, names = subject_design(design, self.name)
        keys, y = edge_cube(edges, design)
        return contrast_table(fit_reml(y, X), keys, design, names, self.params.contrasts)

    def describe(self) -> str:
        return ("a linear mixed model fitted to every edge at once (value ~ group × window + (1 | subject), "
                "REML, Satterthwaite degrees of freedom; fclab's batched engine)")


@hookimpl
def register_stat_tests(register):
    register(Lmm)
