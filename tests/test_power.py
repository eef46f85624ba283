"""ROI-level simulation, null calibration and power: checked against the planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from fclab.framework.params import StatsParams
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.simulation.power import detectable_effect, rates, simulate_many
from fclab.framework.simulation.roi_level import RoiStudy, simulate_edges
from conftest import default_params, run_cli_in, write_params

STATS = StatsParams(
    tests=["mmrm", "change_welch", "ancova", {"name": "permutation", "n_perm": 199}],
    confirmatory=[("Left_Amygdala", "vmPFC"), ("Right_Amygdala", "vmPFC"), ("Left_Amygdala", "dmPFC"),
                  ("Right_Amygdala", "dmPFC"), ("Left_Amygdala", "amPFC"), ("Right_Amygdala", "amPFC")],
)
EDGE, WINDOW = ("Left_Amygdala", "vmPFC"), "10-20min"


def test_planted_effect_appears_on_the_fisher_z_scale():
    study = RoiStudy(n_ref=200, n_target=200, effect=(*EDGE, WINDOW, 0.3), state_jitter_r=0.0)
    edges = simulate_edges(study, 0)
    e = edges[(edges["roi_a"] == EDGE[0]) & (edges["roi_b"] == EDGE[1])]
    wide = e.pivot(index=["subject", "group"], columns="window", values="value")
    delta = (wide[WINDOW] - wide["baseline"]).groupby(level="group").mean()
    # Target minus reference change ≈ −0.3 (sampling error of 200 per group: SE ≈ 0.02).
    assert delta["ketamine"] - delta["midazolam"] == pytest.approx(-0.3, abs=0.06)
    other = edges[(edges["roi_a"] == "dmPFC") & (edges["roi_b"] == "amPFC")]
    wide = other.pivot(index=["subject", "group"], columns="window", values="value")
    d = (wide[WINDOW] - wide["baseline"]).groupby(level="group").mean()
    assert abs(d["ketamine"] - d["midazolam"]) < 0.06


def test_null_false_positive_rates_within_a_wide_band():
    """About 200 realistic null studies: the rates of the calibrated tests near α."""
    out = simulate_many(RoiStudy(), STATS, build_all("test", STATS.tests), 200, 7, EDGE, WINDOW, jobs=2)
    r = rates(out)
    r = r[r["outcome"].isin(["single", "confirmatory", "exploratory"]) & (r["term"] != "group:trend")]
    assert len(r) == 4 * 3
    assert r["n_sims"].eq(200).all()
    for row in r.itertuples():
        # Two-sided binomial test of rate = 0.05 at level 0.001: a miscalibrated test fails.
        p = st.binomtest(int(round(row.rate * 200)), 200, 0.05).pvalue
        assert p > 0.001, f"{row.test} {row.term} {row.outcome}: rate {row.rate:.3f}"


def test_detectable_effect_interpolates_the_curve():
    curve = pd.DataFrame({"test": "t", "term": "x", "outcome": "single_adj",
                          "delta_z": [0.0, 0.2, 0.4], "rate": [0.05, 0.6, 0.9]})
    got = detectable_effect(curve)["delta_z"].iloc[0]
    assert got == pytest.approx(0.2 + 0.2 * (0.8 - 0.6) / 0.3)
    assert np.isnan(detectable_effect(curve.assign(rate=[0.05, 0.1, 0.2]))["delta_z"].iloc[0])


def test_power_command_writes_csv_and_png(tmp_path):
    write_params(tmp_path, default_params())
    code, out, err = run_cli_in(tmp_path, "power", "--n-sims", "10", "--delta-z", "0", "--delta-z", "0.8",
                     "--window", "10-20min")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "reports" / "power" / "power.csv")
    assert set(table["delta_z"]) == {0.0, 0.8}
    big = table[(table["delta_z"] == 0.8) & (table["outcome"] == "single_adj") & (table["test"] == "lmm")]
    assert big["rate"].iloc[0] >= 0.9  # Δz = 0.8 is ~3 times the SE of the contrast
    assert (tmp_path / "reports" / "power" / "power.png").stat().st_size > 10_000
    assert "80% power: lmm (group:window)" in out
    code, _, err = run_cli_in(tmp_path, "power", "--window", "nope", "--n-sims", "10")
    assert code == 1 and "--window: 'nope'" in err


def _between_subject_sd(edges):
    wide = edges.pivot_table(index=["roi_a", "roi_b", "subject"], columns="window", values="value")
    group = edges.drop_duplicates("subject").set_index("subject")["group"]
    g = group.reindex(wide.index.get_level_values("subject")).to_numpy()
    e = wide.index.droplevel("subject")
    return {w: pd.DataFrame({"v": wide[w].to_numpy(), "g": g, "e": e}).groupby(["e", "g"])["v"].std().mean()
            for w in wide.columns}


def test_short_separately_cleaned_baseline_run_spreads_more():
    """The baseline is its own 8-min run: after confound regression it keeps fewer degrees of freedom
    than a 10-min window of the 41-min infusion run, so it spreads more across subjects (the voxel
    simulation shows ~1.2×); with no confounds and equal lengths the windows are exchangeable."""
    from dataclasses import replace

    study = RoiStudy()
    sd = pd.DataFrame([_between_subject_sd(simulate_edges(study, s)) for s in range(6)]).mean()
    infusion = sd.drop("baseline")
    assert sd["baseline"] > 1.1 * infusion.max(), sd
    flat = replace(study, n_confounds=0, detrend=False, high_pass=None, runs={"baseline": 264, "infusion": 984},
                   windows={"baseline": ("baseline", 12, 240), **{k: v for k, v in study.windows.items() if k != "baseline"}})
    sd = pd.DataFrame([_between_subject_sd(simulate_edges(flat, s)) for s in range(6)]).mean()
    assert sd["baseline"] < 1.08 * sd.drop("baseline").mean(), sd


def test_planted_effects_follow_the_simulate_description():
    """simulate.effects at ROI level: a signed step in the reference group, on the planted edge and
    windows only; the window's mean Δr is what is planted."""
    from dataclasses import replace

    from fclab.framework.params import EffectSpec

    step = EffectSpec(roi_a="dmPFC", roi_b="amPFC", group="midazolam", delta_r=0.3, course="step",
                      start_min=20, end_min=40)
    study = replace(RoiStudy(n_ref=150, n_target=150, run_jitter_r=0.0, state_jitter_r=0.0), effects=(step,))
    edges = simulate_edges(study, 3)
    wide = edges.pivot_table(index=["roi_a", "roi_b", "group"], columns="window", values="value")
    change = wide.sub(wide["baseline"], axis=0).drop(columns="baseline")
    mid = change.loc[("dmPFC", "amPFC", "midazolam")]
    ket = change.loc[("dmPFC", "amPFC", "ketamine")]
    r0 = 0.5  # BASE_CORR[dmPFC, amPFC]; measured z is attenuated by noise, so compare the contrast
    assert (mid[["20-30min", "30-40min"]] - ket[["20-30min", "30-40min"]]).min() > 0.15
    # Null contrasts: SE ≈ 0.18 √(2/150) ≈ 0.02 each, so |difference| < 0.1 (5 SE) everywhere.
    assert (mid[["0-10min", "10-20min"]] - ket[["0-10min", "10-20min"]]).abs().max() < 0.1
    others = change.drop(index=[("dmPFC", "amPFC", "midazolam"), ("dmPFC", "amPFC", "ketamine")])
    diff = others.xs("midazolam", level="group") - others.xs("ketamine", level="group")
    assert diff.abs().to_numpy().max() < 0.1
    assert np.arctanh(r0 + 0.3) - np.arctanh(r0) > 0.15  # the latent shift the contrast reflects


