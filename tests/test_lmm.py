"""The batched mixed model against statsmodels, closed forms and the design checks."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import linalg

from fclab.framework.pluginhost.contracts import Design
from fclab.framework.errors import DataError
from fclab.framework.stats.lmm import fit_reml
from fclab.api import subject_design
from fclab.plugins.lmm import Lmm
from fclab.plugins.lmm_reference import LmmReference, fit_mixedlm

WINDOWS = ("baseline", "w1", "w2", "w3")


def study(seed, n_ref=7, n_target=6, n_edges=6, drop=0, tau=0.3):
    """A long edge table with a random subject intercept per edge; ``drop`` values removed per edge."""
    rng = np.random.default_rng(seed)
    subjects = pd.DataFrame({"subject": [f"s{i:02d}" for i in range(n_ref + n_target)],
                             "group": ["ref"] * n_ref + ["target"] * n_target,
                             "age": rng.integers(20, 60, n_ref + n_target)})
    rows = []
    for e in range(n_edges):
        for s, g in zip(subjects["subject"], subjects["group"]):
            u = rng.normal(0, tau)
            for k, w in enumerate(WINDOWS):
                shift = -0.4 if (g == "target" and w == "w2") else 0.0
                rows.append({"metric": "pearson", "roi_a": "A", "roi_b": f"B{e}", "subject": s, "group": g,
                             "window": w, "value": 0.5 + 0.05 * k + u + shift + rng.normal(0, 0.2)})
    edges = pd.DataFrame(rows)
    if drop:
        idx = [rng.choice(f.index[f["window"] != "baseline"], drop, replace=False)
               for _, f in edges.groupby("roi_b")]
        edges = edges.drop(index=np.concatenate(idx)).reset_index(drop=True)
    return edges, Design(("ref", "target"), "baseline", WINDOWS, subjects, alpha=0.05)


def edge_arrays(edges, design, roi_b):
    X, names = subject_design(design, "lmm")
    frame = edges[edges["roi_b"] == roi_b]
    s = pd.Index(design.subjects["subject"]).get_indexer(frame["subject"])
    k = pd.Index(design.windows).get_indexer(frame["window"])
    return frame["value"].to_numpy(), X[s, k], s, names


@pytest.mark.parametrize("drop", [0, 4])
def test_estimates_match_statsmodels_mixedlm(drop):
    edges, design = study(1, drop=drop)
    ours = Lmm(Lmm.Params(contrasts=["group:window"])).run(edges, design)
    fit = fit_reml(*_cube(edges, design))
    for e, roi_b in enumerate(sorted(edges["roi_b"].unique())):
        y, X, s, names = edge_arrays(edges, design, roi_b)
        ref = fit_mixedlm(y, X, s)
        np.testing.assert_allclose(fit.beta[e], ref.fe_params, rtol=1e-5)
        assert fit.tau2[e] == pytest.approx(float(np.asarray(ref.cov_re)[0, 0]), rel=1e-4)
        assert fit.sigma2[e] == pytest.approx(ref.scale, rel=1e-5)
        if drop == 0:  # balanced: statsmodels' observed-information SEs equal the model-based ones
            np.testing.assert_allclose(np.sqrt(np.diag(fit.cov[e])), ref.bse_fe, rtol=1e-5)
        # Model-based SEs (lme4's): GLS with the covariance statsmodels estimated.
        blocks = [ref.scale * np.eye((s == j).sum()) + float(np.asarray(ref.cov_re)[0, 0])
                  for j in np.unique(s)]
        order = np.argsort(s, kind="stable")
        gls = sm.GLS(y[order], X[order], sigma=linalg.block_diag(*blocks)).fit()
        np.testing.assert_allclose(np.sqrt(np.diag(fit.cov[e])) * np.sqrt(ref.scale / fit.sigma2[e]),
                                   gls.bse / np.sqrt(gls.scale), rtol=1e-5)
        row = ours[(ours["roi_b"] == roi_b) & (ours["window"] == "w2")].iloc[0]
        assert row["estimate"] == pytest.approx(ref.fe_params[names.index("group:window[w2]")], rel=1e-5)


def _cube(edges, design):
    from fclab.framework.stats.cubes import edge_cube

    _, y = edge_cube(edges, design)
    return y, subject_design(design, "lmm")[0]


def test_reference_plugin_agrees_with_batched_engine():
    edges, design = study(2, n_edges=3, drop=3)
    a = Lmm().run(edges, design)
    b = LmmReference().run(edges, design)
    m = a.merge(b, on=["metric", "roi_a", "roi_b", "window", "term"])
    assert len(m) == len(a) == 3 * (3 + 4 + 1)
    np.testing.assert_allclose(m["estimate_x"], m["estimate_y"], rtol=1e-5)
    np.testing.assert_allclose(m["se_x"], m["se_y"], rtol=1e-3)  # observed vs model-based information


def test_satterthwaite_df_equal_the_classic_split_plot_values():
    """Balanced data with a positive subject variance: REML equals ANOVA, so the df are known."""
    edges, design = study(3, n_edges=4, tau=0.5)
    out = Lmm(Lmm.Params(contrasts=["group:window", "group"])).run(edges, design)
    S, K = len(design.subjects), len(WINDOWS)
    df_within = S * K - S - 2 * (K - 1)
    inter = out[out["term"] == "group:window"]
    np.testing.assert_allclose(inter["df"], df_within, rtol=1e-5)
    for roi_b, frame in edges.groupby("roi_b"):
        wide = frame.pivot(index="subject", columns="window", values="value")[list(WINDOWS)]
        grp = design.subjects.set_index("subject").loc[wide.index, "group"]
        # Mean squares of the split-plot ANOVA: subjects within groups, and residual.
        subj_mean = wide.mean(axis=1)
        cell = wide.groupby(grp).transform("mean")
        ms_b = K * ((subj_mean - subj_mean.groupby(grp).transform("mean")) ** 2).sum() / (S - 2)
        resid = wide.sub(subj_mean, axis=0) - cell.sub(cell.mean(axis=1), axis=0)
        ms_w = (resid.to_numpy() ** 2).sum() / df_within
        a, b = ms_b / K, (K - 1) * ms_w / K  # Var(group difference in one window) ∝ a + b
        classic = (a + b) ** 2 / (a**2 / (S - 2) + b**2 / df_within)
        got = out[(out["roi_b"] == roi_b) & (out["term"] == "group") & (out["window"] == "w1")]["df"].iloc[0]
        assert got == pytest.approx(classic, rel=1e-4)


def test_trend_contrast_is_the_slope_difference():
    edges, design = study(4, n_edges=1)
    out = Lmm().run(edges, design).set_index("term")
    inter = Lmm(Lmm.Params(contrasts=["group:window"])).run(edges, design).set_index("window")["estimate"]
    c = np.array([-1.0, 0.0, 1.0])
    assert out.loc["group:trend", "estimate"] == pytest.approx((c * inter[["w1", "w2", "w3"]]).sum() / 2)


def test_covariate_enters_like_in_statsmodels():
    edges, design = study(5, n_edges=2)
    design = Design(design.groups, design.baseline_window, design.windows, design.subjects, covariates=("age",))
    out = Lmm(Lmm.Params(contrasts=["group:window"])).run(edges, design)
    frame = edges[edges["roi_b"] == "B0"].merge(design.subjects[["subject", "age"]], on="subject")
    y, X, s, names = edge_arrays(edges, design, "B0")
    assert names[-1] == "age"
    ref = fit_mixedlm(y, X, s)
    got = out[(out["roi_b"] == "B0") & (out["window"] == "w3")]["estimate"].iloc[0]
    assert got == pytest.approx(ref.fe_params[names.index("group:window[w3]")], rel=1e-5)
    assert len(frame) == len(y)


def test_unfittable_edge_gets_a_reason_not_a_p_value():
    edges, design = study(6, n_edges=3)
    edges.loc[edges["roi_b"] == "B1", "value"] = np.nan  # all missing
    edges = edges[~((edges["roi_b"] == "B2") & (edges["window"] == "w3"))]  # a window with no data
    out = Lmm().run(edges, design)
    bad = out[out["roi_b"].isin(["B1", "B2"])]
    assert bad["p"].isna().all() and bad["reason"].notna().all()
    good = out[out["roi_b"] == "B0"]
    assert good["p"].notna().all() and good["reason"].isna().all()


@pytest.mark.parametrize("case, message", [
    ("small_group", "group 'target' has 1 subject(s)"),
    ("constant", "covariate 'age' is constant"),
    ("missing", "covariate 'age' is missing for every subject"),
])
def test_inestimable_designs_name_the_test_and_reason(case, message):
    edges, design = study(7, n_edges=1)
    subjects = design.subjects.copy()
    if case == "small_group":
        subjects = subjects[(subjects["group"] == "ref") | (subjects["subject"] == "s07")]
    elif case == "constant":
        subjects["age"] = 40
    else:
        subjects["age"] = np.nan
    design = Design(design.groups, design.baseline_window, design.windows, subjects, covariates=("age",))
    with pytest.raises(DataError, match=re.escape(f"lmm: {message}")):
        Lmm().run(edges, design)


def _lmer_df(tmp_path, y, X, Ls):
    """lmerTest's Satterthwaite df for every edge of ``y`` (E, S, K; NaN = missing) and contrast."""
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("Rscript") is None:
        pytest.fail("Rscript not installed: `make test` installs r-base-core, r-cran-lme4 and r-cran-lmertest")
    E, S, K = y.shape
    e, s, k = np.nonzero(np.isfinite(y))
    data = pd.DataFrame({"edge": e, "subject": s, "y": y[e, s, k]})
    for j in range(X.shape[-1]):
        data[f"x{j}"] = X[s, k, j]
    cols = [f"x{j}" for j in range(X.shape[-1])]
    data.to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(Ls, columns=cols).to_csv(tmp_path / "L.csv", index=False)
    script = Path(__file__).parent / "r" / "lmer_df.R"
    subprocess.run(["Rscript", str(script), str(tmp_path / "d.csv"), str(tmp_path / "L.csv"),
                    str(tmp_path / "o.csv")], check=True, capture_output=True, text=True)
    return pd.read_csv(tmp_path / "o.csv").pivot(index="edge", columns="contrast", values="df").to_numpy()


