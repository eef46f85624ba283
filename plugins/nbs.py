"""Test plugin ``nbs``: the network-based statistic (Zalesky, Fornito & Bullmore 2010).

The edge statistic is Welch's t of the change from baseline (target − reference), per non-baseline
window. Edges with t above ``threshold`` form one graph and edges with t below −``threshold``
another (the two one-sided contrasts); each connected component is scored by its ``extent``
(number of edges) or ``intensity`` (sum of |t| − threshold over its edges). The same subject-level
relabelings as ``permutation`` give the null distribution of the largest component over every
window and both signs, so ``p_adj`` (adj_method ``nbs``) is the component's FWER-corrected p,
(1 + count) / (1 + n_perm), or count / C when every relabeling is enumerated.

Rows: every edge and window of the metric. An edge in a component gets its component's p in
``p`` and ``p_adj`` and the component score in ``effect_size`` (kind ``nbs_extent`` or
``nbs_intensity``); an edge below the threshold gets no p and a ``reason``. Every row carries the
edge's own estimate, SE and CI of the change-from-baseline difference (Welch's, as ``change_welch``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fclab.api import (Design, PluginParams, StatTest, WelchBatch, capped, block_size, change_cube, hookimpl, long_rows,
                       refs, relabelings, welch_change)

TERM = "group:window"


def components(t: np.ndarray, a: np.ndarray, b: np.ndarray, n_nodes: int, threshold: float, score: str):
    """Label and score supra-threshold components of one edge-statistic vector.

    Returns (component label per edge, −1 when below threshold; score per label).
    """
    labels = np.full(len(t), -1)
    scores = []
    for sign in (1.0, -1.0):
        supra = np.flatnonzero(sign * t > threshold)
        if not len(supra):
            continue
        g = coo_matrix((np.ones(len(supra)), (a[supra], b[supra])), shape=(n_nodes, n_nodes))
        _, node_comp = connected_components(g, directed=False)
        comp = node_comp[a[supra]]
        for c in np.unique(comp):
            members = supra[comp == c]
            labels[members] = len(scores)
            scores.append(len(members) if score == "extent" else float((np.abs(t[members]) - threshold).sum()))
    return labels, np.array(scores, float)


class Nbs(StatTest):
    terms = ("group:window",)
    name = "nbs"
    packed_edges = True
    references = (refs.NBS, refs.WELCH)

    class Params(PluginParams):
        threshold: float = Field(3.0, gt=0)  # primary threshold on |Welch t|
        score: Literal["extent", "intensity"] = "extent"
        n_perm: int = Field(5000, ge=1)
        seed: int = 0

        @field_validator("n_perm")
        @classmethod
        def _cap(cls, v):
            return capped(v, "n_perm")

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:
        design.check(self.name)
        prm = self.params
        frames = []
        all_keys, all_delta, is_target = change_cube(edges, design)
        all_welch = welch_change(edges, design)  # each edge's estimate and CI, as the permutation test gives them
        for metric in dict.fromkeys(all_keys["metric"]):
            sel = (all_keys["metric"] == metric).to_numpy()
            keys, delta = all_keys[sel].reset_index(drop=True), all_delta[sel]
            E, S, W = delta.shape
            nodes = pd.Index(sorted(set(keys["roi_a"]) | set(keys["roi_b"])))
            a, b = nodes.get_indexer(keys["roi_a"]), nodes.get_indexer(keys["roi_b"])
            batch = WelchBatch(delta.transpose(1, 2, 0).reshape(S, W * E))

            def largest(tvec):
                best = 0.0
                for w in range(W):
                    _, sc = components(np.nan_to_num(tvec[w * E:(w + 1) * E]), a, b, len(nodes), prm.threshold,
                                       prm.score)
                    best = max(best, sc.max(initial=0.0))
                return best

            t_obs = batch.t(is_target[None])[0]
            obs = [components(np.nan_to_num(t_obs[w * E:(w + 1) * E]), a, b, len(nodes), prm.threshold, prm.score)
                   for w in range(W)]
            labels, exact = relabelings(is_target, prm.n_perm, prm.seed)
            null = np.empty(len(labels))
            step = block_size(W * E)
            for start in range(0, len(labels), step):
                tb = batch.t(labels[start:start + step])
                null[start:start + len(tb)] = [largest(row) for row in tb]
            P = len(labels)
            pcol, score_col = np.full((E, W), np.nan), np.full((E, W), np.nan)
            for w, (lab, sc) in enumerate(obs):
                inside = lab >= 0
                comp_score = sc[lab[inside]]
                count = (null[None] >= comp_score[:, None] * (1 - 1e-10)).sum(1)
                pcol[inside, w] = count / P if exact else (1 + count) / (1 + P)
                score_col[inside, w] = comp_score
            out = long_rows(keys, design.effect_windows, TERM,
                            {"stat": t_obs.reshape(W, E).T, "p": pcol, "p_adj": pcol, "effect_size": score_col},
                            n=np.isfinite(delta).sum(axis=1))
            welch = all_welch[all_welch["metric"] == metric]
            out = out.merge(welch[["metric", "roi_a", "roi_b", "window", "estimate", "se", "ci_low", "ci_high"]],
                            on=["metric", "roi_a", "roi_b", "window"], how="left", validate="one_to_one")
            out["df"] = float(P)
            out["adj_method"] = "nbs"
            out["effect_size_kind"] = f"nbs_{prm.score}"
            out["reason"] = np.where(np.isfinite(pcol.T.ravel()), None,
                                     f"not in a component above the NBS threshold |t| > {prm.threshold:g}")
            frames.append(out)
        return pd.concat(frames, ignore_index=True)

    def describe(self) -> str:
        p = self.params
        return (f"the network-based statistic on Welch's t of the change from baseline (primary threshold "
                f"|t| > {p.threshold:g}, component {p.score}, {p.n_perm} subject-level relabelings)")


@hookimpl
def register_stat_tests(register):
    register(Nbs)
