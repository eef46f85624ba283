"""The planted effect on the measured scale (results/truth), against the simulation's latent truth."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd

from conftest import run_cli, small_params, write_params
from fclab.framework.connectome.edgestore import read_edges, write_edges
from fclab.framework.io import read_provenance
from fclab.framework.report.summaries import truth_contrasts as contrasts

WINDOWS = ["baseline", "0-10min", "10-20min"]
PLANTED = {("Left_Amygdala", "vmPFC"), ("Right_Amygdala", "vmPFC")}


def _contrasts(root):
    truth = pd.read_parquet(root / "results/truth/truth.parquet")
    return truth, contrasts(truth, ("midazolam", "ketamine"), WINDOWS, "baseline")


def test_measured_truth_against_the_latent_truth(ran_study):
    """Groups without an effect measure exactly zero (their data are identical by construction); the
    planted edges measure the planted sign, at between half and 1.1 times the latent Fisher-z change at
    the peak (attenuated by the analysis ROIs, noise and filtering); unplanted edges measure zero within their
    Monte Carlo error."""
    root, _, _ = ran_study
    truth, con = _contrasts(root)
    assert (truth.loc[truth["group"] == "midazolam", "measured_delta"] == 0).all()
    assert (truth.loc[truth["group"] == "midazolam", "n"] == 8).all()
    peak = con[con["window"] == "10-20min"]
    for a, b in PLANTED:
        row = peak[(peak["roi_a"] == a) & (peak["roi_b"] == b)].iloc[0]
        assert row["latent_delta_z"] < -0.3
        assert 1.1 * row["latent_delta_z"] < row["measured_delta"] < 0.5 * row["latent_delta_z"], row.to_dict()
        assert row["measured_se"] < 0.1 * abs(row["measured_delta"])
    null = con[[(a, b) not in PLANTED for a, b in zip(con["roi_a"], con["roi_b"])]]
    assert (null["latent_delta_z"].abs() < 1e-12).all()
    assert (null["measured_delta"].abs() < 4 * null["measured_se"] + 0.01).all(), null
    latent = json.loads((root / "results/truth/ground_truth.json").read_text())
    assert latent["simulated"] and latent["latent"]["seed"] == 1 and latent["measured"]


def test_report_compares_the_primary_test_with_the_planted_contrast(ran_study):
    root, _, _ = ran_study
    metrics = json.loads((root / "reports/metrics.json").read_text())
    planted = metrics["planted"]
    assert planted["family"] == "confirmatory" and planted["intervals"] == 12  # 6 edges x 2 windows
    assert planted["covering"] >= 10
    html = (root / "reports/index.html").read_text()
    assert "Planted effect (simulated study)" in html
    assert f"cover the planted contrast (measured scale) in {planted['covering']} of 12" in html


def _copy(ran_study, tmp_path, in_dir, params=None):
    root, _, _ = ran_study
    for d in ("results", "data"):
        shutil.copytree(root / d, tmp_path / d, symlinks=True)
    write_params(tmp_path, params or small_params())
    in_dir(tmp_path)


def test_stale_connectivity_is_an_error(ran_study, tmp_path, in_dir):
    _copy(ran_study, tmp_path, in_dir)
    path = tmp_path / "results/connectivity/edges.parquet"
    edges = read_edges(path)
    i = np.flatnonzero((edges.rows["group"] == "midazolam") & (edges.rows["window"] == "0-10min"))[0]
    edges.values = edges.values.copy()  # read-only: a view of the file's Arrow buffer
    edges.values[i, 0] += 0.01
    write_edges(edges, path, read_provenance(path))
    code, _, err = run_cli("truth")
    assert code == 1 and "stale" in err and len(err.strip().splitlines()) == 1, err


def test_simulated_data_from_other_params_is_an_error(ran_study, tmp_path, in_dir):
    params = small_params()
    params["simulate"]["thermal_noise"] = 12.0
    _copy(ran_study, tmp_path, in_dir, params)
    code, _, err = run_cli("truth")
    assert code == 1 and "other simulate params" in err, err


def test_no_truth_for_data_that_are_not_simulated(ran_study, tmp_path, in_dir):
    params = small_params()
    params["extract"]["data"]["root"] = "data/real"
    _copy(ran_study, tmp_path, in_dir, params)
    code, out, err = run_cli("truth")
    assert code == 0 and "not the simulated study" in out, err
    assert pd.read_parquet(tmp_path / "results/truth/truth.parquet").empty
    assert not json.loads((tmp_path / "results/truth/ground_truth.json").read_text())["simulated"]
