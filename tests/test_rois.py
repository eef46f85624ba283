"""ROI plugins against nilearn's maskers on the same grid and data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn.image import resample_img
from nilearn.maskers import NiftiLabelsMasker

from fclab.framework.extraction.anatomy import atlas_labels
from fclab.framework.errors import ParamsError
from fclab.plugins.atlas import Atlas

AFFINE = np.array([[4.0, 0, 0, -90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
SHAPE = (46, 55, 46)


@pytest.fixture(scope="module")
def bold():
    rng = np.random.default_rng(0)
    return nib.Nifti1Image(rng.normal(100, 10, (*SHAPE, 12)).astype(np.float64), AFFINE)


def ours(plugin, bold):
    w = plugin.build(bold)
    return (w.weights @ np.asarray(bold.dataobj).reshape(-1, bold.shape[3])).T, w.names


def nilearn_labels(label_img, groups, bold):
    """NiftiLabelsMasker on the label image resampled to the BOLD grid, each ROI's labels mapped to r + 1."""
    res = resample_img(label_img, target_affine=bold.affine, target_shape=bold.shape[:3], interpolation="nearest",
                       force_resample=True, copy_header=True)
    data = np.asarray(res.dataobj)
    mapped = np.zeros(data.shape, np.int32)
    for r, values in enumerate(groups):
        mapped[np.isin(data, values)] = r + 1
    masker = NiftiLabelsMasker(nib.Nifti1Image(mapped, bold.affine), strategy="mean", resampling_target=None,
                               standardize=None)
    return masker.fit_transform(bold)


@pytest.mark.parametrize("params", [
    {"atlas": "aal", "labels": ["Amygdala_.*", "Frontal_Med_Orb_.*"], "regex": True},
    {"atlas": "juelich", "labels": ["GM_Amygdala_laterobasal_group_L", "GM_Amygdala_laterobasal_group_R"]},
    {"atlas": "harvard_oxford", "labels": [], "merge": {"Amygdala": ["Left_Amygdala", "Right_Amygdala"]}},
])
def test_atlas_matches_nilearn_labels_masker(params, bold):
    plugin = Atlas(Atlas.Params(**params))
    got, names = ours(plugin, bold)
    roi_names, groups = plugin.selection()
    assert names == roi_names
    ref = nilearn_labels(atlas_labels(plugin.params.atlas, plugin.params.threshold)[0], groups, bold)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_atlas_regex_order_and_merge_names():
    plugin = Atlas(Atlas.Params(atlas="aal", labels=["Amygdala_.*"], regex=True,
                                merge={"Amygdala": ["Amygdala_[LR]"]}))
    names, groups = plugin.selection()
    assert names == ["Amygdala_L", "Amygdala_R", "Amygdala"]
    assert groups == [[4201], [4202], [4201, 4202]]


@pytest.mark.parametrize("params, message", [
    ({"atlas": "aal", "labels": ["Amygdale_.*"], "regex": True}, "'Amygdale_.*' matches no aal label"),
    ({"atlas": "aal", "labels": ["("], "regex": True}, "'(' is not a regular expression"),
    ({"atlas": "juelich", "labels": [], "merge": {"X": ["nope"]}}, "merge.X: 'nope' is not a juelich label"),
])
def test_atlas_selection_errors_name_the_key(params, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(".", r"\.").replace("*", r"\*")):
        Atlas(Atlas.Params(**params)).selection()


def _blob_maps(tmp_path):
    """Three overlapping Gaussian maps on a 3 mm grid (not the BOLD grid), as a 4D NIfTI."""
    aff = np.array([[3.0, 0, 0, -80], [0, 3, 0, -110], [0, 0, 3, -60], [0, 0, 0, 1]])
    ijk = np.indices((55, 70, 50)).reshape(3, -1).T
    xyz = nib.affines.apply_affine(aff, ijk)
    maps = []
    for centre in ((-20, -5, -18), (20, -4, -17), (0, 26, -10)):
        d2 = ((xyz - centre) ** 2).sum(1)
        m = np.exp(-d2 / (2 * 8.0**2))
        m[m < 0.05] = 0
        maps.append(m.reshape(55, 70, 50))
    path = tmp_path / "maps.nii.gz"
    nib.save(nib.Nifti1Image(np.stack(maps, -1).astype(np.float32), aff), path)
    return path


