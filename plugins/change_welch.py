"""Test plugin ``change_welch``: Welch's t-test between groups on the change from baseline.

For every edge and non-baseline window, each subject's change Δ = value(window) − value(baseline)
is compared between groups (target − reference) with Welch's unequal-variance t-test, vectorised
over edges and windows. The effect size is Hedges' g (pooled-SD standardised difference with the
small-sample correction J), with the large-sample normal CI of Hedges & Olkin (1985):
SE(g) = sqrt((n1+n2)/(n1 n2) + g²/(2 (n1+n2))). A subject missing either window is dropped for
that edge and window only.
"""

from __future__ import annotations

import pandas as pd

from fclab.api import Design, StatTest, hookimpl, refs, welch_change

class ChangeWelch(StatTest):
    terms = ("group:window",)
    name = "change_welch"
    packed_edges = True
    references = (refs.WELCH, refs.HEDGES_OLKIN)

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        return welch_change(edges, design)

    def describe(self) -> str:
        return "Welch's t-test on the change from baseline (Welch–Satterthwaite degrees of freedom), with Hedges' g"


@hookimpl
def register_stat_tests(register):
    register(ChangeWelch)
