"""Each kind of bad input: a one-line error naming the file, subject or key, a non-zero exit, no output."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fclab.framework.connectome.edgestore import read_edges_long

from conftest import run_cli, small_params, write_params

SUB = "02"


def func(work, run, suffix):
    return sorted((work / "data/simulated" / f"sub-{SUB}" / "func").glob(f"*run-{run}*{suffix}"))[0]


def missing_bold(work, params):
    func(work, 1, "_bold.nii.gz").unlink()
    return (f"sub-{SUB} run 'baseline': no preprocessed BOLD found for task 'rest', run '1', space "
            f"'MNI152NLin2009cAsym' (sub-{SUB} has task rest; run 2; space MNI152NLin2009cAsym)")


def wrong_space(work, params):
    params["extract"]["data"]["space"] = "MNI152NLin6Asym"
    return ("no preprocessed BOLD found for task 'rest', run '1', space 'MNI152NLin6Asym' "
            "(sub-01 has task rest; run 1, 2; space MNI152NLin2009cAsym)")


def shifted_mask(work, params):
    path = func(work, 1, "_mask.nii.gz")
    img = nib.load(path)
    affine = img.affine.copy()
    affine[0, 3] += 6
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), path)
    return f"{path.name}: grid differs from"


def short_confounds(work, params):
    path = func(work, 2, "_timeseries.tsv")
    table = pd.read_csv(path, sep="\t")
    table.iloc[:-3].to_csv(path, sep="\t", index=False, na_rep="n/a")
    return f"{path.name}: {len(table) - 3} rows for {len(table)} volumes"


def missing_column(work, params):
    path = func(work, 1, "_timeseries.tsv")
    pd.read_csv(path, sep="\t").drop(columns=["trans_x"]).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return f"{path.name}: cannot build 'simple' confounds"


def nan_bold(work, params):
    path = func(work, 1, "_bold.nii.gz")
    img = nib.load(path)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[..., 5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return f"{path.name}: NaN or infinite values inside the ROIs"


def no_group(work, params):
    path = work / "data/simulated/participants.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str)
    table.loc[table["participant_id"] == f"sub-{SUB}", "group"] = None
    table.to_csv(path, sep="\t", index=False)
    return f"participants.tsv: sub-{SUB} has no value in group column 'group'"


def no_tr(work, params):
    path = func(work, 2, "_bold.json")
    meta = json.loads(path.read_text())
    del meta["RepetitionTime"]
    path.write_text(json.dumps(meta))
    return f"{path.name}: no valid RepetitionTime"


def roi_outside_brain(work, params):
    path = func(work, 1, "_mask.nii.gz")
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), path)
    return f"{path.name}: ROI 'Left_Amygdala' has no voxel inside sub-{SUB}'s brain mask"


def sphere_outside_fov(work, params):
    params["extract"]["rois"][1]["centres"]["vmPFC"] = [0, 26, 300]
    return "extract.rois.spheres: sphere 'vmPFC' at (0, 26, 300) lies outside the BOLD field of view"


def unknown_label(work, params):
    params["extract"]["rois"][0]["labels"] = ["Left_Amygdala", "Left_Amygdale"]
    return "extract.rois.atlas.labels: 'Left_Amygdale' is not a harvard_oxford label; did you mean 'Left_Amygdala'?"


def missing_event(work, params):
    path = func(work, 2, "_events.tsv")
    path.write_text("onset\tduration\ttrial_type\n10\t1\tsomething_else\n")
    return (f"run 'infusion': no 'infusion' event for 1 subject (sub-{SUB}), needed by window '0-10min': their "
            "events.tsv is missing or has no such trial_type")


def header_tr_differs(work, params):
    path = func(work, 1, "_bold.json")
    meta = json.loads(path.read_text())
    meta["RepetitionTime"] = 3.0  # the header says 2.5 s
    path.write_text(json.dumps(meta))
    return (f"{func(work, 1, '_bold.nii.gz').name}: the header's time step 2.5 s differs from RepetitionTime 3 s "
            f"in {path.name}")


def participants_elsewhere(work, params):
    params["extract"]["data"]["participants"] = "rawdata/participants.tsv"
    return ("rawdata/participants.tsv: participants file not found (extract.data.participants "
            "'rawdata/participants.tsv' is relative to extract.data.root")


CASES = [missing_bold, wrong_space, shifted_mask, short_confounds, missing_column, nan_bold, no_group, no_tr,
         roi_outside_brain, sphere_outside_fov, unknown_label, missing_event, header_tr_differs,
         participants_elsewhere]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_clear_line(case, small_study, tmp_path, in_dir):
    shutil.copytree(small_study / "data", tmp_path / "data")
    params = small_params()
    params["extract"]["data"]["include"] = ["01", SUB, "03"]  # three subjects keep this fast
    message = case(tmp_path, params)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    stage = "connectivity" if case is missing_event else "extract"
    if stage == "connectivity":
        code, _, err = run_cli("extract")
        assert code == 0, err
    code, _, err = run_cli(stage)
    assert code in (1, 2), err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results" / stage).exists()  # nothing half-written


def test_on_error_skip_records_the_run_and_goes_on(small_study, tmp_path, in_dir):
    shutil.copytree(small_study / "data", tmp_path / "data")
    params = small_params()
    params["extract"]["data"]["include"] = ["01", SUB, "03"]
    params["extract"]["on_error"] = "skip"
    bold = func(tmp_path, 2, "_bold.nii.gz")
    raw = bold.read_bytes()
    bold.write_bytes(raw[: len(raw) // 2])  # truncated
    func(tmp_path, 1, "_timeseries.tsv").unlink()  # and the other run has no confounds
    write_params(tmp_path, params)
    in_dir(tmp_path)
    for stage in ("extract", "connectivity"):
        code, _, err = run_cli(stage)
        assert code == 0, err
    run_qc = pd.read_parquet(tmp_path / "results/extract/run_qc.parquet")
    assert run_qc[["subject", "run"]].values.tolist() == [[s, r] for s in ("01", SUB, "03")
                                                          for r in ("baseline", "infusion")]
    bad = run_qc[run_qc["subject"] == SUB].set_index("run")
    assert bad["excluded"].all()
    assert bad.loc["baseline", "reason"].startswith(f"skipped: sub-{SUB} run 'baseline': no confounds TSV found")
    assert bad.loc["infusion", "reason"].startswith("skipped: ") and f"{bold.name}: data block unreadable" in bad.loc["infusion", "reason"]
    edges = read_edges_long(tmp_path / "results/connectivity/edges.parquet")
    mine = edges[edges["subject"] == SUB]
    fixed = [w["name"] for w in params["connectivity"]["windows"]]
    assert set(mine["window"]) == set(fixed)  # every fixed window keeps its rows, no silent drop
    assert mine["value"].isna().all() and mine["reason"].str.startswith("run excluded: skipped:").all()
    assert edges[edges["subject"] != SUB]["value"].notna().any()
    methods = json.loads(pq.read_schema(tmp_path / "results/extract/timeseries.parquet").metadata[b"fclab"])["methods"]
    groups = pd.read_csv(tmp_path / "data/simulated/participants.tsv", sep="\t").set_index("participant_id")["group"]
    kept = groups[["sub-01", "sub-03"]].value_counts().sort_index()
    counts = ", ".join(f"{n} {g}" for g, n in kept.items())
    assert (f"preprocessed BOLD of 4 runs of 2 subjects ({counts}; 2 runs per subject); 2 further runs could not "
            f"be read and were left out (sub-{SUB} baseline, sub-{SUB} infusion; run_qc.parquet gives the reasons)") in methods


def test_min_coverage_sets_the_roi_missing_and_it_flows_to_stats(small_study, tmp_path, in_dir):
    from fclab.framework.extraction.anatomy import voxel_centres

    shutil.copytree(small_study / "data", tmp_path / "data")
    path = func(tmp_path, 1, "_mask.nii.gz")  # sub-02's baseline mask loses the vmPFC
    img = nib.load(path)
    mask = np.asarray(img.dataobj).copy()
    near = ((voxel_centres(img.shape, img.affine) - np.array([0, 26, -18])) ** 2).sum(1) <= 14**2
    mask.reshape(-1)[near] = 0
    nib.save(nib.Nifti1Image(mask, img.affine, img.header), path)
    params = small_params()
    params["extract"]["min_coverage"] = 0.5
    params["connectivity"]["metrics"] = ["pearson", "partial"]
    params["stats"]["tests"] = ["mmrm", {"name": "lmm", "contrasts": ["group:window"]}, "change_welch"]
    write_params(tmp_path, params)
    in_dir(tmp_path)
    for stage in ("extract", "connectivity", "stats", "report"):
        code, _, err = run_cli(stage)
        assert code == 0, err
    roi_qc = pd.read_parquet(tmp_path / "results/extract/roi_qc.parquet")
    gone = roi_qc[roi_qc["missing"]]
    assert gone[["subject", "run", "roi"]].values.tolist() == [[SUB, "baseline", "vmPFC"]]
    assert gone["reason"].iloc[0].startswith("coverage 0.00 < min_coverage 0.5")
    ts = pd.read_parquet(tmp_path / "results/extract/timeseries.parquet")
    sel = (ts["subject"] == SUB) & (ts["run"] == "baseline")
    assert ts.loc[sel, "vmPFC"].isna().all() and ts.loc[sel, "dmPFC"].notna().all()
    edges = read_edges_long(tmp_path / "results/connectivity/edges.parquet")
    e = edges[(edges["subject"] == SUB) & (edges["window"] == "baseline")]
    touches = (e["roi_a"] == "vmPFC") | (e["roi_b"] == "vmPFC")
    assert e.loc[touches, "value"].isna().all()
    assert e.loc[touches, "reason"].str.startswith("ROI missing: vmPFC (coverage 0.00").all()
    assert e.loc[~touches, "value"].notna().all()  # pearson and partial on the four ROIs present
    # partial correlation computed on the ROIs present equals a direct computation on them
    from fclab.plugins.partial import Partial

    rois = ["Left_Amygdala", "Right_Amygdala", "dmPFC", "amPFC"]
    x = ts.loc[sel, rois].to_numpy()
    direct = Partial().compute(x[None], 2.5)[0]
    row = e[(e["metric"] == "partial") & (e["roi_a"] == "dmPFC") & (e["roi_b"] == "amPFC")]
    assert row["value"].iloc[0] == pytest.approx(direct[2, 3], rel=1e-10)
    tests = pd.read_parquet(tmp_path / "results/stats/tests.parquet")
    welch = tests[(tests["test"] == "change_welch") & (tests["metric"] == "pearson")]
    n_vm = welch[(welch["roi_b"] == "vmPFC") | (welch["roi_a"] == "vmPFC")]["n"]
    assert (n_vm == 15).all() and (welch[~welch.index.isin(n_vm.index)]["n"] == 16).all()
    lmm = tests[(tests["test"] == "lmm") & (tests["term"] == "group:window")]
    assert lmm["p"].notna().all()  # the mixed model uses what is there
    mmrm = tests[(tests["test"] == "mmrm") & (tests["term"] == "group:window") & (tests["metric"] == "pearson")]
    assert mmrm["p"].notna().all()  # without the subject's baseline vmPFC edges (a covariate)
    assert (mmrm.loc[mmrm["roi_b"].eq("vmPFC") | mmrm["roi_a"].eq("vmPFC"), "n"] == 15).all()
    assert "ROIs set to missing (below <code>min_coverage</code>): 1" in (tmp_path / "reports/index.html").read_text()


def _amygdala_masker(**kw):
    from nilearn.image import math_img
    from nilearn.maskers import NiftiLabelsMasker

    from fclab.framework.extraction.anatomy import max_probability_labels

    labels_img, names = max_probability_labels("harvard_oxford", 25)
    amy = [names.index("Left_Amygdala") + 1, names.index("Right_Amygdala") + 1]
    sub = math_img(f"np.where(img == {amy[0]}, 1, np.where(img == {amy[1]}, 2, 0))", img=labels_img)
    return NiftiLabelsMasker(sub, resampling_target="data", **kw)


@pytest.mark.parametrize("denoise", [
    {"strategy": "none", "columns": ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                                     "trans_x_derivative1", "csf", "white_matter"], "smoothing_fwhm": 6.0},
    {"strategy": "scrubbing", "strategy_options": {"fd_threshold": 0.2, "std_dvars_threshold": 3}},
])
def test_denoising_options_match_nilearn(denoise, small_study, tmp_path, in_dir):
    """Custom confound columns with smoothing, and scrubbing with its sample mask (censored volumes
    interpolated before filtering), equal NiftiLabelsMasker with the same settings."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    shutil.copytree(small_study / "data", tmp_path / "data")
    params = small_params()
    params["extract"]["data"]["include"] = [SUB]
    params["extract"]["denoise"].update(denoise)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("extract")
    assert code == 0, err
    bold = func(tmp_path, 2, "_bold.nii.gz")
    kw = dict(detrend=True, standardize="zscore_sample", low_pass=0.08, high_pass=0.01, t_r=2.5)
    if denoise["strategy"] == "none":
        table = pd.read_csv(func(tmp_path, 2, "_timeseries.tsv"), sep="\t", na_values=["n/a"])
        confounds, sample_mask = table[denoise["columns"]].fillna(0.0), None
        masker = _amygdala_masker(smoothing_fwhm=6.0, **kw)
        img = nib.load(bold)
        img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float64), img.affine)
    else:
        confounds, sample_mask = load_confounds_strategy(str(bold), denoise_strategy="scrubbing",
                                                         **denoise["strategy_options"])
        assert sample_mask is not None and len(sample_mask) < nib.load(bold).shape[3]  # volumes censored
        masker, img = _amygdala_masker(**kw), str(bold)
    ref = masker.fit_transform(img, confounds=confounds, sample_mask=sample_mask)
    ts = pd.read_parquet(tmp_path / "results/extract/timeseries.parquet")
    ours = ts[ts["run"] == "infusion"]
    np.testing.assert_allclose(ours[["Left_Amygdala", "Right_Amygdala"]].to_numpy(), ref, rtol=1e-6, atol=1e-9)
    motion = pd.read_parquet(tmp_path / "results/extract/motion.parquet")
    censored = motion[(motion["run"] == "infusion")]["censored"].to_numpy()
    kept = np.arange(len(censored)) if sample_mask is None else np.asarray(sample_mask)
    assert (~censored).sum() == len(kept) == len(ours)
    run_qc = pd.read_parquet(tmp_path / "results/extract/run_qc.parquet").set_index("run")
    assert run_qc.loc["infusion", "n_retained"] == len(kept)
    # DVARS over the sampled voxels, before and after the same cleaning by nilearn's NiftiMasker.
    from nilearn.maskers import NiftiMasker

    from fclab.framework.extraction.runqc import QC_VOXELS, voxel_sample

    mask = nib.load(func(tmp_path, 2, "_mask.nii.gz"))
    sample = np.zeros(mask.shape, bool)
    sample.flat[voxel_sample(np.asarray(mask.dataobj), QC_VOXELS)] = True
    sample_img = nib.Nifti1Image(sample.astype(np.uint8), mask.affine)
    smooth = {"smoothing_fwhm": 6.0} if denoise.get("smoothing_fwhm") else {}
    raw = NiftiMasker(sample_img, standardize=None, **smooth).fit_transform(img).T
    clean = NiftiMasker(sample_img, **smooth, **{**kw, "standardize": None}).fit_transform(
        img, confounds=confounds, sample_mask=sample_mask).T
    psc = 100 * clean / raw.mean(axis=1, keepdims=True)
    step = np.diff(kept) == 1
    expected = np.full(len(censored), np.nan)
    expected[kept[1:][step]] = np.sqrt((np.diff(psc, axis=1)[:, step] ** 2).mean(axis=0))
    dv = motion[motion["run"] == "infusion"]
    np.testing.assert_allclose(dv["dvars_clean"].to_numpy(), expected, rtol=1e-6)
    expected_raw = np.r_[np.nan, np.sqrt((np.diff(100 * raw / raw.mean(axis=1, keepdims=True), axis=1) ** 2).mean(axis=0))]
    np.testing.assert_allclose(dv["dvars_raw"].to_numpy(), expected_raw, rtol=1e-6)


