"""Test plugin ``change_welch``: Welch's t-test between groups on the change from baseline.

For every edge and non-baseline window, each subject's change Δ = value(window) − value(baseline)
is compared between groups (target − reference) with Welch's unequal-variance t-test, vectorised
over edges and windows. The effect size is Hedges' g (pooled-SD standardised difference with the
small-sample correction J), with the large-sample normal CI of Hedges & Olkin (1985):
SE(g) = sqrt((n1+n2)/(n1 n2) + g²/(2 (n1+n2))). A subject missing either window is dropped for
that edge and window only.

In a crossover design (``stats.design: crossover``) the test is its within-subject counterpart
(``fclab.framework.stats.crossover.paired_change``), term ``condition:window``: with ``period:
adjust`` (the default) the two-period crossover t of Hills & Armitage (1979), Welch's t between the
two sequences on each subject's period difference, halved, which a period effect does not bias;
with ``period: ignore`` the paired t on Δ(target) − Δ(reference). Effect size: Cohen's d_z.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from fclab.api import Design, PluginParams, StatTest, crossover, hookimpl, refs, welch_change


class ChangeWelch(StatTest):
    terms = ("group:window",)
    crossover_terms = (crossover.CONDITION_TERM,)
    name = "change_welch"
    packed_edges = True
    designs = ("parallel", "crossover")
    references = (refs.WELCH, refs.HEDGES_OLKIN)

    class Params(PluginParams):
        period: Literal["adjust", "ignore"] = "adjust"

    def caveat_for(self, n_per_group: dict[str, int]) -> str | None:
        """Welch–Satterthwaite p-values are liberal in the tail when a small group meets a much larger
        one (the df are estimated from the small group's variance): on normal data with equal variances,
        at 6 vs 20 subjects the rate at α = 0.002 is 1.8× nominal and at 4 vs 22 3.7×, so Holm- and
        Bonferroni-adjusted family-wise error rises above α (docs/validation.md); at 8 vs 18 1.2×, at
        10 vs 16 and 12 vs 14 none."""
        small, large = min(n_per_group.values()), max(n_per_group.values())
        if small >= 10 or large < 2 * small:
            return None
        return (f"liberal with unequal groups as small as these ({small} vs {large} subjects): Welch's p-values "
                "are too small in the tail that a multiple-comparison correction uses (at 6 vs 20, 1.8 times "
                "the nominal rate at α = 0.002), so its adjusted family-wise error exceeds α (0.07–0.08 on "
                "realistic null studies at 6 vs 20, docs/validation.md); use mmrm or permutation")

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        if design.kind == "crossover":
            return crossover.paired_change(edges, design, adjust_period=self.params.period == "adjust")
        return welch_change(edges, design)

    def describe(self) -> str:
        return "Welch's t-test on the change from baseline (Welch–Satterthwaite degrees of freedom), with Hedges' g"


@hookimpl
def register_stat_tests(register):
    register(ChangeWelch)
