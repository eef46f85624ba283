"""Streamed BOLD reading (framework/extraction/stream.py) against nibabel, and extraction of float32 runs against
an exact float64 reference and nilearn."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import run_cli, small_params, write_params
from fclab.framework.extraction import stream as stream_module
from fclab.framework.errors import DataError
from fclab.framework.io import file_digest
from fclab.framework.extraction.stream import VolumeStream, flat_index

SHAPE, T = (7, 6, 5), 23
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _image(dtype, slope=None, inter=None, endian="<"):
    rng = np.random.default_rng(3)
    data = (1000 + 40 * rng.standard_normal((*SHAPE, T))).astype(np.dtype(dtype).newbyteorder(endian))
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_data_dtype(data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    return img


@pytest.mark.parametrize("dtype, slope, inter, endian, suffix", [
    ("int16", None, None, "<", ".nii.gz"),
    ("float32", None, None, "<", ".nii.gz"),
    ("float64", None, None, ">", ".nii.gz"),
    ("int16", 0.5, 10.0, "<", ".nii.gz"),
    ("uint8", None, None, "<", ".nii"),
    ("float32", 2.0, -3.0, ">", ".nii"),
])
@pytest.mark.parametrize("slab_bytes", [None, 3 * 7 * 6 * 5])
def test_slabs_equal_nibabel_and_digest_the_file(tmp_path, dtype, slope, inter, endian, suffix, slab_bytes):
    path = tmp_path / f"bold{suffix}"
    nib.save(_image(dtype, slope, inter, endian), path)
    img = nib.load(path)
    want = np.asarray(img.dataobj).astype(np.float64)  # nibabel's scaling
    s = VolumeStream(path, img, slab_bytes)
    got = np.concatenate([s.scaled(slab) for _, slab in s])
    assert got.shape == (T, np.prod(SHAPE))
    np.testing.assert_allclose(got, want.reshape(-1, T, order="F").T, rtol=1e-7)
    if slope is None:
        np.testing.assert_array_equal(got, want.reshape(-1, T, order="F").T)  # unscaled: exact
    assert s.digest == file_digest(path)
    assert s.gzipped == suffix.endswith(".gz")


def test_flat_index_maps_c_order_voxels_to_the_file_order():
    c = np.array([0, 1, 5, 6 * 5, 7 * 6 * 5 - 1])
    grid = np.arange(np.prod(SHAPE)).reshape(SHAPE)  # C-order position of each voxel
    as_file = grid.ravel(order="F")  # what the file holds at each position
    np.testing.assert_array_equal(as_file[flat_index(c, SHAPE)], c)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], "data block unreadable"),
    (lambda raw: raw[:-6] + bytes([raw[-6] ^ 0xFF]) + raw[-5:], "data block unreadable"),  # CRC
    (lambda raw: gzip.compress(gzip.decompress(raw)[:-1000]), "ends within volume"),
])
def test_damaged_gzip_is_a_data_error_naming_the_file(tmp_path, damage, message):
    path = tmp_path / "bold.nii.gz"
    nib.save(_image("float32"), path)
    img = nib.load(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=f"{path}: .*{message}"):
        for _ in VolumeStream(path, img):
            pass


def test_short_uncompressed_file_is_a_data_error(tmp_path):
    path = tmp_path / "bold.nii"
    nib.save(_image("int16"), path)
    img = nib.load(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"{path}: data block unreadable .*volume {T} of {T}"):
        list(VolumeStream(path, img))


def test_streamed_smoothing_over_many_slabs_equals_smoothing_the_image(tmp_path, monkeypatch):
    """Smoothing slab by slab (one volume per slab here) gives nilearn's smooth_img of the whole image."""
    from nilearn.image import smooth_img

    from fclab.framework.extraction.engine import read_run

    path = tmp_path / "bold.nii.gz"
    nib.save(_image("int16"), path)
    img = nib.load(path)
    monkeypatch.setattr(stream_module, "SLAB_BYTES", 2 * np.prod(SHAPE))
    cols = np.array([3, 40, 41, 100, 150, 209])
    weights = sp.csr_matrix(np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 1 / 3, 1 / 3, 1 / 3, 0]]))
    signals, (mean, sd, bad), qc, digest = read_run(path, img, weights, cols, np.array([7, 8]), 6.0)
    whole = np.asarray(smooth_img(nib.Nifti1Image(np.asarray(img.dataobj, np.float64), AFFINE), 6.0).dataobj)
    vox = whole.reshape(-1, T)[cols]  # C-order voxel rows
    np.testing.assert_allclose(signals, (weights @ vox).T, rtol=1e-12)
    np.testing.assert_allclose(mean, vox.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(sd, vox.std(axis=1), rtol=1e-9)
    np.testing.assert_allclose(qc, whole.reshape(-1, T)[[7, 8]], rtol=1e-12)
    assert not bad.any() and digest == file_digest(path)


def test_float32_runs_match_an_exact_float64_reference(small_study, tmp_path, in_dir):
    """On float32 BOLD, fclab's signals equal nilearn's computed in float64 (the exact reference) to
    1e-6; nilearn given the float32 image rounds its ROI means to float32 (signal_extraction.py,
    ``target_datatype``), which is why it differs from both by ~1e-4 of a z-scored signal."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    from test_bad_input import SUB, _amygdala_masker, func

    shutil.copytree(small_study / "data", tmp_path / "data")
    bold = func(tmp_path, 2, "_bold.nii.gz")
    img = nib.load(bold)
    rng = np.random.default_rng(0)  # fractional values around 1,000: float32 keeps ~7 digits of them
    data = (np.asarray(img.dataobj) + rng.uniform(-0.5, 0.5, img.shape)).astype(np.float32)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(data, img.affine, header), bold)
    assert nib.load(bold).get_data_dtype() == np.float32
    params = small_params()
    params["extract"]["data"]["include"] = [SUB]
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("extract")
    assert code == 0, err
    ts = pd.read_parquet(tmp_path / "results/extract/timeseries.parquet")
    ours = ts.loc[ts["run"] == "infusion", ["Left_Amygdala", "Right_Amygdala"]].to_numpy()
    confounds, _ = load_confounds_strategy(str(bold), denoise_strategy="simple")
    kw = dict(detrend=True, standardize="zscore_sample", low_pass=0.08, high_pass=0.01, t_r=2.5)
    exact = _amygdala_masker(**kw).fit_transform(nib.Nifti1Image(data.astype(np.float64), img.affine),
                                                 confounds=confounds)
    rounded = _amygdala_masker(**kw).fit_transform(str(bold), confounds=confounds)
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-9)
    assert np.abs(rounded - exact).max() > 100 * max(np.abs(ours - exact).max(), 1e-12)


def test_gunzipped_derivatives_are_found_and_give_the_gzipped_runs_signals(small_study, tmp_path, in_dir):
    """A study whose BOLD and masks were gunzipped (to be memory-mapped) is found by discovery and
    extracts to the very values of the same study gzipped; a run with both is a one-line error."""
    from test_bad_input import SUB

    params = small_params()
    params["extract"]["data"]["include"] = [SUB]
    tables = {}
    for name in ("gz", "nii"):
        work = tmp_path / name
        shutil.copytree(small_study / "data", work / "data")
        if name == "nii":
            for f in (work / "data/simulated" / f"sub-{SUB}" / "func").glob("*.nii.gz"):
                f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
                f.unlink()
        write_params(work, params)
        in_dir(work)
        code, _, err = run_cli("extract")
        assert code == 0, err
        tables[name] = {t: pd.read_parquet(work / f"results/extract/{t}.parquet")
                        for t in ("timeseries", "roi_qc", "run_qc", "motion")}
    assert tables["nii"]["run_qc"]["bold"].str.endswith("_bold.nii").all()
    for t, frame in tables["gz"].items():
        other = tables["nii"][t]
        if t == "run_qc":
            frame, other = frame.drop(columns="bold"), other.drop(columns="bold")
        pd.testing.assert_frame_equal(frame, other, check_exact=True)
    # both forms of one run: which one is meant is not guessed
    func = tmp_path / "nii/data/simulated" / f"sub-{SUB}" / "func"
    bold = next(func.glob("*run-1*_bold.nii"))
    shutil.copy(tmp_path / "gz/data/simulated" / f"sub-{SUB}" / "func" / (bold.name + ".gz"), func)
    code, _, err = run_cli("extract")
    assert code == 1 and err.count("\n") == 1
    assert "2 preprocessed BOLD files match" in err and f"{bold.name}.gz, {bold.name})" in err
