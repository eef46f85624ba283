"""Test plugin ``permutation``: subject-level permutation test with max-statistic FWER control.

The statistic is Welch's t of the change from baseline (target − reference) for every edge and
non-baseline window; it is studentised, so unequal group sizes and variances do not break the
exchangeability argument as they would for a raw mean difference (Janssen 1997). Group labels are
permuted across subjects, each subject's windows moving together. ``p`` is the two-sided
permutation p-value of the edge; ``p_adj`` is the max-|t| FWER-adjusted p over the declared family
(confirmatory or exploratory edges × windows; Westfall & Young 1993), with ``adj_method`` = maxT.
When C(n, n_target) ≤ ``n_perm`` every relabeling is enumerated and p = count / C; otherwise
p = (1 + count) / (1 + n_perm). ``df`` holds the number of relabelings used.

In a crossover design the statistic is the within-subject one of ``change_welch`` (term
``condition:window``): with ``period: adjust`` (the default) Welch's t between the two sequences on
each subject's period difference, with the sequence labels permuted, which is the randomisation the
study did; with ``period: ignore`` the paired t on Δ(target) − Δ(reference), with each subject's
signs flipped together (``adj_method`` maxT-signflip). Exact enumeration as above (2ⁿ sign flips).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from typing import Literal

from pydantic import Field, field_validator

from fclab.api import (Design, PluginParams, StatTest, capped, change_cube, crossover, hookimpl, long_rows,
                       max_t_pvalues, max_t_signflip, refs, welch_change)

TERM = "group:window"


class Permutation(StatTest):
    terms = ("group:window",)
    crossover_terms = (crossover.CONDITION_TERM,)
    name = "permutation"
    packed_edges = True
    designs = ("parallel", "crossover")
    references = (refs.WESTFALL_YOUNG, refs.WELCH, refs.HEDGES_OLKIN)

    class Params(PluginParams):
        n_perm: int = Field(5000, ge=1)
        seed: int = 0
        period: Literal["adjust", "ignore"] = "adjust"

        @field_validator("n_perm")
        @classmethod
        def _cap(cls, v):
            return capped(v, "n_perm")

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        if design.kind == "crossover":
            return self._crossover(edges, design)
        keys, delta, is_target = change_cube(edges, design)
        E, S, W = delta.shape
        data = delta.transpose(1, 2, 0).reshape(S, W * E)  # window-major columns, as long_rows
        codes = self._families(keys, design, W)
        t, p, p_fwer, n_rel, exact = max_t_pvalues(data, is_target, codes, self.params.n_perm, self.params.seed)
        welch = welch_change(edges, design)  # estimate, CI and Hedges' g of the same contrast
        return self._rows(keys, design, TERM, t, p, p_fwer, welch, n_rel, "maxT-exact" if exact else "maxT")

    @staticmethod
    def _families(keys, design: Design, W: int) -> np.ndarray:
        """One max-T family per confirmatory/exploratory label and metric (and window, if declared)."""
        E = len(keys)
        fam = pd.DataFrame({"family": np.tile(design.family(keys["roi_a"], keys["roi_b"]), W),
                            "metric": np.tile(keys["metric"].to_numpy(), W),
                            "window": np.repeat(design.effect_windows, E)})
        by = ["family", "metric"] + (["window"] if "window" in design.family_by else [])
        return fam.groupby(by, sort=False).ngroup().to_numpy()

    def _crossover(self, edges, design: Design) -> pd.DataFrame:
        keys, delta, _, period = crossover.crossover_change(edges, design)
        E, S, _, W = delta.shape
        codes = self._families(keys, design, W)
        rows = crossover.paired_change(edges, design, adjust_period=self.params.period == "adjust")
        if self.params.period == "adjust":
            data = crossover.period_differences(delta, period).transpose(1, 2, 0).reshape(S, W * E)
            t, p, p_fwer, n_rel, exact = max_t_pvalues(data, crossover.target_first(period), codes,
                                                       self.params.n_perm, self.params.seed)
            method = "maxT-exact" if exact else "maxT"
        else:
            data = crossover.within_differences(delta).transpose(1, 2, 0).reshape(S, W * E)
            t, p, p_fwer, n_rel, exact = max_t_signflip(data, codes, self.params.n_perm, self.params.seed)
            method = "maxT-signflip-exact" if exact else "maxT-signflip"
        return self._rows(keys, design, crossover.CONDITION_TERM, t, p, p_fwer, rows, n_rel, method)

    def _rows(self, keys, design, term, t, p, p_fwer, welch, n_rel, method) -> pd.DataFrame:
        W, E = len(design.effect_windows), len(keys)
        out = long_rows(keys, design.effect_windows, term,
                        {"stat": t.reshape(W, E).T, "p": p.reshape(W, E).T, "p_adj": p_fwer.reshape(W, E).T})
        keep = ["estimate", "se", "ci_low", "ci_high", "n", "effect_size", "effect_size_kind",
                "effect_size_ci_low", "effect_size_ci_high", "reason"]
        out = out.merge(welch[["metric", "roi_a", "roi_b", "window", *keep]],
                        on=["metric", "roi_a", "roi_b", "window"], how="left", validate="one_to_one")
        out["df"] = float(n_rel)
        out["adj_method"] = method
        return out

    def describe(self) -> str:
        return (f"a subject-level permutation test of Welch's t on the change from baseline "
                f"({self.params.n_perm} relabelings, or all when fewer exist; max-|t| family-wise error control)")


@hookimpl
def register_stat_tests(register):
    register(Permutation)
