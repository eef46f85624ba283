"""The voxel-level crossover study of `fclab simulate` (simulate.design: crossover): its layout and
sessions tables, its first sessions against the parallel study of the same seed, its counterfactual
against a whole null study simulated again, and its carry-over and period shift measured in the
voxels (as differences from twin studies that share every random draw)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import signal

from fclab.framework.errors import ParamsError
from fclab.framework.params import SimulateParams
from fclab.framework.simulation.study import ROI_NAMES, Anatomy, simulate, simulate_counterfactual

SMALL = dict(n_ketamine=3, n_midazolam=2, baseline_duration_s=300.0, pre_onset_s=25.0, infusion_duration_s=900.0,
             seed=11)
# the whole infusion, so that a run's correlation measures the effect at full strength
STEP = [dict(roi_a="Left_Amygdala", roi_b="vmPFC", group="ketamine", delta_r=-0.3, course="step",
             start_min=0.0, end_min=100.0)]
CARRY, SHIFT = 0.5, 0.1


def _study(root, name, **kw) -> SimulateParams:
    p = SimulateParams(**{**SMALL, "design": "crossover", "effects": STEP, **kw, "output_dir": str(root / name)})
    simulate(p, n_jobs=1)
    return p


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossover")
    return root, {
        "factual": _study(root, "factual", carryover=CARRY, period_shift_r=SHIFT),
        "null": _study(root, "null", effects=[], period_shift_r=SHIFT),  # the counterfactual: no planted effect
        "unshifted": _study(root, "unshifted", effects=[]),
        "parallel": _study(root, "parallel", design="parallel"),
    }


def _files(root):
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
            and f.parent.name == "func"}


def test_layout_sequences_and_sessions_tables(studies):
    root, _ = studies
    study = root / "factual"
    parts = pd.read_csv(study / "participants.tsv", sep="\t")
    assert list(parts.columns) == ["participant_id", "sequence", "age", "sex"]
    assert parts["sequence"].value_counts().to_dict() == {"ketamine-midazolam": 3, "midazolam-ketamine": 2}
    for sub, seq in zip(parts["participant_id"], parts["sequence"]):
        ses = pd.read_csv(study / sub / f"{sub}_sessions.tsv", sep="\t", dtype=str)
        assert ses.to_dict("list") == {"session_id": ["ses-1", "ses-2"], "condition": seq.split("-"),
                                       "period": ["1", "2"]}
        for s in ("1", "2"):
            func = study / sub / f"ses-{s}" / "func"
            for run in ("1", "2"):
                img = nib.load(func / f"{sub}_ses-{s}_task-rest_run-{run}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
                assert img.shape[-1] == {"1": 120, "2": 370}[run]
            events = pd.read_csv(func / f"{sub}_ses-{s}_task-rest_run-2_events.tsv", sep="\t")
            assert events[["onset", "duration"]].values.tolist() == [[25.0, 900.0]]
        assert not (study / sub / "func").exists()
    truth = json.loads((study / "ground_truth.json").read_text())
    assert truth["n_per_sequence"] == {"ketamine-midazolam": 3, "midazolam-ketamine": 2}
    assert (truth["design"], truth["carryover"], truth["period_shift_r"]) == ("crossover", CARRY, SHIFT)
    ket = [r for r in truth["planted"] if r["group"] == "ketamine" and r["roi_a"] == "Left_Amygdala"
           and r["roi_b"] == "vmPFC" and r["window"] != "baseline"]
    assert ket and all(r["delta_r"] == -0.3 for r in ket)  # the condition's effect, without shift or carry-over


def test_first_sessions_are_the_parallel_study_of_the_same_seed(studies):
    """Period 1 has no period shift or carry-over: a subject's ses-1 is, byte for byte, the parallel
    study's subject of the same label in the group of its first condition."""
    root, _ = studies
    parallel = _files(root / "parallel")
    first = {k.replace("/ses-1", "").replace("_ses-1", ""): v for k, v in _files(root / "factual").items()
             if "/ses-1/" in k}
    assert first.keys() == parallel.keys() and len(first) == 5 * 11
    assert all(first[k] == parallel[k] for k in first)
    groups = pd.read_csv(root / "parallel" / "participants.tsv", sep="\t")["group"]
    sequences = pd.read_csv(root / "factual" / "participants.tsv", sep="\t")["sequence"]
    assert [s.split("-")[0] for s in sequences] == groups.tolist()


