"""The simulator's design as a study grows, and the bytes it writes."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from zlib_ng import zlib_ng

from conftest import run_cli, small_params, write_params
from fclab.framework.params import SimulateParams
from fclab.framework.simulation.study import _design


def _table(n_ketamine, n_midazolam, seed=7):
    subjects, labels, _, seqs = _design(SimulateParams(n_ketamine=n_ketamine, n_midazolam=n_midazolam, seed=seed))
    return subjects.set_index("participant_id"), {lab: s.spawn_key for lab, s in zip(labels, seqs)}


@pytest.mark.parametrize("seed", [7, 20261126])
def test_the_design_keeps_every_subject_as_groups_grow(seed):
    for nk, nm in [(2, 2), (12, 14), (14, 12), (5, 9)]:
        table, keys = _table(nk, nm, seed)
        assert table["group"].value_counts().to_dict() == {"ketamine": nk, "midazolam": nm}
        numbers = sorted(int(s[4:]) for s in table.index)
        # 1:1 blocks: every pair of labels 2j+1, 2j+2 holds one patient of each group while both last
        for j in range(min(nk, nm)):
            assert {table.loc[f"sub-{2 * j + 1:02d}", "group"], table.loc[f"sub-{2 * j + 2:02d}", "group"]} == \
                {"ketamine", "midazolam"}
        assert len(numbers) == nk + nm and numbers[-1] <= 2 * max(nk, nm)
        for bigger in [(nk + 1, nm), (nk, nm + 1), (nk + 3, nm + 5)]:
            grown, grown_keys = _table(*bigger, seed)
            assert grown.loc[table.index].equals(table)  # same group, age and sex for everyone kept
            assert {s: grown_keys[s[4:]] for s in table.index} == {s: keys[s[4:]] for s in table.index}
            assert len(grown) == sum(bigger)
    # the draw depends on the seed
    assert not _table(12, 14, 1)[0]["group"].equals(_table(12, 14, 2)[0]["group"])


def _digests(root):
    return {str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("sub-*/**/*")) if f.is_file()}


def test_adding_a_patient_keeps_every_file_and_extracts_only_the_new_runs(tmp_path, in_dir):
    params = small_params()
    params["simulate"].update(n_ketamine=2, n_midazolam=2, baseline_duration_s=150, infusion_duration_s=300,
                              pre_onset_s=30)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    data = tmp_path / "data/simulated"
    assert run_cli("simulate")[0] == 0
    before = _digests(data)
    code, _, err = run_cli("extract")
    assert code == 0, err
    for group in ("midazolam", "ketamine"):
        params["simulate"][f"n_{group}"] += 1
        write_params(tmp_path, params)
        assert run_cli("simulate")[0] == 0
        after = _digests(data)
        assert {k: after[k] for k in before} == before  # every existing subject's files, byte for byte
        subjects = {k.split("/")[0] for k in before}
        new = {k.split("/")[0] for k in after.keys() - before.keys()}
        assert len(new) == 1 and len(after) == len(before) * (len(subjects) + 1) // len(subjects)
        assert pd.read_csv(data / "participants.tsv", sep="\t").set_index("participant_id").loc[
            new.pop(), "group"] == group
        code, _, err = run_cli("extract")
        assert code == 0, err
        assert f"extract: 2 runs extracted, {2 * len(subjects)} from the per-run cache" in err
        before = after


def test_the_gzip_bytes_are_zlibs():
    rng = np.random.default_rng(3)
    noise = np.rint(1000 + 10 * rng.standard_normal(300_000)).astype(np.int16)
    image = np.concatenate([np.zeros(50_000, np.int16), noise, np.zeros(7, np.int16), noise[:999]]).tobytes()
    for data in (image, rng.bytes(100_000), b"", b"\0" * 70_000):
        ng = zlib_ng.compressobj(1, zlib_ng.DEFLATED, 31, 9, zlib_ng.Z_RLE)
        ref = zlib.compressobj(1, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
        out = ng.compress(data) + ng.flush()
        assert out == ref.compress(data) + ref.flush()
        assert gzip.decompress(out) == data and out[4:8] == b"\0\0\0\0"  # no timestamp


def test_the_nifti_bytes_are_nibabels(tmp_path):
    from fclab.framework.simulation.study import _save_gz

    rng = np.random.default_rng(0)
    for data in (rng.integers(-900, 1500, (4, 5, 6, 7)).astype(np.int16), (rng.random((3, 4, 5)) > 0.5).astype(np.uint8)):
        data = np.asfortranarray(data)
        img = nib.Nifti1Image(data, np.diag([6.0, 6.0, 6.0, 1.0]))
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = 2.5
        reference = nib.Nifti1Image(data, img.affine, img.header.copy()).to_bytes()
        _save_gz(img, tmp_path / "x.nii.gz")
        assert gzip.decompress((tmp_path / "x.nii.gz").read_bytes()) == reference
        with pytest.raises(ValueError):
            _save_gz(nib.Nifti1Image(np.ascontiguousarray(data)[..., :2], img.affine), tmp_path / "y.nii.gz")


def test_the_fast_run_writers_give_the_plain_numpy_values():
    """The blocked helpers of _write_run against the one-line numpy they replace: the volumes scattered
    into a Fortran image by a boolean mask, DVARS from a float64 copy's diff, the confounds TSV from
    pandas' to_csv (bit for bit: the same additions in the same order)."""
    from types import SimpleNamespace

    from fclab.framework.simulation.study import _confounds_tsv, _sum_squared_steps, _volumes

    rng = np.random.default_rng(3)
    brain = rng.random((7, 8, 9)) > 0.4
    anat = SimpleNamespace(shape=brain.shape, brain=brain)
    for T in (1, 5, 33, 70):  # under, at and over a block of volumes
        data = (rng.standard_normal((brain.sum(), T)) * 90 + 1000).astype(np.float32)
        data[0, 0] = 1000.5  # half-way: rounds to even, as np.rint
        full = np.zeros((*brain.shape, T), dtype=np.int16, order="F")
        full[brain] = np.rint(data).astype(np.int16)
        assert np.array_equal(_volumes(data, anat), full.T) and _volumes(data, anat).flags.c_contiguous
        for block in (7, 256):  # one block, several, and a short last one
            expect = (np.diff(data.astype(np.float64), axis=1) ** 2).sum(axis=0)
            assert np.array_equal(_sum_squared_steps(data, block), expect)
    table = {"a": rng.standard_normal(6) * 1e-7, "b_x": np.r_[np.nan, rng.standard_normal(5) * 1e4],
             "c": np.arange(6.0)}
    assert _confounds_tsv(table) == pd.DataFrame(table).to_csv(sep="\t", index=False, float_format="%.6g",
                                                               na_rep="n/a", lineterminator="\n")


