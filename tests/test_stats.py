"""Test plugins and p-value adjustment against independent references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import special, stats as st

from fclab.framework.pluginhost.contracts import Design
from fclab.framework.stats.adjust import adjust
from fclab.plugins.ancova import Ancova
from fclab.plugins.change_mannwhitney import ChangeMannWhitney
from fclab.api import hedges_g
from fclab.plugins.change_welch import ChangeWelch
from fclab.plugins.permutation import Permutation

WINDOWS = ("baseline", "w1", "w2", "w3")


def random_edges(seed: int, n_ref=7, n_target=6, drop: int = 0) -> tuple[pd.DataFrame, Design]:
    rng = np.random.default_rng(seed)
    subjects = [f"{i:02d}" for i in range(n_ref + n_target)]
    groups = ["ref"] * n_ref + ["target"] * n_target
    rows = []
    for s, g in zip(subjects, groups):
        u = rng.normal(0, 0.3)
        for k, w in enumerate(WINDOWS):
            shift = -0.4 if (g == "target" and w == "w2") else 0.0
            rows.append({"subject": s, "group": g, "window": w, "metric": "pearson", "roi_a": "A", "roi_b": "B",
                         "value": 0.5 + 0.05 * k + u + shift + rng.normal(0, 0.2)})
    edges = pd.DataFrame(rows)
    if drop:
        edges = edges.drop(index=rng.choice(edges.index[edges["window"] != "baseline"], drop, replace=False))
    design = Design(("ref", "target"), "baseline", WINDOWS,
                    pd.DataFrame({"subject": subjects, "group": groups}), alpha=0.05)
    return edges.reset_index(drop=True), design


def test_change_welch_matches_scipy_and_closed_form():
    edges, design = random_edges(5)
    out = ChangeWelch().run(edges, design).set_index("window")
    wide = edges.pivot(index="subject", columns="window", values="value")
    delta = wide["w2"] - wide["baseline"]
    target = delta[design.subjects.set_index("subject")["group"] == "target"].to_numpy()
    ref = delta[design.subjects.set_index("subject")["group"] == "ref"].to_numpy()
    res = st.ttest_ind(target, ref, equal_var=False)
    row = out.loc["w2"]
    assert row["stat"] == pytest.approx(res.statistic, rel=1e-12)
    assert row["p"] == pytest.approx(res.pvalue, rel=1e-12)
    v1, v2 = target.var(ddof=1) / len(target), ref.var(ddof=1) / len(ref)
    assert row["df"] == pytest.approx((v1 + v2) ** 2 / (v1**2 / (len(target) - 1) + v2**2 / (len(ref) - 1)))
    assert row["estimate"] == pytest.approx(target.mean() - ref.mean())
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert row["effect_size_kind"] == "hedges_g"


def test_hedges_g_against_exact_correction():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1, 1, 9), rng.normal(0, 1.5, 12)
    df = len(x) + len(y) - 2
    pooled = np.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / df)
    exact_j = np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2)
    g, lo, hi = hedges_g(x, y)
    assert g == pytest.approx(exact_j * (x.mean() - y.mean()) / pooled, rel=1e-3)
    assert lo < g < hi


def test_adjustment_against_hand_computed_values():
    tests = pd.DataFrame({"test": "t", "metric": "m", "term": "x", "family": "confirmatory",
                          "p": [0.01, 0.04, 0.03, 0.005]})
    holm = adjust(tests, "holm")
    np.testing.assert_allclose(holm["p_adj"], [0.03, 0.06, 0.06, 0.02])
    bh = adjust(tests, "fdr_bh")
    np.testing.assert_allclose(bh["p_adj"], [0.02, 0.04, 0.04, 0.02])
    assert set(bh["adj_method"]) == {"fdr_bh"}


def test_families_are_adjusted_separately():
    tests = pd.DataFrame({"test": "t", "metric": "m", "term": "x",
                          "family": ["confirmatory", "confirmatory", "exploratory", "exploratory"],
                          "p": [0.01, 0.02, 0.01, 0.02]})
    out = adjust(tests, "bonferroni")
    np.testing.assert_allclose(out["p_adj"], [0.02, 0.04, 0.02, 0.04])


def _delta(edges, design, window):
    wide = edges.pivot(index="subject", columns="window", values="value")
    group = design.subjects.set_index("subject")["group"].loc[wide.index]
    return wide, wide[window] - wide["baseline"], group


def test_change_mannwhitney_matches_scipy_and_closed_forms():
    edges, design = random_edges(8)
    out = ChangeMannWhitney().run(edges, design).set_index("window")
    _, delta, group = _delta(edges, design, "w2")
    x, y = delta[group == "target"].to_numpy(), delta[group == "ref"].to_numpy()
    res = st.mannwhitneyu(x, y, alternative="two-sided")
    row = out.loc["w2"]
    assert row["stat"] == res.statistic and row["p"] == pytest.approx(res.pvalue, rel=1e-12)
    # Rank-biserial r = P(x > y) - P(x < y), counted directly.
    direct = (np.sign(x[:, None] - y[None, :])).mean()
    assert row["effect_size"] == pytest.approx(direct, abs=1e-12)
    assert row["effect_size_ci_low"] < row["effect_size"] < row["effect_size_ci_high"]
    assert row["estimate"] == pytest.approx(np.median(np.subtract.outer(x, y)))
    assert row["ci_low"] < row["estimate"] < row["ci_high"]


def test_ancova_matches_statsmodels_ols():
    edges, design = random_edges(9, drop=3)
    out = Ancova().run(edges, design).set_index("window")
    for w in ("w1", "w2", "w3"):
        wide, delta, group = _delta(edges, design, w)
        frame = pd.DataFrame({"d": delta, "g": (group == "target").astype(float), "b": wide["baseline"]}).dropna()
        ref = smf.ols("d ~ g + b", frame).fit()
        row = out.loc[w]
        assert row["estimate"] == pytest.approx(ref.params["g"], rel=1e-9)
        assert row["se"] == pytest.approx(ref.bse["g"], rel=1e-9)
        assert row["p"] == pytest.approx(ref.pvalues["g"], rel=1e-9)
        assert row["df"] == ref.df_resid and row["n"] == len(frame)
        lo, hi = ref.conf_int().loc["g"]
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)


def test_ancova_with_covariates_matches_statsmodels():
    edges, design = random_edges(10)
    rng = np.random.default_rng(1)
    subjects = design.subjects.assign(age=rng.normal(40, 10, len(design.subjects)),
                                      sex=rng.choice(["F", "M"], len(design.subjects)))
    design = Design(design.groups, design.baseline_window, design.windows, subjects, covariates=("age", "sex"))
    row = Ancova().run(edges, design).set_index("window").loc["w2"]
    wide, delta, group = _delta(edges, design, "w2")
    frame = pd.DataFrame({"d": delta, "g": (group == "target").astype(float), "b": wide["baseline"]})
    frame = frame.join(subjects.set_index("subject")[["age", "sex"]])
    ref = smf.ols("d ~ g + b + age + C(sex)", frame).fit()
    assert row["estimate"] == pytest.approx(ref.params["g"], rel=1e-9)
    assert row["se"] == pytest.approx(ref.bse["g"], rel=1e-9)


def _welch_abs(x, y, axis=-1):
    return np.abs(st.ttest_ind(x, y, equal_var=False, axis=axis).statistic)


@pytest.mark.parametrize("n_ref, n_target", [(4, 4), (5, 3)])
def test_permutation_exact_matches_scipy_and_brute_force(n_ref, n_target):
    edges, design = random_edges(11, n_ref=n_ref, n_target=n_target)
    edges = pd.concat([edges, edges.assign(roi_b="C", value=edges["value"] * 0.5 + np.sin(edges.index))])
    out = Permutation(Permutation.Params(n_perm=1000)).run(edges, design)
    assert (out["adj_method"] == "maxT-exact").all()
    cube = {}
    for (b, w), frame in edges.groupby(["roi_b", "window"]):
        cube[b, w] = frame.set_index("subject")["value"]
    subjects = design.subjects["subject"].to_numpy()
    target = (design.subjects["group"] == "target").to_numpy()
    deltas = {(b, w): (cube[b, w] - cube[b, "baseline"]).loc[subjects].to_numpy()
              for b in ("B", "C") for w in ("w1", "w2", "w3")}
    # Uncorrected p: scipy's exact permutation test of |Welch t| over all distinct partitions.
    for (b, w), d in deltas.items():
        ref = st.permutation_test((d[target], d[~target]), _welch_abs, permutation_type="independent",
                                  alternative="greater", n_resamples=10**6, vectorized=True)
        row = out[(out["roi_b"] == b) & (out["window"] == w)].iloc[0]
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    # FWER p: brute-force enumeration of every relabeling, max |t| over the 6 edge-windows.
    import itertools

    keys = list(deltas)
    obs = np.array([_welch_abs(deltas[k][target], deltas[k][~target]) for k in keys])
    maxima = []
    for idx in itertools.combinations(range(len(subjects)), int(target.sum())):
        lab = np.zeros(len(subjects), bool)
        lab[list(idx)] = True
        maxima.append(max(_welch_abs(deltas[k][lab], deltas[k][~lab]) for k in keys))
    maxima = np.array(maxima)
    for k, o in zip(keys, obs):
        row = out[(out["roi_b"] == k[0]) & (out["window"] == k[1])].iloc[0]
        assert row["p_adj"] == pytest.approx((maxima >= o * (1 - 1e-10)).mean(), rel=1e-12)


def test_permutation_random_relabelings_and_kept_adjustment():
    edges, design = random_edges(12)  # C(13, 6) = 1716 relabelings > n_perm
    out = Permutation(Permutation.Params(n_perm=199, seed=3)).run(edges, design)
    assert (out["adj_method"] == "maxT").all() and (out["df"] == 199).all()
    counts = out["p"] * 200 - 1
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # p = (1 + count) / (1 + n_perm)
    assert (out["p_adj"] >= out["p"]).all()
    adjusted = adjust(out.assign(test="permutation", metric="pearson", family="exploratory"), "holm")
    np.testing.assert_array_equal(adjusted["p_adj"], out["p_adj"])  # max-T is not re-adjusted


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_adjusted_p_equals_statsmodels(method):
    from statsmodels.stats.multitest import multipletests

    from fclab.framework.stats.adjust import adjusted_p

    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0, 0.01, 10), [0.5, 0.5]])
    np.testing.assert_allclose(adjusted_p(p, method), multipletests(p, method=method)[1], rtol=1e-12)


@pytest.mark.parametrize("missing", [False, True])
def test_batched_welch_t_matches_scipy(missing):
    from fclab.framework.stats.permutation import WelchBatch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(26, 50)) * rng.uniform(0.5, 2, 50) + 3
    if missing:
        x[3, 4] = x[7, 9] = np.nan
    lab = np.zeros(26, bool)
    lab[:12] = True
    G = np.stack([rng.permutation(lab) for _ in range(7)])
    ref = np.stack([st.ttest_ind(x[g], x[~g], equal_var=False, nan_policy="omit").statistic for g in G])
    np.testing.assert_allclose(WelchBatch(x).t(G), ref, rtol=1e-10)


def test_t_and_normal_helpers_are_scipy_stats_to_the_bit():
    """The statistics stage's t and normal functions (framework/stats/design.py, which spare it importing
    scipy.stats) give scipy.stats' very values, edge cases included: NaN, infinite, zero and negative
    df, infinite statistics."""
    from fclab.framework.stats.design import norm_ppf, t_ppf, t_sf

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 3, 20000), [0.0, np.inf, -np.inf, np.nan, 1e-300, 40.0, 1e3]])
    df = np.concatenate([rng.uniform(0.5, 300, 20000), [np.inf, np.nan, 0.0, -1.0, 1e10, 1.0, 2.0]])
    np.testing.assert_array_equal(t_sf(np.abs(x), df), st.t.sf(np.abs(x), df))
    np.testing.assert_array_equal(t_sf(x, df), st.t.sf(x, df))
    for q in (0.975, 0.995, 0.9, 0.5):
        np.testing.assert_array_equal(t_ppf(q, df), st.t.ppf(q, df))
        assert norm_ppf(q) == st.norm.ppf(q)
    assert t_sf(2.0, 10) == st.t.sf(2.0, 10) and t_ppf(0.975, 7.5) == st.t.ppf(0.975, 7.5)