def test_session_and_resolution_entities_select_files(small_study, tmp_path):
    """Files in ses-* folders with res-* entities are found by those filters, and only by them."""
    from fclab.framework.errors import DataError
    from fclab.framework.extraction.bids import discover
    from fclab.framework.params import DataParams

    src = small_study / "data/simulated"
    root = tmp_path / "bids"
    root.mkdir()
    shutil.copy(src / "participants.tsv", root / "participants.tsv")
    for ses in ("1", "2"):
        out = root / "sub-01" / f"ses-{ses}" / "func"
        out.mkdir(parents=True)
        for f in (src / "sub-01" / "func").iterdir():
            name = f.name.replace("sub-01_", f"sub-01_ses-{ses}_").replace(
                "space-MNI152NLin2009cAsym_", "space-MNI152NLin2009cAsym_res-2_")
            shutil.copy(f, out / name)
    runs = {"baseline": {"task": "rest", "run": "1", "session": "2"}}
    _, found = discover(DataParams(root=str(root), res="2", include=["01"], runs=runs))
    assert len(found) == 1 and "ses-2" in found[0].bold.name and "res-2" in found[0].mask.name
    with pytest.raises(DataError, match="2 preprocessed BOLD files match"):
        discover(DataParams(root=str(root), res="2", include=["01"], runs={"baseline": {"task": "rest", "run": "1"}}))
    with pytest.raises(DataError, match="no preprocessed BOLD found"):
        discover(DataParams(root=str(root), res="1", include=["01"], runs=runs))


