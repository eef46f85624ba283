"""Test plugin ``lmm``: the batched linear mixed model, fitted for every edge at once.

``value ~ group * window (+ covariates) + (1 | subject)`` by REML, with the reference group and
the baseline window as reference levels and covariates centred (see ``fclab.framework.stats.lmm`` for the
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

import pandas as pd

from fclab.api import (Contrast, Design, PluginParams, StatTest, contrast_table, edge_cube, fit_reml, hookimpl,
                       refs, subject_design)


class Lmm(StatTest):
    terms = ("group:window", "group", "group:trend")
    name = "lmm"
    packed_edges = True
    references = (refs.SATTERTHWAITE, refs.LMERTEST)
    caveat = ("anti-conservative when windows differ in variance or covariance, as when the baseline is a "
              "separate, shorter run: family-wise error up to 0.11 on realistic null studies (docs/validation.md); "
              "use mmrm for confirmatory tests")

    class Params(PluginParams):
        contrasts: list[Contrast] = ["group:window", "group", "group:trend"]

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        X, names = subject_design(design, self.name)
        keys, y = edge_cube(edges, design)
        return contrast_table(fit_reml(y, X), keys, design, names, self.params.contrasts, y)

    def describe(self) -> str:
        return ("a linear mixed model fitted to every edge at once (value ~ group × window + (1 | subject), "
                "REML, Satterthwaite degrees of freedom; fclab's batched engine)")


@hookimpl
def register_stat_tests(register):
    register(Lmm)
