"""Native-space volumes, on real BOLD: the two runs nitime ships (tests/real_volume_data.py says what
they are and how the derivatives around them were made), through discovery, extraction, the
degrees-of-freedom guard, connectivity, statistics and the report.

Checked against independent references: every ROI signal against nilearn's NiftiLabelsMasker on the
subject's own label image; every between-group estimate against the closed form (both groups hold
the same two runs, so each is 0); the guard's counts against T − 2 after detrending (no filter) and
against the band's nominal count with a low-pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import real_volume_data as rv
from conftest import default_params, run_cli_in, write_params


def params_for(root: Path, **extract) -> dict:
    p = default_params()
    study = rv.study_params(root)
    p["extract"]["data"].update(study["data"])
    p["extract"]["rois"] = study["rois"]
    p["extract"]["denoise"].update(study["denoise"])
    p["extract"]["exclude"].update(study["exclude"])
    for key, value in extract.items():
        p["extract"][key].update(value)
    p["connectivity"]["windows"] = study["windows"]
    p["connectivity"]["sliding"] = []
    p["connectivity"]["min_volumes"] = 10
    p["stats"].update(groups=["A", "B"], baseline_window="first", confirmatory=[],
                      tests=["mmrm", "change_welch"])
    p["report"].update(title="nitime's real runs in native space (pipeline test)", subject_pages=False,
                       primary_test="change_welch")
    return p


@pytest.fixture(scope="module")
def real_study(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("realvol")
    rv.write_real_volume_study(work / "derivatives")
    write_params(work, params_for(work / "derivatives"))
    for stage in ("extract", "connectivity", "stats", "report"):
        code, out, err = run_cli_in(work, stage)
        assert code == 0, f"fclab {stage}: {err}"
    return work


def test_signals_equal_nilearns_labels_masker_on_each_subjects_own_labels(real_study):
    from nilearn.maskers import NiftiLabelsMasker

    ts = pd.read_parquet(real_study / "results" / "extract" / "timeseries.parquet")
    root = real_study / "derivatives"
    for sub in rv.SUBJECTS:
        files = rv.func_files(root, sub)
        masker = NiftiLabelsMasker(files["labels"], mask_img=files["mask"], detrend=True,
                                   standardize="zscore_sample", t_r=rv.TR)
        img = nib.load(files["bold"])
        expected = masker.fit_transform(nib.Nifti1Image(img.get_fdata(), img.affine, img.header))
        got = ts[ts["subject"] == sub][rv.OCTANTS].to_numpy()
        assert got.shape == (40, 8)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_identical_groups_estimate_zero_and_the_methods_say_native_space(real_study):
    tests = pd.read_parquet(real_study / "results" / "stats" / "tests.parquet")
    welch = tests[(tests["test"] == "change_welch") & (tests["term"] == "group:window")]
    assert len(welch) == 28 and np.isfinite(welch["se"]).all() and (welch["se"] > 0).all()
    assert np.abs(welch["estimate"]).max() < 1e-12 and np.allclose(welch["p"], 1.0)
    # the mmrm's fit is degenerate here (two pairs of identical subjects on a line: a residual of 0),
    # and each edge says so rather than giving a number
    mmrm = tests[tests["test"] == "mmrm"]
    assert len(mmrm) == 28 and mmrm["estimate"].isna().all() and (mmrm["reason"].str.len() > 0).all()
    html = (real_study / "reports" / "index.html").read_text()
    assert "native (scanner) space" in html and "MNI152NLin2009cAsym" not in html
    assert "octant8 from each subject&#39;s own label image sub-{subject}_task-rest_desc-octants_dseg.nii.gz" in html
    assert "mean image of the run sub-01_task-rest_desc-preproc_bold.nii.gz (native space" in html
    assert "glass brain" not in html.replace("no glass-brain view", "")
    assert "none to draw, since no run&#39;s confounds have a framewise_displacement column" in html
    background = nib.load(real_study / "results" / "extract" / "rois_background.nii.gz")
    mean = nib.load(rv.nitime_run("fmri1.nii.gz")).get_fdata().mean(axis=-1)
    np.testing.assert_allclose(background.get_fdata(), mean, rtol=1e-6)
    np.testing.assert_allclose(background.affine, nib.load(rv.nitime_run("fmri1.nii.gz")).affine)


def test_the_guard_keeps_the_unfiltered_runs_and_excludes_them_under_a_low_pass(real_study, tmp_path):
    run_qc = pd.read_parquet(real_study / "results" / "extract" / "run_qc.parquet")
    # no filter: detrending removes 2 of 40 (mean and slope), nothing else is regressed
    np.testing.assert_allclose(run_qc["dof_left"], 38.0, atol=1e-6)
    assert not run_qc["excluded"].any()
    root = real_study / "derivatives"
    write_params(tmp_path, params_for(root, denoise={"low_pass_hz": 0.08}))
    code, _, err = run_cli_in(tmp_path, "extract")
    assert code == 0, err
    lowpassed = pd.read_parquet(tmp_path / "results" / "extract" / "run_qc.parquet")
    nominal = 2 * 0.08 * 40 * rv.TR  # 8.6 degrees of freedom below 0.08 Hz in 54 s
    assert (lowpassed["dof_left"] < nominal).all() and (lowpassed["dof_left"] > 2).all()
    assert lowpassed["excluded"].all()
    assert lowpassed["reason"].str.contains("min_dof 10").all(), lowpassed["reason"].tolist()


def test_mni_rois_on_native_runs_are_one_line_naming_the_space(real_study, tmp_path):
    p = params_for(real_study / "derivatives")
    p["extract"]["rois"] = default_params()["extract"]["rois"]  # the atlas and spheres: MNI positions
    write_params(tmp_path, p)
    for command in ("validate", "extract"):
        code, out, err = run_cli_in(tmp_path, command)
        assert code != 0
        text = out + err
        assert "extract.rois[0]: ROI set 'atlas' places ROIs in MNI space, and the runs are in space 'native'" in text
        assert "Traceback" not in text


def test_native_discovery_takes_the_files_without_a_space_entity(real_study, tmp_path):
    from fclab.framework.extraction.bids import discover
    from fclab.framework.params import DataParams

    root = real_study / "derivatives"
    for space in ("native", ""):
        _, runs = discover(DataParams(root=str(root), space=space, runs={"rest": {"task": "rest"}}))
        assert [r.bold.name for r in runs] == [f"sub-{s}_task-rest_desc-preproc_bold.nii.gz" for s in rv.SUBJECTS]
    with pytest.raises(Exception, match=r"no preprocessed BOLD found for task 'rest', space 'T1w'.*space native"):
        discover(DataParams(root=str(root), space="T1w", runs={"rest": {"task": "rest"}}))


def test_an_image_without_world_coordinates_is_an_error_naming_it(real_study, tmp_path):
    root = tmp_path / "derivatives"
    rv.write_real_volume_study(root)
    bold = rv.func_files(root, "02")["bold"]
    img = nib.load(bold)
    img = nib.Nifti1Image(np.asarray(img.dataobj), None, img.header)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, bold)
    assert int(nib.load(bold).header["qform_code"]) == int(nib.load(bold).header["sform_code"]) == 0
    write_params(tmp_path, params_for(root))
    code, out, err = run_cli_in(tmp_path, "extract")
    assert code != 0
    assert re.search(rf"{re.escape(str(bold))}: qform and sform codes are both 0", err), err
