"""ROI plugins against nilearn's maskers on the same grid and data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn.image import resample_img
from nilearn.maskers import NiftiLabelsMasker

from framework.anatomy import atlas_labels
from framework.errors import ParamsError
from plugins.atlas import Atlas

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
