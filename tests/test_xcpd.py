"""XCP-D's outputs as fclab's input (extract.data.format: xcpd), on a small XCP-D-shaped tree built
here: six parcels of a toy atlas in MNI space, two runs per subject, linc-mode (censored rows
removed) and abcd-mode (every row, censored ones interpolated) subjects, dummy volumes, and raw
events outside the tree.

Checked against independent references: fclab's ROI series equal scipy's detrend and numpy's
z-score of the kept rows; each volume's time is (row's volume + dummy volumes) × TR; each window's
Pearson edge equals numpy's corrcoef over the kept volumes whose times fall in it; censored rows never
reach a window (their interpolated values are 1e3, which would dominate any correlation).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.signal import detrend

from conftest import default_params, run_cli_in, write_params

TR = 2.0
SPACE = "MNI152NLin6Asym"
ATLAS = "Toy"
PARCELS = ["LH_Amygdala", "RH_Amygdala", "LH_vmPFC", "RH_vmPFC", "LH_PCC", "RH_PCC"]
SUBJECTS = {"01": "placebo", "02": "placebo", "03": "placebo", "04": "drug", "05": "drug", "06": "drug"}
RUNS = {"1": 60, "2": 150}  # volumes XCP-D kept the rows of (after its dummy volumes)
ONSET_S = 40.0  # the infusion's onset in run 2, in the raw run's time


def write_xcpd_tree(root: Path, events_root: Path) -> dict:
    """The XCP-D derivatives and a raw BIDS tree of events; returns what was written per run."""
    rng = np.random.default_rng(31)
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "XCP-D", "BIDSVersion": "1.9.0",
                                                                "DatasetType": "derivative"}))
    atlas_dir = root / "atlases" / f"atlas-{ATLAS}"
    atlas_dir.mkdir(parents=True)
    affine = np.array([[4.0, 0, 0, -90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
    labels = np.zeros((46, 55, 46), np.int16)
    centres = {"LH_Amygdala": (-24, -4, -18), "RH_Amygdala": (24, -4, -18), "LH_vmPFC": (-6, 40, -14),
               "RH_vmPFC": (6, 40, -14), "LH_PCC": (-6, -52, 26), "RH_PCC": (6, -52, 26)}
    inv = np.linalg.inv(affine)
    for i, name in enumerate(PARCELS, start=1):
        ijk = np.rint(nib.affines.apply_affine(inv, centres[name])).astype(int)
        labels[ijk[0] - 1:ijk[0] + 1, ijk[1] - 1:ijk[1] + 2, ijk[2] - 1:ijk[2] + 1] = i
    stem = atlas_dir / f"atlas-{ATLAS}_space-{SPACE}_res-01_dseg"
    nib.save(nib.Nifti1Image(labels, affine), f"{stem}.nii.gz")
    pd.DataFrame({"index": range(1, 7), "label": PARCELS}).to_csv(f"{stem}.tsv", sep="\t", index=False)
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in SUBJECTS], "group": list(SUBJECTS.values())}
                 ).to_csv(root / "participants.tsv", sep="\t", index=False)
    written = {}
    for n, sub in enumerate(SUBJECTS):
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True)
        raw = events_root / f"sub-{sub}" / "func"
        raw.mkdir(parents=True)
        linc = n % 2 == 0  # alternate XCP-D's modes between subjects
        for run, T in RUNS.items():
            prefix = func / f"sub-{sub}_task-rest_run-{run}"
            dummy = 2 if run == "2" and n < 3 else 0
            flags = (rng.random(T) < 0.1).astype(int)
            flags[:3] = 0
            latent = rng.standard_normal((T, 3))
            mix = np.array([[1, 0.6, 0.2], [0.9, 0.7, 0.1], [0.3, 1, 0.2], [0.2, 0.9, 0.3], [0, 0.2, 1], [0.1, 0.1, 1]])
            series = latent @ mix.T + 0.5 * rng.standard_normal((T, 6)) + np.linspace(0, 3, T)[:, None]
            out = series.copy()
            if linc:
                out = out[flags == 0]
            else:
                out[flags == 1] = 1e3  # "interpolated": fclab must leave these rows out
            pd.DataFrame(out, columns=PARCELS).to_csv(f"{prefix}_space-{SPACE}_atlas-{ATLAS}_stat-mean_timeseries.tsv",
                                                      sep="\t", index=False, float_format="%.10g")
            pd.DataFrame({"framewise_displacement": flags}).to_csv(f"{prefix}_outliers.tsv", sep="\t", index=False)
            fd = np.round(0.1 + 0.5 * flags + 0.02 * rng.random(T), 6)
            pd.DataFrame({"trans_x": 0.0, "framewise_displacement": fd}).to_csv(f"{prefix}_motion.tsv", sep="\t",
                                                                                  index=False)
            pd.DataFrame({"num_dummy_volumes": [dummy], "num_censored_volumes": [int(flags.sum())],
                          "num_retained_volumes": [int(T - flags.sum())]}).to_csv(
                f"{prefix}_space-{SPACE}_desc-linc_qc.tsv", sep="\t", index=False)
            Path(f"{prefix}_space-{SPACE}_desc-denoised_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
            if run == "2":
                pd.DataFrame({"onset": [ONSET_S], "duration": [60.0], "trial_type": ["infusion"]}).to_csv(
                    raw / f"sub-{sub}_task-rest_run-2_events.tsv", sep="\t", index=False)
            written[(sub, run)] = {"series": series, "flags": flags, "dummy": dummy, "fd": fd}
    return written


def xcpd_params(root: Path, events_root: Path) -> dict:
    p = default_params()
    data = p["extract"]["data"]
    data.update(root=str(root), events_root=str(events_root), space=SPACE, format="xcpd", atlas=ATLAS,
                participants=str(root / "participants.tsv"))
    data["runs"] = {"baseline": {"task": "rest", "run": "1"}, "infusion": {"task": "rest", "run": "2"}}
    p["extract"]["rois"] = [{"name": "parcels", "names": ["LH_Amygdala", "RH_Amygdala", "LH_vmPFC", "RH_vmPFC"],
                             "merge": {"PCC": ["LH_PCC", "RH_PCC"]}}]
    p["extract"]["denoise"].update(strategy="none", high_pass_hz=None, low_pass_hz=None)
    p["extract"]["exclude"]["max_mean_fd"] = 0.5
    p["connectivity"]["windows"] = [
        {"name": "baseline", "run": "baseline"},
        {"name": "early", "run": "infusion", "event": "infusion", "start_min": 0, "end_min": 2},
        {"name": "late", "run": "infusion", "event": "infusion", "start_min": 2, "end_min": 4}]
    p["connectivity"]["sliding"] = []
    p["connectivity"]["min_volumes"] = 10
    p["stats"].update(groups=["placebo", "drug"], tests=["change_welch"],
                      confirmatory=[["LH_Amygdala", "LH_vmPFC"]])
    p["report"].update(primary_test="change_welch", subject_pages=False, title="XCP-D input test")
    return p


@pytest.fixture(scope="module")
def xcpd_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("xcpd")
    written = write_xcpd_tree(work / "xcp_d", work / "bids")
    write_params(work, xcpd_params(work / "xcp_d", work / "bids"))
    for stage in ("extract", "connectivity", "stats", "report"):
        code, _, err = run_cli_in(work, stage)
        assert code == 0, f"fclab {stage}: {err}"
    return work, written


def expected_series(w: dict) -> tuple[np.ndarray, np.ndarray]:
    """(volumes, ROI series) of a run as fclab should give them: XCP-D's kept rows of the four picked
    parcels and the mean of the two PCC parcels, detrended (scipy) and z-scored (ddof 1)."""
    kept = np.flatnonzero(w["flags"] == 0)
    x = w["series"][kept]
    rois = np.column_stack([x[:, :4], x[:, 4:].mean(axis=1)])
    rois = detrend(rois, axis=0)
    return kept + w["dummy"], rois / rois.std(axis=0, ddof=1)


def test_series_are_the_kept_rows_detrended_and_standardised_at_their_raw_times(xcpd_study):
    work, written = xcpd_study
    ts = pd.read_parquet(work / "results" / "extract" / "timeseries.parquet")
    run_key = {"1": "baseline", "2": "infusion"}
    names = ["LH_Amygdala", "RH_Amygdala", "LH_vmPFC", "RH_vmPFC", "PCC"]
    for (sub, run), w in written.items():
        got = ts[(ts["subject"] == sub) & (ts["run"] == run_key[run])]
        volumes, expected = expected_series(w)
        np.testing.assert_array_equal(got["volume"].to_numpy(), volumes)
        np.testing.assert_allclose(got["time_s"].to_numpy(), volumes * TR)
        np.testing.assert_allclose(got[names].to_numpy(), expected, rtol=1e-7, atol=1e-9)
    run_qc = pd.read_parquet(work / "results" / "extract" / "run_qc.parquet")
    for (sub, run), w in written.items():
        row = run_qc[(run_qc["subject"] == sub) & (run_qc["run"] == run_key[run])].iloc[0]
        assert row["n_volumes"] == RUNS[run] + w["dummy"] and row["n_retained"] == (w["flags"] == 0).sum()
        assert row["mean_fd"] == pytest.approx(w["fd"].mean())


def test_window_edges_equal_numpys_correlation_of_the_kept_volumes(xcpd_study):
    from fclab.framework.connectome.edgestore import read_edges

    work, written = xcpd_study
    rows = read_edges(work / "results" / "connectivity" / "edges.parquet").long()
    bounds = {"early": (ONSET_S, ONSET_S + 120), "late": (ONSET_S + 120, ONSET_S + 240)}
    checked = 0
    for sub in SUBJECTS:
        volumes, x = expected_series(written[(sub, "2")])
        t = volumes * TR
        for window, (lo, hi) in bounds.items():
            inside = (t >= lo) & (t < hi)
            r = np.corrcoef(x[inside].T)[0, 2]  # LH_Amygdala - LH_vmPFC
            got = rows[(rows["subject"] == sub) & (rows["window"] == window) & (rows["roi_a"] == "LH_Amygdala")
                       & (rows["roi_b"] == "LH_vmPFC")]["value"]
            assert len(got) == 1
            np.testing.assert_allclose(got.iloc[0], np.arctanh(r), rtol=1e-9)
            checked += 1
    assert checked == 12


def test_the_report_says_what_xcpd_did(xcpd_study):
    work, _ = xcpd_study
    html = (work / "reports" / "index.html").read_text()
    assert "XCP-D&#39;s denoised mean time series of the atlas-Toy parcels" in html
    assert "PCC (mean of LH_PCC, RH_PCC)" in html
    atlas = pd.read_parquet(work / "results" / "extract" / "rois.parquet")
    assert atlas.set_index("roi").loc["LH_Amygdala", "x_mm"] < 0 < atlas.set_index("roi").loc["RH_Amygdala", "x_mm"]
    assert (atlas["n_voxels"] > 0).all()


def test_denoising_xcpd_output_again_is_refused(tmp_path):
    p = xcpd_params(tmp_path / "xcp_d", tmp_path / "bids")
    p["extract"]["denoise"].update(strategy="simple", low_pass_hz=0.08)
    write_params(tmp_path, p)
    code, out, err = run_cli_in(tmp_path, "validate")
    assert code != 0
    assert "XCP-D's time series are denoised and filtered already (strategy 'simple', low_pass_hz 0.08)" in out + err


def test_rows_that_match_neither_mode_name_the_file(xcpd_study, tmp_path):
    work, _ = xcpd_study
    root = tmp_path / "xcp_d"
    write_xcpd_tree(root, tmp_path / "bids")
    series = root / "sub-02" / "func" / f"sub-02_task-rest_run-1_space-{SPACE}_atlas-{ATLAS}_stat-mean_timeseries.tsv"
    table = pd.read_csv(series, sep="\t")
    table.iloc[:-1].to_csv(series, sep="\t", index=False)
    write_params(tmp_path, xcpd_params(root, tmp_path / "bids"))
    code, _, err = run_cli_in(tmp_path, "extract")
    assert code != 0 and f"{series}: " in err and "volumes of which" in err, err
