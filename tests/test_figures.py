"""The numbers behind the report's QC and matrix figures, against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fclab.framework.report.figures import group_matrices


def table(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(10):
        g = "ref" if s < 5 else "target"
        for w, (lo, hi) in {"baseline": (0, 480), "w1": (60, 660)}.items():
            for a, b in (("A", "B"), ("A", "C"), ("B", "C")):
                rows.append({"subject": f"{s:02d}", "group": g, "window": w, "roi_a": a, "roi_b": b,
                             "value": rng.normal(), "window_start_s": lo, "window_end_s": hi,
                             "n_volumes": (hi - lo) / 2.5 - (s if w == "w1" else 0)})
    edges = pd.DataFrame(rows)
    run_qc = pd.DataFrame({"subject": [f"{s:02d}" for s in range(10) for _ in range(2)],
                           "group": ["ref"] * 10 + ["target"] * 10, "tr_s": 2.5,
                           "mean_fd": rng.uniform(0.05, 0.4, 20)})
    return edges, run_qc


def test_group_matrices_and_difference():
    edges, _ = table(1)
    mats = group_matrices(edges, ["A", "B", "C"], ("ref", "target"), ["w1"])
    means = edges[edges["window"] == "w1"].pivot_table(index="group", columns=["roi_a", "roi_b"], values="value")
    assert mats["target", "w1"][0, 2] == pytest.approx(means.loc["target", ("A", "C")])
    assert mats["target", "w1"][2, 0] == mats["target", "w1"][0, 2]  # symmetric
    assert mats["difference", "w1"][1, 2] == pytest.approx(means.loc["target", ("B", "C")] - means.loc["ref", ("B", "C")])
    assert np.isnan(mats["ref", "w1"][0, 0])


def test_matrix_colours_follow_the_sign_of_the_values():
    """Signed values (correlations) get a diverging map centred on 0; values that are never negative
    (coherence, mutual information) a sequential map from 0; a difference is always signed."""
    from fclab.framework.report.figures import value_colours

    assert value_colours(np.array([-0.2, 0.5, np.nan])) == ("RdBu_r", -0.5, 0.5)
    assert value_colours(np.array([0.1, 0.7, np.nan])) == ("viridis", 0.0, 0.7)
    assert value_colours(np.array([0.1, 0.7]), signed=True) == ("RdBu_r", -0.7, 0.7)
    assert value_colours(np.array([np.nan])) == ("viridis", 0.0, 1.0)


def test_figures_go_to_confirmatory_edges_or_the_strongest_of_a_connectome():
    from fclab.framework.report.summaries import FIGURE_EDGES, figure_edges

    rng = np.random.default_rng(5)
    pairs = [(f"R{i:02d}", f"R{j:02d}") for i in range(9) for j in range(i + 1, 9)]  # 36 edges
    primary = pd.DataFrame({"roi_a": [a for a, _ in pairs] * 2, "roi_b": [b for _, b in pairs] * 2,
                            "p_adj": rng.uniform(size=72), "estimate": rng.normal(size=72)})
    primary.loc[3, "p_adj"] = np.nan  # no p: sorted last
    chosen, note = figure_edges([], primary, pairs)
    assert len(chosen) == FIGURE_EDGES == 24 and "24 of 36 edges" in note
    best = primary.dropna().groupby(["roi_a", "roi_b"])["p_adj"].min().sort_values()
    assert chosen[:5] == list(best.index[:5])
    assert figure_edges([("R03", "R01")], primary, pairs) == ([("R01", "R03")], "")  # oriented as in the data
    assert figure_edges([], primary, pairs[:10]) == (pairs[:10], "")


def test_group_means_and_intervals_match_scipy_per_group():
    """The report's per-group summaries (one groupby) against scipy's t interval on each group's finite
    values; a group of one has a mean and no interval; an edge × group × window without values is a
    row with n = 0."""
    from scipy import stats as st

    from fclab.framework.report.summaries import delta_summary, mean_ci_table

    rng = np.random.default_rng(7)
    rows = [{"roi_a": "A", "roi_b": b, "group": g, "window": w, "subject": f"{g}{s}", "delta": rng.normal(),
             "window_start_s": 60.0, "window_end_s": 660.0}
            for b in ("B", "C") for g in ("ref", "target") for w in ("w1", "w2") for s in range(6)]
    frame = pd.DataFrame(rows)
    frame.loc[3, "delta"] = np.nan
    frame = frame[~((frame["roi_b"] == "C") & (frame["group"] == "target") & (frame["window"] == "w2"))]
    frame = frame[~((frame["roi_b"] == "C") & (frame["group"] == "ref") & (frame["window"] == "w2")
                    & (frame["subject"] != "ref0"))]
    table = mean_ci_table(frame, ["roi_a", "roi_b", "group", "window"], "delta", 0.01, sort=False)
    v = frame[(frame["roi_b"] == "B") & (frame["group"] == "ref") & (frame["window"] == "w1")]["delta"].dropna()
    lo, hi = st.t.interval(0.99, len(v) - 1, loc=v.mean(), scale=st.sem(v))
    got = table.loc[("A", "B", "ref", "w1")]
    assert got["n"] == 5 and got["mean"] == pytest.approx(v.mean()) and (got["ci_low"], got["ci_high"]) == (
        pytest.approx(lo), pytest.approx(hi))
    one = table.loc[("A", "C", "ref", "w2")]
    assert one["n"] == 1 and np.isfinite(one["mean"]) and np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])
    summary = delta_summary(frame, ["ref", "target"], ["w1", "w2"], 0.01)
    assert len(summary) == 2 * 2 * 2 and list(summary["edge"].unique()) == ["A~B", "A~C"]
    empty = summary[(summary["edge"] == "A~C") & (summary["group"] == "target") & (summary["window"] == "w2")].iloc[0]
    assert empty["n"] == 0 and np.isnan(empty["mean_delta"])
    assert (summary.loc[summary["n"] > 0, "window_mid_min"] == 6.0).all()  # (60 + 660) / 2 s from the run start


def test_connectome_figure_draws_the_significant_edges_capped_per_window(tmp_path):
    """The glass brain of a test's group:window rows: edges with adjusted p < alpha only, at most
    ``top`` per window (the smallest adjusted p), none for a window without any."""
    from fclab.framework.report.figures import connectome_figure

    rng = np.random.default_rng(0)
    rois = [f"r{k:02d}" for k in range(12)]
    atlas = pd.DataFrame({"roi": rois, "x_mm": rng.uniform(-60, 60, 12), "y_mm": rng.uniform(-90, 60, 12),
                          "z_mm": rng.uniform(-30, 60, 12)})
    iu = np.triu_indices(12, 1)
    rows = []
    for w, n_sig in (("w1", 7), ("w2", 0), ("w3", 50)):
        p = np.ones(iu[0].size)
        p[:n_sig] = np.linspace(1e-4, 0.04, n_sig) if n_sig else p[:0]
        rows.append(pd.DataFrame({"roi_a": np.array(rois)[iu[0]], "roi_b": np.array(rois)[iu[1]], "window": w,
                                  "estimate": rng.normal(size=iu[0].size), "p_adj": p}))
    results = pd.concat(rows, ignore_index=True)
    drawn = connectome_figure(results, atlas, ["w1", "w2", "w3"], 0.05, "test", tmp_path / "c.png", top=40)
    assert drawn == 7 + 0 + 40
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_reused_subject_figures_draw_what_fresh_ones_draw(tmp_path):
    """Carpet and subject-matrix figures are built once per process and redrawn: a figure drawn after
    others (censored marks to remove, another length, colours judged from values of the other sign)
    has the bytes of one drawn in a fresh template."""
    import matplotlib.pyplot as plt

    from fclab.framework.report import figures as fg

    rng = np.random.default_rng(0)

    def motion(T, censored):
        c = np.zeros(T, bool)
        c[censored] = True
        return pd.DataFrame({"volume": np.arange(T), "framewise_displacement": np.r_[np.nan, rng.random(T - 1)],
                             "censored": c, "dvars_raw": rng.random(T) * 3, "dvars_clean": rng.random(T)})

    rois = ["a", "b", "c"]

    def edges(sign):
        return pd.DataFrame([(w, rois[i], rois[j], sign * rng.random()) for w in ("w1", "w2")
                             for i in range(3) for j in range(i + 1, 3)], columns=["window", "roi_a", "roi_b", "value"])

    def fresh():
        for fig in [fg._CARPET.get("fig")] + [f for f, _ in fg._MATRICES.values()]:
            if fig is not None:
                plt.close(fig)
        fg._CARPET.clear()
        fg._MATRICES.clear()

    first = (motion(90, [4, 40]), (rng.standard_normal((20, 90)), rng.standard_normal((20, 90))))
    second = (motion(150, []), (rng.standard_normal((30, 150)), rng.standard_normal((25, 150))))
    up, down = edges(1), edges(-1)
    fresh()
    fg.carpet_figure(*first, 2.0, "first", tmp_path / "a.jpg")
    fg.carpet_figure(*second, 2.0, "second", tmp_path / "reused.jpg")
    fg.subject_matrices_figure(up, rois, ["w1", "w2"], "value", tmp_path / "a.png")
    fg.subject_matrices_figure(down, rois, ["w1", "w2"], "value", tmp_path / "reused.png")
    fresh()
    fg.carpet_figure(*second, 2.0, "second", tmp_path / "fresh.jpg")
    fg.subject_matrices_figure(down, rois, ["w1", "w2"], "value", tmp_path / "fresh.png")
    for ext in ("jpg", "png"):
        assert (tmp_path / f"reused.{ext}").read_bytes() == (tmp_path / f"fresh.{ext}").read_bytes(), ext
    assert (tmp_path / "a.jpg").read_bytes() != (tmp_path / "fresh.jpg").read_bytes()  # the runs differ


def test_the_kept_2mm_template_is_nilearns(tmp_path, monkeypatch):
    """The ROI figures' background, kept beside the per-run cache, is nilearn's 2 mm MNI152 template:
    the same voxels and affine when built and when read back."""
    from nilearn.datasets import load_mni152_template

    from fclab.framework.report.figures import mni152_background

    monkeypatch.setenv("FCLAB_CACHE", str(tmp_path / "cache"))
    ref = load_mni152_template(resolution=2)
    for _ in range(2):  # built (and stored), then read from the store
        img = mni152_background()
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.asanyarray(ref.dataobj))
        assert np.asanyarray(img.dataobj).dtype == np.asanyarray(ref.dataobj).dtype
        np.testing.assert_array_equal(img.affine, ref.affine)
    assert len(list((tmp_path / "cache/report").glob("mni152-*.npz"))) == 1


def test_the_glass_brain_draws_midline_edges_in_both_sagittal_views():
    """nilearn's left view draws an edge only when both ends have x < 0 and its right view only when both
    have x >= 0, so an amygdala-vmPFC edge (vmPFC at x = 0) was missing on the left. With the midline
    copies, each sagittal view draws every edge whose ends lie on its side or on the midline (|x| <= 2
    mm), counted here from the lines nilearn drew."""
    import matplotlib.pyplot as plt
    from nilearn import plotting

    from fclab.framework.report.figures import MIDLINE_MM, midline_copies

    coords = np.array([[-22.0, -4, -18], [22, -4, -18], [0, 46, -10], [-0.5, 30, 30], [1.5, 20, 40], [-40, 10, 10]])
    rng = np.random.default_rng(1)
    mat = np.triu(rng.normal(size=(6, 6)) * (rng.random((6, 6)) < 0.7), 1)
    mat += mat.T
    x = coords[:, 0]
    mid = np.abs(x) <= MIDLINE_MM
    pairs = [(a, b) for a in range(6) for b in range(a + 1, 6) if mat[a, b]]
    want = {"l": sum(all(mid[e] or x[e] < 0 for e in p) for p in pairs),
            "r": sum(all(mid[e] or x[e] > 0 for e in p) for p in pairs)}
    assert want["l"] and want["r"]
    before = plotting.plot_connectome(mat, coords, display_mode="lzr", colorbar=False)
    assert len(before.axes["l"].ax.lines) < want["l"]  # the defect this guards against
    display = plotting.plot_connectome(*midline_copies(mat, coords), display_mode="lzr", colorbar=False)
    assert {v: len(display.axes[v].ax.lines) for v in "lr"} == want
    plt.close("all")