def test_the_cached_anatomy_is_the_one_built(tmp_path, monkeypatch):
    from fclab.framework.simulation.study import Anatomy

    monkeypatch.setenv("FCLAB_CACHE", str(tmp_path / "cache"))
    fresh = Anatomy(6)
    first = Anatomy.cached(6)  # built and stored
    (path,) = (tmp_path / "cache" / "simulate").glob("anatomy-*.npz")
    for attempt in ("stored", "truncated", "junk"):
        again = Anatomy.cached(6)  # read back; a damaged file is built again
        for k in (*Anatomy.ARRAYS, "gm", "xyz", "shape"):
            assert np.array_equal(getattr(again, k), getattr(fresh, k)), (attempt, k)
            assert np.array_equal(getattr(first, k), getattr(fresh, k)), k
        path.write_bytes(path.read_bytes()[:200] if attempt == "stored" else b"not an npz")
    assert len(list(path.parent.iterdir())) == 1  # no temporary file left
    # the key follows the code that builds it: another anatomy.py is another entry
    from fclab.framework.extraction import anatomy

    changed = tmp_path / "anatomy.py"
    changed.write_text(Path(anatomy.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(anatomy, "__file__", str(changed))
    Anatomy.cached(6)
    assert len(list(path.parent.glob("anatomy-*.npz"))) == 2