RATIOS = [1e2, 1.0, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]


def _near_boundary(seed, drop):
    """One edge per target τ²/σ²: within-subject noise plus a subject effect scaled (by bisection) so
    that the REML estimate of τ²/σ² hits the target."""
    rng = np.random.default_rng(seed)
    S, K = 26, 5
    g = np.r_[np.zeros(14), np.ones(12)]
    X = np.zeros((S, K, 2 * K))
    for k in range(K):
        X[:, k, k], X[:, k, K + k] = 1, g  # cell means: window k, and the group shift at window k
    e = rng.normal(0, 0.15, (S, K))
    e -= e.mean(axis=1, keepdims=True)
    b = rng.normal(0, 1, S)
    miss = np.zeros((S, K), bool)
    if drop:
        miss.ravel()[rng.choice(S * K, drop, replace=False)] = True
    ys = []
    for target in RATIOS:
        lo, hi = -10.0, 3.0
        for _ in range(120):
            mid = (lo + hi) / 2
            y = np.where(miss, np.nan, e + 10**mid * b[:, None])[None]
            f = fit_reml(y, X)
            lo, hi = (mid, hi) if f.tau2[0] / f.sigma2[0] < target else (lo, mid)
        ys.append(np.where(miss, np.nan, e + 10**hi * b[:, None]))
    L_within = np.zeros(2 * K)
    L_within[K + 2], L_within[K] = 1, -1  # group × window: change from window 0 to 2
    L_between = np.zeros(2 * K)
    L_between[K + 2] = 1  # the group difference within window 2
    return np.stack(ys), X, [L_within, L_between]


