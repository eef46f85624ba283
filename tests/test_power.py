"""ROI-level simulation, null calibration and power: checked against the planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from framework.params import StatsParams
from framework.power import detectable_effect, rates, simulate_many
from framework.roisim import RoiStudy, simulate_edges
from conftest import default_params, run_cli_in, write_params

STATS = StatsParams(
    tests=["lmm", "change_welch", "change_mannwhitney", "ancova", {"name": "permutation", "n_perm": 199}],
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
    """About 200 null studies: every test's single-hypothesis rate and family-wise rates near α."""
    out = simulate_many(RoiStudy(), STATS, 200, 7, EDGE, WINDOW, jobs=2)
    r = rates(out)
    r = r[r["outcome"].isin(["single", "confirmatory", "exploratory"]) & (r["term"] != "group:trend")]
    assert len(r) == 5 * 3 + 3  # lmm has two terms here (group:window, group)
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