def test_events_follow_bids_inheritance_in_the_raw_dataset(tmp_path):
    """events_root is searched before the derivatives; the file nearest the run wins; a dataset-level
    file applies to every subject; a file naming another run or session does not apply."""
    from fclab.framework.errors import DataError
    from fclab.framework.extraction.bids import find_events
    from fclab.framework.params import RunSelect

    raw, deriv = tmp_path / "raw", tmp_path / "deriv"

    def put(root, rel):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("onset\tduration\ttrial_type\n10\t0\tinfusion\n")
        return path

    top = put(raw, "task-rest_run-2_events.tsv")
    own = put(raw, "sub-01/func/sub-01_task-rest_run-2_events.tsv")
    put(raw, "sub-01/func/sub-01_task-rest_run-3_events.tsv")  # another run
    in_deriv = put(deriv, "sub-03/func/sub-03_task-rest_run-2_events.tsv")
    sel = RunSelect(task="rest", run="2")
    assert find_events([raw, deriv], "01", sel) == own
    assert find_events([raw, deriv], "02", sel) == top  # inherited from the dataset level
    assert find_events([deriv], "03", sel) == in_deriv
    assert find_events([raw, deriv], "03", sel) == top  # the raw dataset first
    assert find_events([raw], "01", RunSelect(task="rest", run="1")) is None
    assert find_events([raw], "01", RunSelect(task="movie", run="2")) is None
    ses = put(raw, "sub-04/ses-b/func/sub-04_ses-b_task-rest_run-2_events.tsv")
    assert find_events([raw], "04", RunSelect(task="rest", run="2", session="b")) == ses
    assert find_events([raw], "04", RunSelect(task="rest", run="2", session="a")) == top
    put(raw, "sub-05/func/sub-05_task-rest_run-2_acq-x_events.tsv")  # an entity the run does not have
    assert find_events([raw], "05", sel) == top
    put(raw, "sub-06/sub-06_task-rest_events.tsv")
    put(raw, "sub-06/sub-06_run-2_task-rest_events.tsv")
    assert find_events([raw], "06", sel).name == "sub-06_run-2_task-rest_events.tsv"  # more entities
    put(raw, "sub-06/sub-06_task-rest_run-2_events.tsv")
    with pytest.raises(DataError, match="both apply to sub-06"):
        find_events([raw], "06", sel)