def test_maps_match_nilearn_maps_masker(bold, tmp_path):
    from nilearn.maskers import NiftiMapsMasker

    from fclab.plugins.maps import Maps

    path = _blob_maps(tmp_path)
    got, names = ours(Maps(Maps.Params(path=str(path), names=["L", "R", "M"])), bold)
    ref = NiftiMapsMasker(str(path), resampling_target="data", standardize=None).fit_transform(bold)
    assert names == ["L", "R", "M"]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_labels_file_and_masks_match_nilearn(bold, tmp_path):
    from nilearn.maskers import NiftiMasker

    from fclab.plugins.labels_file import LabelsFile
    from fclab.plugins.masks import Masks

    label_img, names, values = atlas_labels("aal", 0)
    img_path = tmp_path / "labels.nii.gz"
    nib.save(label_img, img_path)
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("index\tname\n" + "".join(f"{v}\t{n}\n" for n, v in zip(names, values)))
    plugin = LabelsFile(LabelsFile.Params(path=str(img_path), labels=str(tsv), names=["Amygdala_R", "Insula_L"]))
    got, got_names = ours(plugin, bold)
    ref = nilearn_labels(label_img, [[values[names.index("Amygdala_R")]], [values[names.index("Insula_L")]]], bold)
    assert got_names == ["Amygdala_R", "Insula_L"]
    np.testing.assert_allclose(got, ref, rtol=1e-6)

    data = np.asarray(label_img.dataobj)
    mask_paths = {}
    for name in ("Amygdala_L", "Hippocampus_L"):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image((data == values[names.index(name)]).astype(np.uint8), label_img.affine), path)
        mask_paths[name] = str(path)
    got, _ = ours(Masks(Masks.Params(masks=mask_paths)), bold)
    for k, path in enumerate(mask_paths.values()):
        mask = resample_img(nib.load(path), target_affine=bold.affine, target_shape=bold.shape[:3],
                            interpolation="nearest", force_resample=True, copy_header=True)
        ref = NiftiMasker(mask, standardize=None).fit_transform(bold).mean(axis=1)
        np.testing.assert_allclose(got[:, k], ref, rtol=1e-6)


def test_rois_plugins_bad_input(tmp_path, bold):
    from fclab.framework.errors import DataError
    from fclab.plugins.labels_file import LabelsFile
    from fclab.plugins.maps import Maps

    with pytest.raises(DataError, match="nope.nii.gz: file not found"):
        LabelsFile(LabelsFile.Params(path=str(tmp_path / "nope.nii.gz"), labels=str(tmp_path / "x.tsv"))).build(bold)
    path = _blob_maps(tmp_path)
    with pytest.raises(ParamsError, match="2 names for 3 maps"):
        Maps(Maps.Params(path=str(path), names=["a", "b"])).build(bold)


def test_spheres_match_nilearn_spheres_masker_at_random_centres_and_ties(bold):
    """Random centres, a third of them on voxel midpoints and a third on whole millimetres, with radii
    at which voxel centres lie exactly on the sphere (4, 4√2, 4√3, 8 mm on this 4 mm grid) or that
    are smaller than a voxel: the same voxels, so the same signals, as NiftiSpheresMasker."""
    from nilearn.maskers import NiftiSpheresMasker

    from fclab.plugins.spheres import Spheres

    rng = np.random.default_rng(7)
    ijk = rng.integers(6, np.array(SHAPE) - 6, (30, 3)).astype(float)
    ijk[10:20] += 0.5
    ijk[20:] += rng.random((10, 3))
    centres = nib.affines.apply_affine(AFFINE, ijk)
    centres[:10] = np.round(centres[:10])
    data = np.asarray(bold.dataobj).reshape(-1, bold.shape[3])
    for radius in (4.0, 4 * np.sqrt(2), 4 * np.sqrt(3), 8.0, 1.5, 2.0, 6.0):
        named = {f"s{k}": tuple(c) for k, c in enumerate(centres)}
        weights = Spheres(Spheres.Params(centres=named, radius_mm=float(radius), allow_overlap=True)).build(bold)
        ours = (weights.weights @ data).T
        ref = NiftiSpheresMasker(list(map(tuple, centres)), radius=float(radius), allow_overlap=True,
                                 standardize=None).fit_transform(bold)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, err_msg=f"radius {radius}")
