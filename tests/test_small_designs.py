"""The smallest designs fclab allows, and the ones just above: no p = NaN from rounding.

Satterthwaite df can never exceed n − p; computed at a numerically found REML optimum they can land a
hair above it (with a baseline and one window the mmrm's df is exactly n − p and came out up to 3e-7
above, which made every row's p NaN). Checked against independent references: with one window after
baseline the baseline-adjusted mmrm is the per-window ANCOVA, an OLS fit (statsmodels, exact df
n − p); with more windows, a missing window or a covariate, R's nlme::gls + emmeans (mmrm) and
lmerTest (lmm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from fclab.framework.pluginhost.contracts import Design
from fclab.framework.stats.design import DF_REASON, DF_RTOL, bounded_df, contrasts, subject_design
from fclab.framework.stats.cubes import edge_cube
from fclab.framework.stats.lmm import fit_reml
from fclab.plugins.lmm import Lmm
from fclab.plugins.mmrm import Mmrm
from test_lmm import _lmer_df
from test_mmrm import compare, long_for_r, r_reference, study

SIZES = [(2, 2), (3, 4), (5, 6), (9, 8), (12, 14), (30, 35)]


@pytest.mark.parametrize("n_ref,n_target", SIZES)
@pytest.mark.parametrize("covariate", [False, True])
def test_one_window_after_baseline_is_the_ancova_with_its_exact_df(n_ref, n_target, covariate):
    """Baseline and one window, the smallest design: every row has a p-value, the df is exactly
    n − p, and estimate, SE and p are statsmodels' OLS of the window's value on group and baseline
    (and age), over three seeds per size."""
    for seed in (1, 2, 3):
        edges, design = study(100 * n_ref + seed, n_ref=n_ref, n_target=n_target, n_edges=4,
                              windows=("baseline", "w1"))
        if covariate:
            design = Design(design.groups, design.baseline_window, design.windows, design.subjects,
                            covariates=("age",))
        ours = Mmrm(Mmrm.Params(df="satterthwaite", contrasts=["group:window"])).run(edges, design)
        if n_ref + n_target - (4 if covariate else 3) < 1:  # no residual df at all: a reason, not a p
            assert ours["reason"].str.contains("too few observations").all() and ours["p"].isna().all()
            continue
        assert ours["reason"].isna().all() and np.isfinite(ours["p"]).all(), ours[["p", "df", "reason"]]
        wide = edges.pivot_table(index=["roi_b", "subject", "group"], columns="window", values="value").reset_index()
        wide = wide.merge(design.subjects[["subject", "age"]], on="subject")
        for edge, rows in wide.groupby("roi_b"):
            ols = smf.ols("w1 ~ C(group) + baseline" + (" + age" if covariate else ""), rows).fit()
            name = "C(group)[T.target]"
            mine = ours.set_index("roi_b").loc[edge]
            assert mine["df"] == ols.df_resid == n_ref + n_target - (4 if covariate else 3)
            assert mine["estimate"] == pytest.approx(ols.params[name], rel=1e-7)
            assert mine["se"] == pytest.approx(ols.bse[name], rel=1e-6)
            assert mine["p"] == pytest.approx(ols.pvalues[name], rel=1e-5)


@pytest.mark.parametrize("n_ref,n_target,windows,drop", [
    (2, 3, 3, 0), (5, 6, 3, 0), (5, 6, 3, 3), (12, 14, 5, 0), (12, 14, 6, 4),
])
def test_mmrm_at_small_sizes_matches_nlme_with_a_p_value_on_every_row(tmp_path, n_ref, n_target, windows, drop):
    """Two to five windows after baseline, complete or with missing windows: every fitted row has a
    p-value and matches nlme::gls + emmeans (estimate, SE, Satterthwaite df)."""
    names = ("baseline",) + tuple(f"w{k}" for k in range(1, windows))
    edges, design = study(7 * windows + drop, n_ref=n_ref, n_target=n_target, n_edges=2, drop=drop, windows=names)
    ours = Mmrm(Mmrm.Params(df="satterthwaite", contrasts=["group:window"])).run(edges, design)
    fitted = ours["reason"].isna()
    assert fitted.all(), ours.loc[~fitted, "reason"].unique()
    assert np.isfinite(ours["p"]).all()
    ref = r_reference(tmp_path, long_for_r(edges, design, covariate_baseline=True), "us",
                      "value ~ group * window + base:window", "group")
    compare(ours, ref, design, "group:window", names[1:])


@pytest.mark.parametrize("n_ref,n_target,windows,drop", [(2, 2, 2, 0), (5, 6, 2, 0), (12, 14, 2, 3),
                                                         (5, 6, 4, 0), (12, 14, 5, 6)])
def test_lmm_at_small_sizes_matches_lmertest_with_a_p_value_on_every_row(tmp_path, n_ref, n_target, windows, drop):
    """The random-intercept model from a baseline and one window up: every row has a p-value, and
    the Satterthwaite df of every contrast agree with lmerTest's."""
    names = ("baseline",) + tuple(f"w{k}" for k in range(1, windows))
    edges, design = study(3 * windows + drop, n_ref=n_ref, n_target=n_target, n_edges=3, drop=drop, windows=names)
    ours = Lmm(Lmm.Params(contrasts=["group:window", "group"])).run(edges, design)
    assert ours["reason"].isna().all() and np.isfinite(ours["p"]).all(), ours.loc[ours["p"].isna()]
    X, cols = subject_design(design, "lmm")
    keys, y = edge_cube(edges, design)
    Ls = contrasts(design, cols, ["group:window", "group"])
    ref = _lmer_df(tmp_path, y, X, [L for _, _, L in Ls])
    fit = fit_reml(y, X)
    mine = np.stack([fit.contrast(L)["df"] for _, _, L in Ls], axis=1)
    # lme4 stops its optimiser a little short of the optimum when τ² is near zero (test_lmm.py)
    np.testing.assert_allclose(mine, ref, rtol=1e-3, atol=0.05)