def test_the_effect_acts_only_in_its_conditions_sessions_and_the_counterfactual_is_the_null_study(studies, tmp_path):
    """Every run of the factual study equals the null study's (the same seed, no effect) except the
    ketamine infusion runs and, with carry-over, the midazolam infusion runs after a ketamine session;
    the counterfactual regenerates exactly those, equal to the null study's, and links the rest."""
    root, ps = studies
    factual, null = _files(root / "factual"), _files(root / "null")
    assert factual.keys() == null.keys()
    parts = pd.read_csv(root / "factual" / "participants.tsv", sep="\t")
    expected = set()  # (subject, session) whose infusion run carries a planted effect
    for sub, seq in zip(parts["participant_id"], parts["sequence"]):
        expected.add((sub, "1" if seq.startswith("ketamine") else "2"))
        if seq.startswith("ketamine"):  # carried over into the midazolam session after it
            expected.add((sub, "2"))
    differ = [k for k in factual if factual[k] != null[k]]
    assert {(k.split("/")[0], k.split("/")[1][4:]) for k in differ} == expected
    assert all("_run-2_" in k and (k.endswith("preproc_bold.nii.gz") or k.endswith("timeseries.tsv")) for k in differ)

    out = tmp_path / "twin"
    written = simulate_counterfactual(ps["factual"], root / "factual", out, n_jobs=1)
    assert sorted(written["participant_id"]) == sorted(parts["participant_id"])  # everyone has a ketamine session
    twin = _files(out)
    assert twin == null
    links = {str(f.relative_to(out)) for f in out.rglob("*") if f.is_symlink()}
    regenerated = {k for k in twin if k not in links}
    assert {(k.split("/")[0], k.split("/")[1][4:]) for k in regenerated} == expected
    assert all("run-2" in k for k in regenerated)

    only = simulate_counterfactual(ps["factual"], root / "factual", tmp_path / "one", n_jobs=1, only=["02"])
    assert only["participant_id"].tolist() == ["sub-02"]


