"""Crossover designs (stats.design: crossover): the within-subject tests against independent references
(R nlme/pbkrtest for the MMRMs, scipy for the t-tests, brute-force enumeration for the permutation
tests), the sessions table's one-line errors, and the simulator's crossover studies."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fclab.framework.errors import DataError, ParamsError
from fclab.framework.params import StatsParams
from fclab.framework.params.models import EffectSpec
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.simulation.roi_level import RoiStudy, simulate_crossover_edges
from fclab.framework.stats import crossover
from fclab.framework.stats.design import contrast_table
from fclab.framework.stats.engine import make_design, run_stats
from fclab.framework.stats.mmrm import fit_mmrm

R_DIR = Path(__file__).parent / "r"
GROUPS = ("placebo", "ketamine")
EFFECTS = tuple(EffectSpec(roi_a=a, roi_b="vmPFC", group="ketamine", delta_r=-0.4, peak_min=15, width_min=4)
                for a in ("Left_Amygdala", "Right_Amygdala"))


def study(n_ref=7, n_target=6, effects=EFFECTS, **kw):
    return RoiStudy(n_ref=n_ref, n_target=n_target, groups=GROUPS, design="crossover", effects=effects, **kw)


def params(*tests, **kw):
    return StatsParams(design="crossover", groups=GROUPS, tests=list(tests), **kw)


def run(edges, sessions, *tests, windows=None, **kw):
    p = params(*tests, **kw)
    windows = windows or list(dict.fromkeys(edges["window"]))
    return run_stats(p, edges, windows, build_all("test", p.tests), sessions=sessions)


def with_missing(edges, rate, seed):
    """``edges`` with a share ``rate`` of subject × session × window cells missing (every edge)."""
    rng = np.random.default_rng(seed)
    cells = edges[["subject", "session", "window"]].drop_duplicates().reset_index(drop=True)
    gone = cells[rng.random(len(cells)) < rate]
    hit = pd.MultiIndex.from_frame(edges[["subject", "session", "window"]]).isin(pd.MultiIndex.from_frame(gone))
    return edges.assign(value=np.where(hit, np.nan, edges["value"]))


@pytest.fixture(scope="module")
def xo():
    edges, sessions = simulate_crossover_edges(study(period_shift_r=0.1), 11, 0.1)
    return edges, sessions


def test_sessions_table_from_the_simulator_is_balanced(xo):
    edges, sessions = xo
    assert set(edges.columns) >= {"subject", "session", "group", "window", "value"}
    per = sessions.groupby("subject")
    assert (per["condition"].nunique() == 2).all() and (per["period"].apply(sorted).map(tuple) == (1, 2)).all()
    first = sessions[sessions.period == 1].condition.value_counts()
    assert first["ketamine"] == 6 and first["placebo"] == 7
    # each session's rows name its condition as the group
    merged = edges.merge(sessions, on=["subject", "session"])
    assert (merged["group"] == merged["condition"]).all()


def changes(edges, sessions):
    """Δ per (edge, subject, condition, window) computed directly from the long table."""
    e = edges.merge(sessions, on=["subject", "session"])
    base = e[e.window == "baseline"].set_index(["roi_a", "roi_b", "subject", "condition"])["value"]
    rest = e[e.window != "baseline"].copy()
    rest["change"] = rest["value"].to_numpy() - base.reindex(
        pd.MultiIndex.from_frame(rest[["roi_a", "roi_b", "subject", "condition"]])).to_numpy()
    return rest


def test_paired_tests_match_scipy(xo):
    edges, sessions = xo
    edges = with_missing(edges, 0.05, 3)
    res = run(edges, sessions, "change_welch", {"name": "change_welch", "period": "ignore"})
    ch = changes(edges, sessions)
    wide = ch.pivot_table(index=["roi_a", "roi_b", "window", "subject"], columns="condition", values="change").reset_index()
    seq = sessions[sessions.period == 1].set_index("subject")["condition"]
    checked = 0
    for (a, b, w), g in wide.groupby(["roi_a", "roi_b", "window"]):
        g = g.dropna(subset=list(GROUPS))
        d = (g["ketamine"] - g["placebo"]).to_numpy()
        rows = res[(res.roi_a == a) & (res.roi_b == b) & (res.window == w)]
        ignore, adjust = rows.iloc[1], rows.iloc[0]
        ref = scipy.stats.ttest_rel(g["ketamine"], g["placebo"])
        assert ignore["stat"] == pytest.approx(ref.statistic, rel=1e-10)
        assert ignore["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert ignore["estimate"] == pytest.approx(d.mean(), rel=1e-12)
        assert ignore["n"] == len(d)
        # Hills–Armitage: Welch's t between sequences on the period differences, the estimate halved
        kfirst = (seq.reindex(g["subject"]) == "ketamine").to_numpy()
        pd_ = np.where(kfirst, d, -d)
        ref = scipy.stats.ttest_ind(pd_[kfirst], pd_[~kfirst], equal_var=False)
        assert adjust["stat"] == pytest.approx(ref.statistic, rel=1e-10)
        assert adjust["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert adjust["estimate"] == pytest.approx((pd_[kfirst].mean() - pd_[~kfirst].mean()) / 2, rel=1e-12)
        checked += 1
    assert checked == 40


def brute_force_max_t(data, statistic, relabellings):
    """Two-sided p and max-|t| adjusted p over all columns, by looping over every relabelling."""
    obs = statistic(data, relabellings[0])
    counts, counts_max = np.zeros(data.shape[1]), np.zeros(data.shape[1])
    for lab in relabellings:
        t = np.abs(statistic(data, lab))
        counts += t >= np.abs(obs) - 1e-10
        counts_max += np.nanmax(t) >= np.abs(obs) - 1e-10
    return counts / len(relabellings), counts_max / len(relabellings)


def test_sign_flip_and_sequence_permutations_match_brute_force():
    edges, sessions = simulate_crossover_edges(study(n_ref=4, n_target=4), 5, 0.05)
    # one family: the confirmatory edge only, so every window's rows share one maximum
    keep = (edges.roi_a == "Left_Amygdala") & (edges.roi_b == "vmPFC")
    edges = edges[keep]
    conf = dict(confirmatory=[("Left_Amygdala", "vmPFC")])
    res = run(edges, sessions, {"name": "permutation", "n_perm": 1000, "period": "ignore"},
              {"name": "permutation", "n_perm": 1000}, **conf)
    ch = changes(edges, sessions)
    wide = ch.pivot_table(index=["subject", "window"], columns="condition", values="change")
    d = (wide["ketamine"] - wide["placebo"]).unstack("window")  # subjects × windows
    windows = list(d.columns)
    x = d.to_numpy()

    def one_sample(data, signs):
        y = data * signs[:, None]
        return y.mean(0) / (y.std(0, ddof=1) / np.sqrt(len(y)))

    flips = [np.array(s, float) for s in itertools.product([1, -1], repeat=len(x))]
    p, p_max = brute_force_max_t(x, one_sample, flips)
    flip_rows = res[res.adj_method == "maxT-signflip-exact"].set_index("window").loc[windows]
    assert flip_rows["df"].iloc[0] == 2**8
    np.testing.assert_allclose(flip_rows["p"], p, rtol=1e-12)
    np.testing.assert_allclose(flip_rows["p_adj"], p_max, rtol=1e-12)

    seq = sessions[sessions.period == 1].set_index("subject")["condition"].reindex(d.index) == "ketamine"
    pdiff = np.where(seq.to_numpy()[:, None], x, -x)

    def welch(data, first):
        a, b = data[first], data[~first]
        return (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))

    obs = seq.to_numpy()
    labellings = [obs] + [m for m in (np.isin(np.arange(8), c) for c in itertools.combinations(range(8), 4))
                          if not (m == obs).all()]
    p, p_max = brute_force_max_t(pdiff, welch, labellings)
    seq_rows = res[res.adj_method == "maxT-exact"].set_index("window").loc[windows]
    assert seq_rows["df"].iloc[0] == 70
    np.testing.assert_allclose(seq_rows["p"], p, rtol=1e-12)
    np.testing.assert_allclose(seq_rows["p_adj"], p_max, rtol=1e-12)


def rscript(*args):
    if shutil.which("Rscript") is None:
        pytest.fail("Rscript not installed: `make test` installs R and its packages (make rref)")
    return subprocess.run(["Rscript", *map(str, args)], check=True, capture_output=True, text=True)


def test_mmrms_match_nlme_and_pbkrtest(tmp_path):
    edges, sessions = simulate_crossover_edges(study(n_ref=9, n_target=8), 21, 0.1)
    edges = with_missing(edges, 0.04, 8)
    pairs = [("Left_Amygdala", "vmPFC"), ("Right_Amygdala", "dmPFC"), ("vmPFC", "amPFC")]
    keep = np.zeros(len(edges), bool)
    for a, b in pairs:
        keep |= (edges.roi_a == a).to_numpy() & (edges.roi_b == b).to_numpy()
    edges = edges[keep].reset_index(drop=True)
    e = edges.merge(sessions, on=["subject", "session"])
    e["edge"] = e["roi_a"] + "-" + e["roi_b"]
    e["condition"] = np.where(e["condition"] == "ketamine", "target", "ref")
    e[["edge", "subject", "condition", "period", "window", "value"]].to_csv(tmp_path / "d.csv", index=False)
    rscript(R_DIR / "crossover_reference.R", tmp_path / "d.csv", tmp_path / "o.csv")
    ref = pd.read_csv(tmp_path / "o.csv")
    specs = [{"name": "mmrm", "baseline": "change", "df": "satterthwaite"},
             {"name": "mmrm", "baseline": "change", "crossover": "slots", "covariance": "cs", "df": "satterthwaite"},
             {"name": "mmrm", "baseline": "change", "crossover": "slots", "covariance": "csh", "df": "satterthwaite"}]
    blocks = []
    for spec in specs:  # one run each: the rows of one test, whatever order run_stats gives them
        out = run(edges, sessions, spec)
        out = out[out.term == "condition:window"].copy()
        out["edge"] = out["roi_a"] + "-" + out["roi_b"]
        blocks.append(out)

    def cmp(block, model, cols):
        r = ref[ref.model == model].set_index(["edge", "window"])
        o = block.set_index(["edge", "window"]).loc[r.index]
        assert o["reason"].isna().all()
        for mine, theirs in cols:
            np.testing.assert_allclose(o[mine].to_numpy(float), r[theirs].to_numpy(float), rtol=1e-5,
                                       err_msg=f"{model} {mine}")
        return len(r)

    assert cmp(blocks[0], "difference", [("estimate", "estimate"), ("se", "se"), ("df", "df")]) == 12
    assert cmp(blocks[1], "slots_cs", [("estimate", "estimate"), ("se", "se")]) == 12
    assert cmp(blocks[2], "slots_csh", [("estimate", "estimate"), ("se", "se")]) == 12

    # Kenward–Roger on the slots model: pbkrtest takes the covariance of θ̂ from the expected
    # information, so the same model matrices are fitted with it here (the plugin uses the observed one,
    # as SAS and the mmrm package do; both are checked against their references in test_kenward_roger).
    p = params("mmrm")
    design = make_design(p, edges, list(dict.fromkeys(edges["window"])), sessions=sessions)
    keys, delta, _, period = crossover.crossover_change(edges, design)
    X, names = crossover.crossover_model(design, period, None, "mmrm")
    fit = fit_mmrm(delta.reshape(len(keys), len(design.subjects), -1), X, "cs", df="kenward-roger",
                   information="expected")
    kr = contrast_table(fit, keys, design, names, None, terms=crossover.crossover_contrasts(
        design, names, [crossover.CONDITION_TERM]))
    kr["edge"] = kr["roi_a"] + "-" + kr["roi_b"]
    assert cmp(kr, "slots_cs", [("estimate", "estimate"), ("se", "se_kr"), ("df", "df_kr")]) == 12


def test_difference_mmrm_with_complete_data_is_hills_armitage(xo):
    """With complete data, a period effect per window and no covariates, every window of the MMRM on
    the differences has the same regressors, so GLS is OLS per window (Zellner) and its estimates are
    the Hills–Armitage ones (the two sequence means weighed equally)."""
    edges, sessions = xo
    res = run(edges, sessions, {"name": "mmrm", "baseline": "change", "period": "window"}, "change_welch")
    m = res[(res.test == "mmrm") & (res.term == "condition:window")].reset_index(drop=True)
    w = res[res.test == "change_welch"].reset_index(drop=True)
    np.testing.assert_allclose(m["estimate"], w["estimate"], rtol=1e-9, atol=1e-12)


def test_planted_effect_is_found_where_it_was_planted():
    edges, sessions = simulate_crossover_edges(study(n_ref=10, n_target=10), 4, 0.1)
    res = run(edges, sessions, "mmrm", "change_welch", {"name": "permutation", "n_perm": 2000},
              confirmatory=[(a, b) for a in ("Left_Amygdala", "Right_Amygdala") for b in ("vmPFC", "dmPFC", "amPFC")])
    hit = res[(res.term == "condition:window") & (res.p_adj < 0.05)]
    for test in ("mmrm", "change_welch", "permutation"):
        h = hit[hit.test == test]
        assert {(a, b, w) for a, b, w in zip(h.roi_a, h.roi_b, h.window)} >= {
            ("Left_Amygdala", "vmPFC", "10-20min"), ("Right_Amygdala", "vmPFC", "10-20min")}, test
        assert set(h.roi_b) <= {"vmPFC"} and "30-40min" not in set(h.window), test
        est = res[(res.test == test) & (res.roi_b == "vmPFC") & (res.window == "10-20min")
                  & res.roi_a.str.endswith("Amygdala")]["estimate"]
        assert (est < -0.2).all()


def test_counterfactual_truth_and_carryover():
    """The planted effect costs no random numbers, so the same seed without it is the counterfactual:
    the reference sessions are unchanged and the target sessions move on the planted edges (other
    edges only through the sample correlation of windows whose latent matrix changed: < 0.01); carry-over
    moves the reference session after the target one."""
    with_effect, s = simulate_crossover_edges(study(), 9)
    without, _ = simulate_crossover_edges(study(effects=()), 9)
    carried, _ = simulate_crossover_edges(study(), 9, carryover=0.5)
    diff = with_effect["value"] - without["value"]
    merged = with_effect.assign(diff=diff.to_numpy(), carry=(carried["value"] - with_effect["value"]).to_numpy())
    merged = merged.merge(s, on=["subject", "session"])
    planted = merged.roi_b.eq("vmPFC") & merged.roi_a.str.endswith("Amygdala") & merged.window.ne("baseline")
    assert (merged.loc[merged.condition == "placebo", "diff"].abs() < 1e-12).all()
    assert (merged.loc[merged.window == "baseline", "diff"].abs() < 1e-12).all()
    assert merged[~planted].groupby(["roi_a", "roi_b", "window"])["diff"].mean().abs().max() < 0.01
    drug = merged[planted & (merged.condition == "ketamine")].groupby("window")["diff"].mean()
    assert drug.idxmin() == "10-20min" and drug["10-20min"] < -0.3 and drug["30-40min"] > -0.05
    later = (merged.condition == "placebo") & (merged.period == 2) & merged.window.ne("baseline")
    assert (merged.loc[~later, "carry"].abs() < 1e-12).all()
    carried = merged[later & planted].groupby("window")["carry"].mean()
    assert carried.idxmin() == "10-20min" and carried["10-20min"] < -0.15
    assert merged[later & ~planted].groupby(["roi_a", "roi_b", "window"])["carry"].mean().abs().max() < 0.01


def test_sessions_table_errors_name_the_subject(xo):
    edges, sessions = xo
    bad = sessions.copy()
    bad.loc[0, "condition"] = "ketamine"  # subject 00 now has ketamine twice
    with pytest.raises(DataError, match=r"^sessions table: sub-00: a crossover subject needs one session of each"):
        run(edges, bad, "change_welch")
    bad = sessions.copy()
    bad["period"] = bad["period"].astype(object)
    bad.loc[3, "period"] = "x"
    with pytest.raises(DataError, match=r"^sessions table: sub-03 ses-1: period 'x' is not 1 or 2$"):
        run(edges, bad, "change_welch")
    with pytest.raises(DataError, match="condition 'drug' is not one of stats.groups"):
        run(edges, sessions.replace({"condition": {"ketamine": "drug"}}), "change_welch")
    with pytest.raises(DataError, match=r"sub-00: a crossover subject needs one session of each condition "
                       r"\(placebo, ketamine\) in periods 1 and 2 \(has ses-2: ketamine, period 2\)$"):
        run(edges, sessions.iloc[1:], "change_welch")
    stray = edges.assign(session=np.where((edges.subject == "01") & (edges.session == "2"), "3", edges.session))
    with pytest.raises(DataError, match=r"^sessions table: sub-01 ses-3 has edges but no row"):
        run(stray, sessions, "change_welch")
    with pytest.raises(DataError, match="needs the sessions table"):
        run(edges, None, "change_welch")


def test_a_parallel_only_test_is_refused_in_one_line(xo):
    edges, sessions = xo
    with pytest.raises(ParamsError, match=r"^stats.tests: lmm does not handle a crossover design"):
        run(edges, sessions, "mmrm", "lmm")
    with pytest.raises(DataError, match="contrast 'group:window' is not a term of this crossover design"):
        run(edges, sessions, {"name": "mmrm", "contrasts": ["group:window"]})
    with pytest.raises(DataError, match="covariance ar1"):
        run(edges, sessions, {"name": "mmrm", "covariance": "ar1", "crossover": "slots"})


def test_a_subject_with_one_session_is_left_out(xo):
    edges, sessions = xo
    one = edges[~((edges.subject == "00") & (edges.session == "2"))]
    res = run(one, sessions, "change_welch")
    assert (res["n"] == 12).all()


def test_default_mmrm_standard_errors_match_the_spread_of_its_estimates_on_null_studies():
    """Over null crossover studies (a period effect, no drug effect) mmrm's estimates spread as its SEs
    say, cell by cell (benchmarks/calibration_crossover.py has the error rates): the ratio of the
    estimates' SD to the mean SE is near 1 for the default (baseline: change) and for the baselines'
    difference as a covariate, unlike a model that centred that covariate at its sample mean (1.5:
    its SE left out the spread of that mean). The covariate's gain shows: its SEs are smaller."""
    st = study(n_ref=13, n_target=13, effects=())
    frames = []
    for seed in range(40):
        edges, sessions = simulate_crossover_edges(st, [77, seed], 0.1)
        frames.append(run(edges, sessions, "mmrm").assign(seed=seed, model="change"))
        frames.append(run(edges, sessions, {"name": "mmrm", "baseline": "covariate"}).assign(seed=seed, model="covariate"))
    res = pd.concat(frames)
    res = res[res.term == "condition:window"]
    se = {}
    for model, f in res.groupby("model"):
        by = f.groupby(["roi_a", "roi_b", "window"])
        ratio = by["estimate"].std() / by["se"].mean()
        assert len(ratio) == 40 and 0.85 < ratio.mean() < 1.15, (model, ratio.describe())
        assert abs(by["estimate"].mean().mean()) < 0.01, model
        se[model] = f["se"].mean()
    assert se["covariate"] < 0.85 * se["change"]


def test_a_crossover_params_file_is_refused_before_any_work(tmp_path):
    """Until the stages carry sessions, stats.design: crossover in params.yaml is a one-line error at
    validation, not a failure after extraction."""
    import yaml

    from fclab.framework.params import load_params

    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    raw["stats"]["design"] = "crossover"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"^stats.design: crossover is not yet carried by the extract and "
                       r"connectivity stages .*run_stats\(\.\.\., sessions=\.\.\.\)"):
        load_params(tmp_path / "params.yaml")
