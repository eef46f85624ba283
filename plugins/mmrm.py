"""Test plugin ``mmrm``: a mixed model for repeated measures, fitted to every edge at once.

The standard analysis of change from baseline over repeated visits in clinical trials, with a
within-subject covariance across windows instead of a random intercept (see ``fclab.framework.stats.mmrm``
for the algorithm). Two variants answer two questions:

* ``baseline: covariate`` (the default for a parallel design; the ANCOVA-style MMRM) — the response is the change from
  baseline in each non-baseline window, ``Δ ~ window + group:window + baseline:window
  (+ covariates)``, with the subject's baseline value of the edge centred. ``group:window`` is the
  group difference in change at that window for subjects with the same baseline: a chance
  baseline imbalance between the groups, and the regression to the mean that follows it, does
  not leak into it. A subject without a baseline value for an edge does not enter that edge.
  This is the variant regulators recommend for randomised comparisons (EMA 2015, Guideline on
  adjustment for baseline covariates).
* ``baseline: response`` — every window, baseline included, is a response:
  ``value ~ group * window (+ covariates)``. ``group:window`` is the difference in mean change from
  baseline (unadjusted), and ``group`` the difference within each window, baseline included. A
  subject missing its baseline still contributes its other windows.
* ``baseline: change`` — the change from baseline, unadjusted: ``Δ ~ window + group:window``; the
  default for a crossover design (``stats.design: crossover``, fclab.framework.stats.crossover),
  whose terms are ``condition:window`` and ``condition:trend``.

Terms: ``group:window`` per non-baseline window, ``group`` (``response`` only) and
``group:trend``, the group difference in the least-squares slope across the non-baseline windows.
Covariance: ``us`` (unstructured, default), ``csh``, ``cs`` or ``ar1`` over the window order.
Degrees of freedom are Satterthwaite's from the exact REML Hessian, which is also Kenward–Roger's df
for a one-df contrast. Standard errors are from Kenward–Roger's bias-corrected covariance Φ_A
(``df: kenward-roger``, the default; ``kenward-roger-linear`` without the second-derivative term, the
same for ``us`` and ``cs``), or the model-based ``(X'V̂⁻¹X)⁻¹`` (``df: satterthwaite``), which is
liberal when windows are missing (docs/validation.md). A row without a p-value has a ``reason``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from fclab.api import (Design, PluginParams, StatTest, contrast_table, crossover, edge_cube, fit_mmrm, hookimpl,
                       refs, subject_design)

Contrast = Literal["group:window", "group", "group:trend", "condition:window", "condition:trend"]


def covariate_design(design: Design, base: np.ndarray, test: str) -> tuple[np.ndarray, list[str]]:
    """Per-edge designs (E, S, K', p) of the baseline-as-covariate model over the effect windows.

    Columns: one mean per window, the group difference per window, the centred baseline value per
    window, then the subject covariates. NaN baseline values make the subject's rows missing.
    """
    target = design.groups[1]
    g = (design.subjects["group"] == target).to_numpy(float)
    cov, cov_names = design.covariate_matrix(test)
    eff = design.effect_windows
    E, S = base.shape
    K = len(eff)
    ok = np.isfinite(base)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = base - np.where(ok, base, 0.0).sum(axis=1, keepdims=True) / ok.sum(axis=1, keepdims=True)
    eye = np.eye(K)
    parts = [np.broadcast_to(eye[None, None], (E, S, K, K)),
             np.broadcast_to((g[:, None, None] * eye[None])[None], (E, S, K, K)),
             centred[:, :, None, None] * eye[None, None],
             np.broadcast_to(cov[None, :, None, :], (E, S, K, cov.shape[1]))]
    names = [*[f"window[{w}]" for w in eff], *[f"group:window[{w}]" for w in eff],
             *[f"baseline:window[{w}]" for w in eff], *cov_names]
    return np.concatenate(parts, axis=3), names


def change_design(design: Design, test: str) -> tuple[np.ndarray, list[str]]:
    """The unadjusted change model over the effect windows (S, K', p): a mean and a group difference
    (target − reference) of the change from baseline per window, then the subject covariates."""
    g = (design.subjects["group"] == design.groups[1]).to_numpy(float)
    cov, cov_names = design.covariate_matrix(test)
    eff = design.effect_windows
    S, eye = len(g), np.eye(len(eff))
    parts = [np.broadcast_to(eye[None], (S, len(eff), len(eff))), g[:, None, None] * eye[None],
             np.broadcast_to(cov[:, None, :], (S, len(eff), cov.shape[1]))]
    names = [*[f"window[{w}]" for w in eff], *[f"group:window[{w}]" for w in eff], *cov_names]
    return np.concatenate(parts, axis=2), names


class Mmrm(StatTest):
    terms = ("group:window", "group", "group:trend")
    crossover_terms = crossover.TERMS
    name = "mmrm"
    packed_edges = True
    designs = ("parallel", "crossover")
    references = (refs.MMRM, refs.SATTERTHWAITE)

    class Params(PluginParams):
        baseline: Literal["covariate", "change", "response"] | None = None
        covariance: Literal["us", "csh", "cs", "ar1"] = "us"
        contrasts: list[Contrast] | None = None
        df: Literal["satterthwaite", "kenward-roger", "kenward-roger-linear"] = "kenward-roger"
        period: Literal["covariate", "window"] = "covariate"
        crossover: Literal["difference", "slots"] = "difference"

    def __init__(self, params=None):
        super().__init__(params)
        self.references = (refs.MMRM, refs.SATTERTHWAITE) + (
            (refs.KENWARD_ROGER,) if self.params.df != "satterthwaite" else ())

    def baseline(self, design: Design) -> str:
        """``baseline``, or the design's default: ``covariate`` for a parallel design, ``change`` for a
        crossover, where the baselines' difference as a covariate rejected 7.3 % of null single cells
        once 7.5 % of cells were missing (docs/validation.md, "Crossover designs")."""
        return self.params.baseline or ("change" if design.kind == "crossover" else "covariate")

    def _which(self, design: Design) -> list[str]:
        """The requested contrasts (default: every term of the design and baseline model), each checked
        against them with a one-line error."""
        from fclab.api import DataError

        if design.kind == "crossover":
            offered = list(crossover.TERMS)
        else:
            offered = ["group:window", "group:trend"] + (["group"] if self.baseline(design) == "response" else [])
        if self.params.contrasts is None:
            return offered
        for c in self.params.contrasts:
            if c not in offered:
                raise DataError(f"stats.tests: {self.name}: contrast {c!r} is not a term of this "
                                f"{design.kind} design with baseline: {self.baseline(design)} ({', '.join(offered)})")
        return list(self.params.contrasts)

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        which = self._which(design)
        if design.kind == "crossover":
            return self._crossover(edges, design, which)
        keys, cube = edge_cube(edges, design)
        baseline = self.baseline(design)
        if baseline in ("covariate", "change"):
            k = design.windows.index(design.baseline_window)
            others = [i for i in range(len(design.windows)) if i != k]
            base = cube[:, :, k]
            y = cube[:, :, others] - base[:, :, None]
            X, names = (covariate_design(design, base, self.name) if baseline == "covariate"
                        else change_design(design, self.name))
        else:
            y = cube
            X, names = subject_design(design, self.name)
        fit = fit_mmrm(y, X, self.params.covariance, df=self.params.df)
        return contrast_table(fit, keys, design, names, which, cube)

    def _crossover(self, edges, design: Design, which) -> pd.DataFrame:
        """The within-subject MMRM over condition × window slots (fclab.framework.stats.crossover)."""
        from fclab.api import DataError

        if self.baseline(design) == "response":
            raise DataError(f"stats.tests: {self.name}: baseline: response is not offered for a crossover design "
                            "(use covariate or change: the change from each session's baseline)")
        if self.params.covariance == "ar1":
            raise DataError(f"stats.tests: {self.name}: covariance ar1 orders the windows in time, which the "
                            "condition × window slots of a crossover design are not (use us, csh or cs)")
        keys, delta, base, period = crossover.crossover_change(edges, design)
        E, S = delta.shape[:2]
        base = base if self.baseline(design) == "covariate" else None
        if self.params.crossover == "difference":
            y = crossover.within_differences(delta)
            X, names = crossover.difference_model(design, period, base, self.name, self.params.period)
        else:
            y = delta.reshape(E, S, -1)  # slots: the reference condition's windows, then the target's
            X, names = crossover.crossover_model(design, period, base, self.name, self.params.period)
        fit = fit_mmrm(y, X, self.params.covariance, df=self.params.df)
        terms = crossover.crossover_contrasts(design, names, which)
        return contrast_table(fit, keys, design, names, which, terms=terms,
                              count=lambda term, window: crossover.crossover_n(delta, design, term, window))

    def describe(self) -> str:
        cov = {"us": "unstructured", "csh": "heterogeneous compound-symmetry", "cs": "compound-symmetry",
               "ar1": "AR(1)"}[self.params.covariance]
        model = {"covariate": "the change from baseline ~ window + group:window + baseline:window",
                 "change": "the change from baseline ~ window + group:window",
                 "response": "value ~ group × window"}[self.params.baseline or "covariate"]
        inference = {"satterthwaite": "Satterthwaite degrees of freedom from the exact REML Hessian",
                     "kenward-roger": "Kenward–Roger standard errors and degrees of freedom",
                     "kenward-roger-linear": "first-order Kenward–Roger standard errors and degrees of freedom"
                     }[self.params.df]
        return (f"a mixed model for repeated measures fitted to every edge at once ({model}, "
                f"{cov} within-subject covariance across windows, REML, {inference}; fclab's batched engine)")


@hookimpl
def register_stat_tests(register):
    register(Mmrm)