def test_events_from_the_raw_dataset_reach_validate_and_a_missing_one_says_where(small_study, tmp_path):
    from fclab.framework.extraction.engine import check_inputs
    from fclab.framework.params import load_params

    deriv = tmp_path / "deriv"
    shutil.copytree(small_study / "data/simulated", deriv)
    raw = tmp_path / "raw"
    moved = sorted(deriv.rglob("*_events.tsv"))
    for f in moved[1:]:  # every subject's file but the first moves to the raw dataset
        dest = raw / f.relative_to(deriv)
        dest.parent.mkdir(parents=True, exist_ok=True)
        f.rename(dest)
    params = small_params()
    params["extract"]["data"]["root"] = str(deriv)
    path = write_params(tmp_path, params)
    p = load_params(path)
    windows = [*p.connectivity.windows, *p.connectivity.sliding]
    _, problems = check_inputs(p.extract, windows)
    assert len(problems) == len(moved) - 1  # one line per subject without events
    assert all("set extract.data.events_root to the raw BIDS dataset" in x for x in problems)
    params["extract"]["data"]["events_root"] = str(raw)
    p = load_params(write_params(tmp_path, params))
    _, problems = check_inputs(p.extract, windows)
    assert problems == []


def test_the_manifest_records_raw_events_so_dvc_sees_an_edit(tmp_path):
    from fclab.framework.stages import events_manifest

    assert events_manifest(None) == [] and events_manifest(str(tmp_path / "none")) == []
    f = tmp_path / "sub-01" / "func" / "sub-01_task-rest_run-2_events.tsv"
    f.parent.mkdir(parents=True)
    f.write_text("onset\tduration\ttrial_type\n10\t0\tinfusion\n")
    before = events_manifest(str(tmp_path))
    assert [e["path"] for e in before] == ["sub-01/func/sub-01_task-rest_run-2_events.tsv"]
    f.write_text("onset\tduration\ttrial_type\n12\t0\tinfusion\n")
    assert events_manifest(str(tmp_path)) != before

    from fclab.framework.params.models import DataParams
    from fclab.framework.stages import outside_inputs

    (tmp_path / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tA\n")
    inside = DataParams(root=str(tmp_path), events_root=str(tmp_path))
    assert [e["role"] for e in outside_inputs(inside)] == ["events"]  # the root's participants.tsv: a DVC dep already
    elsewhere = DataParams(root=str(tmp_path / "sub-01"), participants="../participants.tsv")
    assert [(e["role"], e["sha256"] != "missing") for e in outside_inputs(elsewhere)] == [("participants", True)]


def test_validate_says_a_study_wide_problem_once(small_study, tmp_path, in_dir):
    """A strategy the confounds cannot serve fails every run alike: one line per run label, with how many
    more subjects have it, not one line per run."""
    shutil.copytree(small_study / "data", tmp_path / "data")
    params = small_params()
    params["extract"]["denoise"]["strategy"] = "compcor"
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, out, err = run_cli("validate")
    assert code == 1
    lines = [x for x in err.splitlines() if "cannot build 'compcor' confounds" in x]
    assert len(lines) == 2, err  # baseline and infusion
    assert all(x.endswith("(and 15 more subjects alike)") for x in lines), err
    assert err.splitlines()[0] == "2 problems:", err


def test_numeric_group_codes_and_one_subject_read_naturally(small_study, tmp_path, in_dir):
    """group_map as YAML writes numeric codes ({0: ..., 1: ...}) maps participants.tsv's 0 and 1; one
    run of one subject is counted in the singular."""
    from fclab.framework.report.methods import run_count_text

    shutil.copytree(small_study / "data", tmp_path / "data")
    path = tmp_path / "data/simulated/participants.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str)
    table["group"] = table["group"].map({"midazolam": "0", "ketamine": "1"})
    table.to_csv(path, sep="\t", index=False)
    params = small_params()
    params["extract"]["data"]["group_map"] = {0: "midazolam", 1: "ketamine"}
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, out, err = run_cli("validate")
    assert code == 0, err
    assert "16 subjects (ketamine 8, midazolam 8)" in out
    one = pd.DataFrame({"subject": ["01"], "group": ["ketamine"], "run": ["baseline"], "reason": [""]})
    assert run_count_text(one) == "1 run of 1 subject (1 ketamine; 1 run per subject)"