@pytest.mark.parametrize("spec, message", [
    ({"roi_a": "vmPFC", "roi_b": "vmPFC", "delta_r": 0.1}, "two different ROIs"),
    ({"roi_a": "vmPFC", "roi_b": "dmPFC", "delta_r": 0.1, "course": "step", "start_min": 5}, "end_min > start_min"),
    ({"roi_a": "vmPFC", "roi_b": "dmPfc", "delta_r": 0.1}, "roi_b"),
    ({"roi_a": "vmPFC", "roi_b": "dmPFC", "delta_r": 1.2}, "delta_r"),
])
def test_bad_effects_are_params_errors(tmp_path, spec, message):
    params = default_params()
    params["simulate"]["effects"] = [spec]
    write_params(tmp_path, params)
    code, _, err = run_cli_in(tmp_path, "validate", "--params-only")
    assert code == 2 and "simulate.effects[0]" in err and message in err, err


def test_effects_that_break_the_correlation_matrix_are_refused(tmp_path):
    from fclab.framework.errors import ParamsError
    from fclab.framework.params import SimulateParams
    from fclab.framework.simulation.study import simulate

    p = SimulateParams(effects=[{"roi_a": "Left_Amygdala", "roi_b": "dmPFC", "delta_r": -0.9, "course": "step",
                                 "start_min": 0, "end_min": 10}], output_dir=str(tmp_path / "sim"))
    with pytest.raises(ParamsError, match="simulate.effects: the planted correlations for ketamine"):
        simulate(p)
    assert not (tmp_path / "sim").exists()


def test_power_of_the_planted_effects(tmp_path):
    write_params(tmp_path, default_params())
    code, out, err = run_cli_in(tmp_path, "power", "--planted", "--n-sims", "20", "--delta-z", "0",
                                "--delta-z", "1.5")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "reports" / "power" / "power.csv")
    assert set(table["edge"]) <= {"Left_Amygdala~vmPFC", "Right_Amygdala~vmPFC"} and set(table["window"]) == {"10-20min"}
    mmrm = table[(table["test"] == "mmrm") & (table["outcome"] == "single_adj") & (table["term"] == "group:window")]
    assert mmrm.set_index("scale")["rate"][1.5] >= 0.8 and mmrm.set_index("scale")["rate"][0.0] <= 0.2