def _roi_correlations(study, sub, ses, run, anat) -> np.ndarray:
    """Correlations of the source regions' mean time series in one run, straight from the image, after
    nilearn regresses out the run's global, CSF, white-matter and motion confounds."""
    img = nib.load(study / sub / f"ses-{ses}" / "func" /
                   f"{sub}_ses-{ses}_task-rest_run-{run}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
    data = np.asarray(img.dataobj, dtype=float)[anat.brain]  # (brain voxels, T), in the anatomy's order
    means = np.stack([data[anat.region == k].mean(0) for k in range(len(ROI_NAMES))], axis=1)
    conf = pd.read_csv(img.get_filename().replace("space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
                                                  "desc-confounds_timeseries.tsv"), sep="\t")
    cols = ["global_signal", "csf", "white_matter", "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    return np.corrcoef(signal.clean(means, confounds=conf[cols].to_numpy(), detrend=True, standardize=None).T)


def test_carryover_and_period_shift_in_the_voxels(studies):
    """Measured from the images as differences from twin studies that share every random draw, so
    the noise cancels and the planted latent changes show through the voxels: the carried-over
    effect is the carry-over fraction of the ketamine session's effect, and the period shift raises
    every source pair in the second infusion run only."""
    root, ps = studies
    anat = Anatomy.cached(ps["factual"].voxel_size_mm)
    parts = pd.read_csv(root / "factual" / "participants.tsv", sep="\t")
    i, j = ROI_NAMES.index("Left_Amygdala"), ROI_NAMES.index("vmPFC")
    own, carried = [], []
    for sub, seq in zip(parts["participant_id"], parts["sequence"]):
        ket = "1" if seq.startswith("ketamine") else "2"
        d = _roi_correlations(root / "factual", sub, ket, "2", anat) - _roi_correlations(root / "null", sub, ket, "2", anat)
        own.append(d[i, j])
        if ket == "1":
            d = (_roi_correlations(root / "factual", sub, "2", "2", anat)
                 - _roi_correlations(root / "null", sub, "2", "2", anat))
            carried.append(d[i, j])
    assert np.all((np.array(own) > -0.36) & (np.array(own) < -0.2)), own  # planted: -0.3
    ratio = np.mean(carried) / np.mean(own)
    assert 0.35 < ratio < 0.65, (ratio, own, carried)  # planted: 0.5

    iu = np.triu_indices(len(ROI_NAMES), 1)
    shift = {(s, run): np.mean([(_roi_correlations(root / "null", sub, s, run, anat)
                                 - _roi_correlations(root / "unshifted", sub, s, run, anat))[iu]
                                for sub in parts["participant_id"]]) for s in ("1", "2") for run in ("1", "2")}
    assert shift[("1", "1")] == shift[("1", "2")] == shift[("2", "1")] == 0.0
    assert 0.07 < shift[("2", "2")] < 0.11, shift  # planted: 0.1


@pytest.mark.parametrize("key, value", [("carryover", 0.2), ("period_shift_r", 0.1)])
def test_crossover_keys_are_refused_in_a_parallel_study(key, value):
    with pytest.raises(ValueError, match=f"{key} is a crossover study's"):
        SimulateParams(**{key: value})


def test_extract_reads_one_session_of_a_simulated_crossover_study_and_refuses_none(studies, tmp_path, in_dir):
    """Without a session in its run selections the extract stage stops in one line; with one, it reads
    that session's runs as a parallel study whose groups are the session's conditions (the
    participants' sequence mapped per session)."""
    from conftest import default_params, write_params

    from fclab.framework.io import read_parquet
    from fclab.framework.params import load_params
    from fclab.framework.stages import stage_extract, stage_truth

    root, ps = studies
    params = default_params()
    params["simulate"] = ps["factual"].model_dump(mode="json")
    params["extract"]["data"]["root"] = ps["factual"].output_dir
    in_dir(tmp_path)
    with pytest.raises(ParamsError, match="simulate.design: crossover: .* select one session per run"):
        stage_extract(load_params(write_params(tmp_path, params)))
    params["extract"]["data"].update(group_column="sequence",
                                     group_map={"ketamine-midazolam": "midazolam", "midazolam-ketamine": "ketamine"})
    for sel in params["extract"]["data"]["runs"].values():
        sel["session"] = "2"
    loaded = load_params(write_params(tmp_path, params))
    stage_extract(loaded, jobs=1)
    qc = read_parquet(tmp_path / "results/extract/run_qc.parquet")
    parts = pd.read_csv(root / "factual" / "participants.tsv", sep="\t")
    second = dict(zip(parts["participant_id"].str.removeprefix("sub-"), parts["sequence"].str.split("-").str[1]))
    assert len(qc) == 2 * len(parts) and qc["bold"].str.contains("_ses-2_").all()
    assert dict(zip(qc["subject"], qc["group"])) == second
    with pytest.raises(ParamsError, match="truth stage does not yet"):
        stage_truth(loaded)


def test_invalid_planted_correlations_name_the_condition_and_period():
    from fclab.framework.simulation.study import check_effects

    big = [dict(roi_a="Left_Amygdala", roi_b="Right_Amygdala", group="ketamine", delta_r=0.3, course="step",
                start_min=0.0, end_min=100.0)]
    check_effects(SimulateParams(design="crossover", effects=big))  # 0.60 + 0.30: still a correlation matrix
    with pytest.raises(ParamsError, match=r"for midazolam in period 2 .*\(smallest eigenvalue"):  # + 0.30 carried
        check_effects(SimulateParams(design="crossover", effects=big, carryover=1.0, period_shift_r=0.1))


def test_a_subject_whose_planted_correlations_are_invalid_is_named(tmp_path):
    near = [dict(roi_a="Left_Amygdala", roi_b="Right_Amygdala", group="ketamine", delta_r=0.3, course="step",
                 start_min=0.0, end_min=100.0)]
    p = SimulateParams(**{**SMALL, "design": "crossover", "effects": near, "subject_jitter_r": 0.2,
                          "output_dir": str(tmp_path / "data")})
    with pytest.raises(ParamsError, match=r"sub-\d\d's planted correlations \(ketamine, session [12]\) are not a "
                                          r"valid correlation matrix"):
        simulate(p, n_jobs=1)
    assert not (tmp_path / "data").exists()  # nothing half-written
