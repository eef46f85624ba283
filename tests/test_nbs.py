"""The network-based statistic on simulated connectomes: a planted sub-network is found; null data stay below α."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as st

from fclab.framework.pluginhost.contracts import Design
from fclab.plugins.nbs import Nbs, components

WINDOWS = ("baseline", "w1", "w2")


def connectome(seed, n_rois=12, n_ref=14, n_target=12, planted=(0, 1, 2, 3, 4), shift=2.0):
    """Edge values with subject effects; target subjects' w1 values drop on every planted-node edge."""
    rng = np.random.default_rng(seed)
    rois = [f"R{i:02d}" for i in range(n_rois)]
    pairs = list(itertools.combinations(range(n_rois), 2))
    subjects = pd.DataFrame({"subject": [f"s{i:02d}" for i in range(n_ref + n_target)],
                             "group": ["ref"] * n_ref + ["target"] * n_target})
    S, E, W = len(subjects), len(pairs), len(WINDOWS)
    values = rng.normal(0, 0.5, (S, E, 1)) + rng.normal(0, 1.0, (S, E, W))
    inside = np.array([a in planted and b in planted for a, b in pairs])
    target = (subjects["group"] == "target").to_numpy()
    values[np.ix_(target, inside, [1])] -= shift
    idx = np.array(list(itertools.product(range(S), range(E), range(W))))
    edges = pd.DataFrame({
        "subject": subjects["subject"].to_numpy()[idx[:, 0]], "group": subjects["group"].to_numpy()[idx[:, 0]],
        "window": np.array(WINDOWS)[idx[:, 2]], "metric": "pearson",
        "roi_a": [rois[pairs[e][0]] for e in idx[:, 1]], "roi_b": [rois[pairs[e][1]] for e in idx[:, 1]],
        "value": values[idx[:, 0], idx[:, 1], idx[:, 2]],
    })
    planted_pairs = {(rois[a], rois[b]) for (a, b), x in zip(pairs, inside) if x}
    return edges, Design(("ref", "target"), "baseline", WINDOWS, subjects), planted_pairs


def test_components_extent_and_intensity_by_hand():
    t = np.array([4.0, 3.5, -5.0, 1.0, 3.2])
    a, b = np.array([0, 1, 3, 0, 5]), np.array([1, 2, 4, 2, 6])
    labels, extent = components(t, a, b, 7, 3.0, "extent")
    assert labels[3] == -1 and labels[0] == labels[1] != labels[2] != labels[4]
    assert sorted(extent) == [1, 1, 2]
    _, intensity = components(t, a, b, 7, 3.0, "intensity")
    np.testing.assert_allclose(sorted(intensity), [0.2, 1.5, 2.0])


def test_planted_subnetwork_is_found():
    edges, design, planted = connectome(0)
    out = Nbs(Nbs.Params(threshold=2.5, n_perm=500, seed=1)).run(edges, design)
    hit = out[(out["p_adj"] < 0.05)]
    assert set(hit["window"]) == {"w1"}
    found = set(zip(hit["roi_a"], hit["roi_b"]))
    assert len(found & planted) >= 0.8 * len(planted)  # most planted edges
    assert len(found - planted) <= 2  # and little else
    assert (hit["effect_size_kind"] == "nbs_extent").all()
    assert out.loc[out["p"].isna(), "reason"].str.contains("threshold").all()


def test_null_connectomes_stay_below_alpha():
    rejections = 0
    n_sims = 60
    for seed in range(n_sims):
        edges, design, _ = connectome(100 + seed, n_rois=8, shift=0.0)
        out = Nbs(Nbs.Params(threshold=2.5, n_perm=100, seed=seed)).run(edges, design)
        rejections += bool((out["p_adj"] < 0.05).any())
    # FWER 0.05: the one-sided binomial p of seeing this many rejections must not be small.
    assert st.binomtest(rejections, n_sims, 0.05, alternative="greater").pvalue > 0.01, rejections
