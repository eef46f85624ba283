"""The example ROI set passes fclab's conformance kit and agrees with nilearn's sphere masker."""

import nibabel as nib
import numpy as np
from nilearn.maskers import NiftiSpheresMasker

from fclab.api import DataError, check_roi_set
from fclab_example_rois import CoordsTsv


def _tsv(tmp_path, rows="vmPFC\t0\t26\t-18\nPCC\t0\t-52\t26\n"):
    path = tmp_path / "rois.tsv"
    path.write_text("name\tx\ty\tz\n" + rows)
    return str(path)


def test_coords_tsv_conforms(tmp_path):
    check_roi_set(CoordsTsv(CoordsTsv.Params(path=_tsv(tmp_path)))).assert_ok()


def test_a_missing_table_fails_the_kit(tmp_path):
    report = check_roi_set(CoordsTsv(CoordsTsv.Params(path=str(tmp_path / "none.tsv"))))
    assert not report.ok and "declared input files exist" in report.failures[0].name


def test_signals_match_nilearns_sphere_masker(tmp_path):
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = (-90, -126, -72)
    data = np.random.default_rng(0).normal(size=(61, 73, 61, 20)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    rois = CoordsTsv(CoordsTsv.Params(path=_tsv(tmp_path), radius_mm=8)).build(img)
    ours = (rois.weights @ data.reshape(-1, 20)).T
    theirs = NiftiSpheresMasker([(0, 26, -18), (0, -52, 26)], radius=8).fit_transform(img)
    assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_duplicate_names_are_an_error(tmp_path):
    roi = CoordsTsv(CoordsTsv.Params(path=_tsv(tmp_path, "a\t0\t0\t0\na\t1\t1\t1\n")))
    try:
        roi.build(nib.Nifti1Image(np.zeros((4, 4, 4), np.int8), np.eye(4)))
    except DataError as exc:
        assert "unique" in str(exc)
    else:
        raise AssertionError("duplicate ROI names were accepted")
