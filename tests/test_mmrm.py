"""The batched MMRM against R's nlme::gls + emmeans, closed forms and the ANCOVA it generalises."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from fclab.framework.pluginhost.contracts import Design
from fclab.framework.stats.mmrm import fit_mmrm
from fclab.framework.stats.cubes import edge_cube
from fclab.plugins.ancova import Ancova
from fclab.api import subject_design
from fclab.plugins.mmrm import Mmrm

WINDOWS = ("baseline", "w1", "w2", "w3")
R_SCRIPT = Path(__file__).parent / "r" / "mmrm_reference.R"


def study(seed, n_ref=9, n_target=8, n_edges=3, drop=0, windows=WINDOWS):
    """Edges whose windows have unequal variances and correlations (an unstructured Σ)."""
    rng = np.random.default_rng(seed)
    K = len(windows)
    subjects = pd.DataFrame({"subject": [f"s{i:02d}" for i in range(n_ref + n_target)],
                             "group": ["ref"] * n_ref + ["target"] * n_target,
                             "age": rng.normal(40, 10, n_ref + n_target).round(1)})
    sd = np.linspace(0.3, 0.15, K)  # the baseline spreads most, as in the realistic simulation
    corr = 0.3 + 0.5 * np.exp(-np.abs(np.subtract.outer(np.arange(K), np.arange(K))))
    np.fill_diagonal(corr, 1)
    cov = corr * np.outer(sd, sd)
    rows = []
    for e in range(n_edges):
        for s, g, age in zip(subjects["subject"], subjects["group"], subjects["age"]):
            noise = rng.multivariate_normal(np.zeros(K), cov)
            for k, w in enumerate(windows):
                shift = -0.2 if (g == "target" and w == "w2") else 0.0
                rows.append({"metric": "pearson", "roi_a": "A", "roi_b": f"B{e}", "subject": s, "group": g,
                             "window": w, "value": 0.5 + 0.05 * k + 0.004 * (age - 40) + shift + noise[k]})
    edges = pd.DataFrame(rows)
    if drop:
        idx = [rng.choice(f.index, drop, replace=False) for _, f in edges.groupby("roi_b")]
        edges = edges.drop(index=np.concatenate(idx)).reset_index(drop=True)
    return edges, Design(("ref", "target"), "baseline", windows, subjects, alpha=0.05)


def r_reference(tmp_path, data: pd.DataFrame, structure: str, formula: str, what: str) -> pd.DataFrame:
    if shutil.which("Rscript") is None:
        if os.environ.get("FCLAB_SKIP_R"):
            pytest.skip("Rscript not installed (FCLAB_SKIP_R set)")
        pytest.fail("Rscript not installed: `make test` installs r-base-core, r-cran-nlme and r-cran-emmeans")
    src, out = tmp_path / "data.csv", tmp_path / "out.csv"
    data.to_csv(src, index=False)
    subprocess.run(["Rscript", str(R_SCRIPT), str(src), str(out), structure, formula, what],
                   check=True, capture_output=True, text=True)
    return pd.read_csv(out)


def long_for_r(edges, design, covariate_baseline=False):
    frame = edges.merge(design.subjects[["subject", "age"]], on="subject")
    frame["edge"] = frame["roi_b"]
    if covariate_baseline:
        base = frame[frame["window"] == design.baseline_window].set_index(["edge", "subject"])["value"]
        frame = frame[frame["window"] != design.baseline_window].copy()
        b = base.reindex(pd.MultiIndex.from_arrays([frame["edge"], frame["subject"]])).to_numpy()
        frame["value"] = frame["value"].to_numpy() - b
        frame["base"] = b
        frame = frame[np.isfinite(frame["base"])]
        frame["base"] -= frame.groupby("edge")["base"].transform(lambda x: x.groupby(frame.loc[x.index, "subject"]).first().mean())
    present = [w for w in design.windows if w in set(frame["window"])]
    frame["idx"] = frame["window"].map({w: i + 1 for i, w in enumerate(present)})
    frame["age"] -= design.subjects["age"].mean()
    return frame[["edge", "subject", "group", "window", "idx", "value", "age"] + (["base"] if covariate_baseline else [])]


def compare(ours, ref, design, term, windows):
    got = ours[ours["term"] == term].set_index(["roi_b", "window"])
    con = ref[ref["kind"] == "contrast"].set_index(["edge", "window"])
    for (edge, window), row in con.iterrows():
        mine = got.loc[(edge, window)]
        assert mine["estimate"] == pytest.approx(row["estimate"], rel=1e-5, abs=1e-8)
        assert mine["se"] == pytest.approx(row["se"], rel=1e-5)
        assert mine["df"] == pytest.approx(row["df_exact"], rel=1e-4)
    return con


@pytest.mark.parametrize("structure", ["us", "csh", "cs", "ar1"])
@pytest.mark.parametrize("drop", [0, 7])
def test_response_model_matches_nlme_gls_and_emmeans(tmp_path, structure, drop):
    edges, design = study(11 + drop, drop=drop)
    plugin = Mmrm(Mmrm.Params(df="satterthwaite", baseline="response", covariance=structure, contrasts=["group:window", "group"]))
    ours = plugin.run(edges, design)
    data = long_for_r(edges, design)
    ref = r_reference(tmp_path, data, structure, "value ~ group * window", "interaction")
    compare(ours, ref, design, "group:window", WINDOWS[1:])
    ref = r_reference(tmp_path, data, structure, "value ~ group * window", "group")
    compare(ours, ref, design, "group", WINDOWS)
    # The fitted within-subject covariance.
    keys, y = edge_cube(edges, design)
    fit = fit_mmrm(y, subject_design(design, "mmrm")[0], structure)
    sig = ref[ref["kind"] == "sigma"]
    for e, edge in enumerate(keys["roi_b"]):
        s = sig[sig["edge"] == edge]
        np.testing.assert_allclose(fit.sigma[e][s["i"].astype(int), s["j"].astype(int)], s["estimate"], rtol=1e-5,
                                   atol=1e-5 * s["estimate"].abs().max())


def test_covariates_match_nlme_gls(tmp_path):
    edges, design = study(21, drop=5)
    design = Design(design.groups, design.baseline_window, design.windows, design.subjects, covariates=("age",))
    ours = Mmrm(Mmrm.Params(df="satterthwaite", baseline="response", contrasts=["group:window"])).run(edges, design)
    ref = r_reference(tmp_path, long_for_r(edges, design), "us", "value ~ group * window + age", "interaction")
    compare(ours, ref, design, "group:window", WINDOWS[1:])


@pytest.mark.parametrize("drop", [0, 6])
def test_baseline_covariate_model_matches_nlme_gls(tmp_path, drop):
    edges, design = study(31 + drop, drop=drop)
    ours = Mmrm(Mmrm.Params(df="satterthwaite", contrasts=["group:window"])).run(edges, design)
    data = long_for_r(edges, design, covariate_baseline=True)
    ref = r_reference(tmp_path, data, "us", "value ~ group * window + base:window", "group")
    compare(ours, ref, design, "group:window", WINDOWS[1:])


def test_complete_data_baseline_covariate_model_is_per_window_ancova():
    """With every window present the regressors are the same in every window, so GLS is OLS per
    window and the unstructured REML covariance is the residual cross-product over S − 3: the
    MMRM's estimates, SEs, df (S − 3) and p equal the ANCOVA of the change on group and baseline."""
    edges, design = study(41, n_edges=4)
    a = Mmrm(Mmrm.Params(contrasts=["group:window"])).run(edges, design)
    b = Ancova().run(edges, design)
    m = a.merge(b, on=["metric", "roi_a", "roi_b", "window", "term"])
    assert len(m) == 4 * 3
    for col, tol in [("estimate", 1e-9), ("se", 1e-7), ("df", 1e-7), ("p", 1e-6)]:
        np.testing.assert_allclose(m[f"{col}_x"], m[f"{col}_y"], rtol=tol)
    assert (m["df_x"].round(6) == len(design.subjects) - 3).all()