@pytest.mark.parametrize("drop", [0, 9])
def test_satterthwaite_df_near_the_variance_boundary_match_lmertest(tmp_path, drop):
    """Exact derivatives keep the df right for τ²/σ² from 1e2 down to 1e-6 (finite differences in
    log variances gave up to 126 where at most N − p = 120 is possible)."""
    y, X, Ls = _near_boundary(8, drop)
    fit = fit_reml(y, X)
    np.testing.assert_allclose(fit.tau2 / fit.sigma2, RATIOS, rtol=1e-3)
    ours = np.stack([fit.contrast(L)["df"] for L in Ls], axis=1)
    N, p = np.isfinite(y[0]).sum(), X.shape[-1]
    assert np.all((ours > 0) & (ours <= N - p))
    ref = _lmer_df(tmp_path, y, X, Ls)
    # lme4's optimiser stops short of the REML optimum below τ²/σ² ≈ 1e-5 (at 1e-6 its τ² is half
    # the optimum's), so its df drift there; above, they agree to well within 0.5.
    ok = np.array(RATIOS) >= 1e-5
    np.testing.assert_allclose(ours[ok], ref[ok], atol=0.5)
    if not drop:  # balanced: the within-subject contrast has the split-plot df for every τ²
        np.testing.assert_allclose(ours[:, 0], N - 26 - 2 * (5 - 1), rtol=1e-5)
    # The between-subject df rise monotonically to N − p as τ² → 0.
    assert np.all(np.diff(ours[:, 1]) > -1e-6) and ours[-1, 1] == pytest.approx(N - p, abs=0.05)
