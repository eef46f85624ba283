"""The report's QC numbers against closed forms, scipy, statsmodels and nilearn: DVARS, the carpet,
motion per window and group, outlier subjects and QC-FC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from fclab.framework.report import qc
from fclab.framework.extraction.runqc import CARPET_LEVELS, CARPET_Z, carpet_png, dvars, read_carpet, voxel_sample


def test_dvars_closed_form():
    """Every voxel steps up by 2 % of its level at volume 5 and back at volume 8. Each voxel's mean is
    its level × (1 + 3 × 0.02 / 12) = × 1.005, so in percent of the mean each step is 2 / 1.005 in every
    voxel: DVARS is that at volumes 5 and 8, 0 elsewhere, and missing at volume 0."""
    level = np.ones(12)
    level[5:8] = 1.02
    raw = np.array([50.0, 100.0, 400.0])[:, None] * level
    expected = np.zeros(12)
    expected[[5, 8]] = 2 / 1.005
    d = dvars(raw, np.arange(12), 12)
    assert np.isnan(d[0])
    np.testing.assert_allclose(d[1:], expected[1:], atol=1e-12)


def test_dvars_after_censoring_skips_gaps():
    """After denoising only consecutive retained volumes have a DVARS; a volume after a censored one has
    none. Voxels with a non-positive mean (outside the signal) are left out."""
    rng = np.random.default_rng(0)
    raw = 100 + rng.normal(size=(4, 10))
    raw[3] = 0.0  # an empty voxel
    kept = np.array([0, 1, 2, 5, 6, 9])
    clean = rng.normal(size=(4, kept.size))
    d = dvars(raw, kept, 10, clean)
    mean = raw[:3].mean(axis=1)
    psc = 100 * clean[:3] / mean[:, None]
    assert np.isnan(d[[0, 3, 4, 5, 7, 8, 9]]).all()
    assert d[1] == pytest.approx(np.sqrt(np.mean((psc[:, 1] - psc[:, 0]) ** 2)))
    assert d[6] == pytest.approx(np.sqrt(np.mean((psc[:, 4] - psc[:, 3]) ** 2)))


def test_voxel_sample_spreads_over_the_mask():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 2:8] = True
    few = voxel_sample(mask, 1000)
    assert few.size == 216 and np.array_equal(few, np.flatnonzero(mask.ravel()))
    some = voxel_sample(mask, 50)
    assert some.size == 50 and mask.ravel()[some].all()
    assert set(np.unravel_index(some, mask.shape)[0]) == set(range(2, 8))  # every slab of the mask


def test_carpet_round_trip():
    """Rows z-scored over time, clipped to ±3, in 15 levels: the stored value is within half a step of
    the z-score; censored volumes of the denoised half read back as 0 (the mean)."""
    rng = np.random.default_rng(1)
    raw = 100 + 5 * rng.normal(size=(40, 30))
    kept = np.setdiff1d(np.arange(30), [4, 5, 17])
    clean = rng.normal(size=(40, kept.size))
    before, after = read_carpet(carpet_png(raw, kept, 30, clean))
    assert before.shape == after.shape == (40, 30)
    z = st.zscore(raw, axis=1)
    step = 2 * CARPET_Z / (CARPET_LEVELS - 1)
    assert np.abs(np.clip(z, -CARPET_Z, CARPET_Z) - before).max() <= step / 2 + 1e-9
    np.testing.assert_array_equal(after[:, [4, 5, 17]], 0.0)
    assert np.abs(np.clip(st.zscore(clean, axis=1), -3, 3) - after[:, kept]).max() <= step / 2 + 1e-9


def motion_table(seed=0, n=12, extra=3.0):
    """Subjects 00-05 reference, 06-11 target; target subjects move ``extra`` times more after 300 s."""
    rng = np.random.default_rng(seed)
    rows, cuts = [], []
    for s in range(n):
        g = "ref" if s < n // 2 else "target"
        fd = rng.gamma(4, 0.04, 240)
        if g == "target":
            fd[120:] *= extra
        cens = fd > 0.5
        rows.append(pd.DataFrame({"subject": f"{s:02d}", "run": "r1", "volume": np.arange(240),
                                  "framewise_displacement": fd, "censored": cens}))
        cuts += [{"subject": f"{s:02d}", "group": g, "run": "r1", "window": w, "kind": "fixed",
                  "window_start_s": a, "window_end_s": b, "tr_s": 2.5} for w, (a, b) in
                 {"early": (0.0, 300.0), "late": (300.0, 600.0), "mid": (150.0, 450.0)}.items()]
    return pd.concat(rows, ignore_index=True), pd.DataFrame(cuts)


def test_window_motion_by_hand_and_group_tests():
    motion, cuts = motion_table()
    wm = qc.window_motion(motion, cuts)
    one = motion[(motion["subject"] == "07") & (motion["volume"] >= 60) & (motion["volume"] < 180)]  # 150-450 s
    row = wm[(wm["subject"] == "07") & (wm["window"] == "mid")].iloc[0]
    assert row["n_volumes"] == 120
    assert row["mean_fd"] == pytest.approx(one["framewise_displacement"].mean())
    assert row["censored"] == pytest.approx(one["censored"].mean())
    t = qc.window_motion_tests(wm, ["ref", "target"], ["early", "mid", "late"]).set_index(["measure", "window"])
    late = wm[wm["window"] == "late"]
    ref = st.mannwhitneyu(late.loc[late["group"] == "target", "mean_fd"], late.loc[late["group"] == "ref", "mean_fd"])
    assert t.loc[("mean_fd", "late"), "p"] == pytest.approx(ref.pvalue)
    assert t.loc[("mean_fd", "late"), "mean_target"] == pytest.approx(late.loc[late["group"] == "target", "mean_fd"].mean())
    p = t.loc["mean_fd", "p"].reindex(["early", "mid", "late"]).to_numpy()
    order = np.argsort(p)  # Holm by hand: step-down, monotone, capped at 1
    holm = np.minimum(1, np.maximum.accumulate((3 - np.arange(3)) * p[order]))
    np.testing.assert_allclose(t.loc["mean_fd", "p_holm"].reindex(["early", "mid", "late"]).to_numpy()[order], holm)
    # The planted motion: the groups differ late, not early.
    assert t.loc[("mean_fd", "late"), "p_holm"] < 0.01 < t.loc[("mean_fd", "early"), "p"]


def test_no_censoring_gives_no_test():
    motion, cuts = motion_table()
    motion["censored"] = False
    t = qc.window_motion_tests(qc.window_motion(motion, cuts), ["ref", "target"], ["early", "late"])
    cens = t[t["measure"] == "censored"]
    assert cens["p"].isna().all() and cens["p_holm"].isna().all() and (cens["difference"] == 0).all()


def test_outliers_are_named_on_the_bad_side_only():
    rng = np.random.default_rng(3)
    subjects = pd.DataFrame({"subject": [f"{i:02d}" for i in range(20)], "group": ["a", "b"] * 10,
                             "mean_fd": rng.normal(0.15, 0.01, 20), "max_fd": rng.normal(1, 0.1, 20),
                             "censored": 0.0, "dvars_clean": rng.normal(0.8, 0.05, 20),
                             "min_tsnr": rng.normal(40, 2, 20), "min_coverage": 1.0})
    subjects.loc[4, "mean_fd"] = 0.6  # a mover
    subjects.loc[9, "min_tsnr"] = 80.0  # unusually good tSNR: not a problem
    subjects.loc[11, "min_tsnr"] = 10.0  # poor tSNR
    out = qc.outliers(subjects)
    flagged = set(zip(out["subject"], out["measure"]))
    assert ("04", "mean_fd") in flagged and ("11", "min_tsnr") in flagged
    assert ("09", "min_tsnr") not in flagged
    assert not any(m in ("censored", "min_coverage") for _, m in flagged)  # no spread: nobody is an outlier
    q1, q3 = np.percentile(subjects["mean_fd"], [25, 75])
    assert out.set_index(["subject", "measure"]).loc[("04", "mean_fd"), "fence"] == pytest.approx(q3 + 1.5 * (q3 - q1))


def test_qc_fc_is_the_pearson_correlation_with_mean_fd():
    rng = np.random.default_rng(4)
    rows = [{"subject": f"{s:02d}", "window": w, "roi_a": a, "roi_b": b, "value": rng.normal()}
            for s in range(10) for w in ("w0", "w1") for a, b in (("A", "B"), ("A", "C"))]
    edges = pd.DataFrame(rows)
    run_qc = pd.DataFrame({"subject": [f"{s:02d}" for s in range(10) for _ in range(2)],
                           "mean_fd": rng.uniform(0.05, 0.4, 20)})
    q = qc.qc_fc_all(edges, run_qc, ["w0", "w1"]).set_index(["window", "roi_a", "roi_b"])
    fd = run_qc.groupby("subject")["mean_fd"].mean()
    e = edges[(edges["window"] == "w1") & (edges["roi_b"] == "C")]
    ref = st.pearsonr(e["subject"].map(fd), e["value"])
    assert q.loc[("w1", "A", "C"), "qc_fc_r"] == pytest.approx(ref.statistic, rel=1e-12)
    assert q.loc[("w1", "A", "C"), "p"] == pytest.approx(ref.pvalue, rel=1e-9)
    summary = qc.qc_fc_summary(q.reset_index(), 0.05).set_index("window")
    assert summary.loc["w0", "median_abs_r"] == pytest.approx(np.median(np.abs(q.loc["w0", "qc_fc_r"])))


def test_methods_count_the_censored_volumes():
    from fclab.framework.report.methods import censoring_text

    run_qc = pd.DataFrame({"subject": ["01", "01", "02"], "run": ["a", "b", "a"], "n_volumes": [100, 200, np.nan],
                           "n_retained": [90, 200, np.nan], "reason": ["", "", "skipped: unreadable"]})
    assert censoring_text(run_qc) == "; this censored 10 of 300 volumes (3.3 %; 0.0–10.0 % per run)"