def test_complete_data_response_model_is_the_pooled_t_test_of_the_change():
    edges, design = study(42, n_edges=2)
    out = Mmrm(Mmrm.Params(baseline="response", contrasts=["group:window"])).run(edges, design)
    wide = edges.pivot_table(index=["roi_b", "subject"], columns="window", values="value")
    grp = design.subjects.set_index("subject")["group"]
    for (edge, window), row in out.set_index(["roi_b", "window"]).iterrows():
        d = (wide.loc[edge, window] - wide.loc[edge, "baseline"])
        t = st.ttest_ind(d[grp[d.index] == "target"], d[grp[d.index] == "ref"])
        assert row["stat"] == pytest.approx(t.statistic, rel=1e-7)
        assert row["p"] == pytest.approx(t.pvalue, rel=1e-6)
        assert row["df"] == pytest.approx(len(d) - 2, rel=1e-7)


def test_rows_without_a_fit_say_why():
    edges, design = study(43, n_edges=5)
    edges.loc[edges["roi_b"] == "B1", "value"] = np.nan
    edges = edges[~((edges["roi_b"] == "B2") & (edges["window"] == "w3"))]
    edges.loc[edges["roi_b"] == "B3", "value"] = 0.25  # constant
    edges = edges[~((edges["roi_b"] == "B4") & (edges["group"] == "target") & (edges["window"] != "baseline"))]
    out = Mmrm().run(edges, design)
    bad = out[out["roi_b"].isin(["B1", "B2", "B3", "B4"])]
    assert bad["p"].isna().all() and bad["reason"].notna().all()
    assert (out.loc[out["roi_b"] == "B3", "reason"] == "no variation in the values").all()
    assert (out.loc[out["roi_b"] == "B4", "reason"] == "fixed effects not estimable from the observations present").all()
    good = out[out["roi_b"] == "B0"]
    assert good["p"].notna().all() and good["reason"].isna().all()