def test_df_bound_clips_rounding_and_names_a_real_violation():
    """Within DF_RTOL of n − p the df is n − p; further above, not positive or not finite, the row has
    no df and the reason; edges without a fit are left to their own reason."""
    p_max = np.full(6, 9.0)
    df = np.array([9.0 * (1 + 2e-8), 9.0 * (1 + DF_RTOL / 2), 9.0 * (1 + 10 * DF_RTOL), -1.0, np.nan, 4.5])
    fitted = np.array([True, True, True, True, True, True])
    out, why = bounded_df(df, p_max, fitted)
    assert out[:2].tolist() == [9.0, 9.0] and out[5] == 4.5
    assert np.isnan(out[2:5]).all() and list(why) == [None, None, DF_REASON, DF_REASON, DF_REASON, None]
    out, why = bounded_df(np.array([np.nan]), np.array([9.0]), np.array([False]))
    assert np.isnan(out[0]) and why[0] is None


def test_the_headline_says_why_when_no_row_has_a_p_value():
    """The report's headline names the reason instead of "[nan, nan] … p_adj = nan, not significant"."""
    from fclab.framework.report.assemble import headline

    row = {"family": "confirmatory", "test": "mmrm", "roi_a": "A", "roi_b": "B", "window": "w1", "estimate": -0.228,
           "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "p_adj": np.nan, "adj_method": "holm", "reason": DF_REASON}
    text = headline(pd.DataFrame([row]), 0.05)
    assert DF_REASON in text and "nan" not in text, text
    ok = dict(row, ci_low=-0.3, ci_high=-0.1, p=0.001, p_adj=0.004, reason=None)
    assert "p_adj = 0.004 (holm), significant" in headline(pd.DataFrame([ok]), 0.05)


def test_n_is_the_subjects_contributing_to_each_row_in_every_test():
    """Seven subjects lose their whole infusion run (excluded for motion) and two more one window:
    every test's group:window rows count the subjects with the baseline and that window, and lmm's
    and mmrm's group rows those with that window (lmm used to report every subject in the fit)."""
    from fclab.framework.pluginhost.builder import build_all

    windows = ("baseline", "w1", "w2", "w3")
    edges, design = study(44, n_ref=14, n_target=12, n_edges=3, windows=windows)
    lost = [f"s{i:02d}" for i in (0, 3, 5, 15, 18, 21, 24)]
    edges = edges[~(edges["subject"].isin(lost) & (edges["window"] != "baseline"))]
    edges = edges[~((edges["subject"] == "s07") & (edges["window"] == "w2"))]
    edges = edges[~((edges["subject"] == "s20") & (edges["window"] == "w3"))]
    have = edges.groupby(["roi_b", "subject"])["window"].agg(set)
    expected = {(e, w): sum({"baseline", w} <= s for (edge, _), s in have.items() if edge == e)
                for e in edges["roi_b"].unique() for w in windows[1:]}
    assert expected[("B0", "w1")] == 19 and expected[("B0", "w2")] == 18
    specs = ["mmrm", "lmm", "change_welch", "change_mannwhitney", "ancova", {"name": "permutation", "n_perm": 200}]
    for test in build_all("test", specs):
        rows = test.run(edges, design)
        rows = rows[rows["term"] == "group:window"]
        got = {(r.roi_b, r.window): r.n for r in rows.itertuples()}
        assert got == expected, (test.name, got)
    for name in ("lmm", "mmrm"):
        test = build_all("test", [{"name": name, "contrasts": ["group"]} if name == "lmm" else
                                  {"name": name, "baseline": "response", "contrasts": ["group"]}])[0]
        rows = test.run(edges, design)
        for r in rows[rows["window"] == "w2"].itertuples():
            assert r.n == 26 - 7 - 1, (name, r)


def test_welch_caveat_fires_where_its_tail_is_liberal():
    """The premise of change_welch's caveat, on normal data with equal variances (200,000 studies per
    size): at 6 vs 20 and 4 vs 22 the rate of p < 0.002 is well above nominal (the caveat fires), at
    12 vs 14 it is nominal (no caveat); the caveat reaches the stats stage's provenance through
    caveat_for."""
    from scipy import stats as st

    from fclab.plugins.change_welch import ChangeWelch

    rng = np.random.default_rng(5)
    ratio = {}
    for n1, n2 in [(6, 20), (4, 22), (12, 14)]:
        a, b = rng.standard_normal((200_000, n1)), rng.standard_normal((200_000, n2))
        p = st.ttest_ind(a, b, axis=1, equal_var=False).pvalue
        ratio[(n1, n2)] = (p < 0.002).mean() / 0.002
    assert ratio[(6, 20)] > 1.5 and ratio[(4, 22)] > 3.0 and 0.85 < ratio[(12, 14)] < 1.15, ratio
    test = ChangeWelch()
    assert "liberal" in test.caveat_for({"midazolam": 20, "ketamine": 6})
    assert "liberal" in test.caveat_for({"midazolam": 4, "ketamine": 22})
    assert test.caveat_for({"midazolam": 14, "ketamine": 12}) is None
    assert test.caveat_for({"midazolam": 30, "ketamine": 10}) is None