def test_chance_baseline_imbalance_does_not_become_a_group_effect():
    """Regression to the mean: with no group effect but a noisy baseline, edges where the groups
    happen to differ at baseline show a 'change' difference. Among such edges the change-score test
    rejects far above α; the baseline-adjusted MMRM stays at α (binomial tolerance)."""
    rng = np.random.default_rng(12)
    E, n_ref, n_target = 6000, 14, 12
    S = n_ref + n_target
    trait = rng.normal(0.4, 0.15, (E, S, 1))  # the subject's stable connectivity
    y = trait + rng.normal(0, 0.12, (E, S, len(WINDOWS)))
    y[:, :, 0] += rng.normal(0, 0.12, (E, S))  # a noisier baseline (separate, shorter run)
    subjects = pd.DataFrame({"subject": [f"s{i:02d}" for i in range(S)], "group": ["ref"] * n_ref + ["target"] * n_target})
    design = Design(("ref", "target"), "baseline", WINDOWS, subjects)
    keys = pd.DataFrame({"metric": "pearson", "roi_a": "A", "roi_b": [f"B{e:04d}" for e in range(E)]})
    edges = pd.DataFrame({
        "subject": np.tile(np.repeat(subjects["subject"], len(WINDOWS)), E),
        "group": np.tile(np.repeat(subjects["group"], len(WINDOWS)), E),
        "window": np.tile(WINDOWS, E * S), "metric": "pearson", "roi_a": "A",
        "roi_b": np.repeat(keys["roi_b"], S * len(WINDOWS)), "value": y.ravel()})
    g = (subjects["group"] == "target").to_numpy()
    t_base = st.ttest_ind(y[:, g, 0], y[:, ~g, 0], axis=1).statistic
    imbalanced = set(keys["roi_b"][np.abs(t_base) > 2])
    assert len(imbalanced) > 200
    from fclab.plugins.change_welch import ChangeWelch

    for test, inflated in [(ChangeWelch(), True), (Mmrm(Mmrm.Params(contrasts=["group:window"])), False)]:
        out = test.run(edges, design)
        sel = out[out["roi_b"].isin(imbalanced) & (out["window"] == "w2")]
        k, n = int((sel["p"] < 0.05).sum()), len(sel)
        if inflated:
            assert k / n > 0.15, (type(test).__name__, k, n)
        else:
            assert st.binomtest(k, n, 0.05).pvalue > 0.001, (type(test).__name__, k, n)


@pytest.mark.parametrize("structure", ["us", "csh", "cs", "ar1"])
def test_one_effect_window_fits_with_every_structure(structure):
    """Baseline as covariate with a single infusion window: one variance, the ANCOVA of that window."""
    edges, design = study(5, windows=("baseline", "w1"))
    a = Mmrm(Mmrm.Params(covariance=structure, contrasts=["group:window"])).run(edges, design)
    b = Ancova().run(edges, design)
    m = a.merge(b, on=["metric", "roi_a", "roi_b", "window", "term"])
    assert len(m) == 3 and m["reason_x"].isna().all()
    np.testing.assert_allclose(m["p_x"], m["p_y"], rtol=1e-6)
