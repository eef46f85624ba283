"""Backends for independent jobs (framework/executor.py): a dask cluster gives the local pool's bytes,
and the SLURM job script is rendered from params without a queue."""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli, small_params, write_params


def test_extract_on_a_dask_local_cluster_gives_the_local_bytes(small_study, tmp_path, in_dir):
    pytest.importorskip("distributed")
    shutil.copytree(small_study / "data", tmp_path / "data")
    params = small_params()
    params["extract"]["data"]["include"] = ["01", "02", "03"]
    write_params(tmp_path, params)
    in_dir(tmp_path)
    off = {"FCLAB_CACHE": "off"}
    code, _, err = run_cli("extract", env=off)
    assert code == 0, err
    local = {f.name: f.read_bytes() for f in sorted((tmp_path / "results/extract").iterdir())}
    params["executor"] = {"kind": "dask", "workers": 2}
    write_params(tmp_path, params)
    code, out, err = run_cli("executor")
    assert code == 0 and "executor: dask, a local cluster of 2 workers" in out
    code, _, err = run_cli("extract", env=off)
    assert code == 0, err
    now = {f.name: f.read_bytes() for f in sorted((tmp_path / "results/extract").iterdir())}
    assert [k for k in local if local[k] != now[k]] == []


def test_slurm_job_script_from_params(tmp_path, in_dir):
    pytest.importorskip("dask_jobqueue")
    params = small_params()
    params["executor"] = {"kind": "slurm", "workers": 8, "slurm": {
        "queue": "short", "account": "neurolab", "cores": 2, "memory": "8GB", "walltime": "02:00:00",
        "job_extra_directives": ["--qos=normal"], "job_script_prologue": ["source /opt/fclab/.venv/bin/activate"]}}
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, out, err = run_cli("executor")
    assert code == 0, err
    assert "executor: slurm, 8 jobs of this script:" in out
    for line in ("#SBATCH -p short", "#SBATCH -A neurolab", "#SBATCH -n 1", "#SBATCH --cpus-per-task=2",
                 "#SBATCH -t 02:00:00", "#SBATCH --qos=normal", "source /opt/fclab/.venv/bin/activate",
                 "distributed.cli.dask_worker", "--nthreads 2"):
        assert line in out, line
    assert "#SBATCH --mem=" in out


def test_executor_kind_is_checked(tmp_path, in_dir):
    params = small_params()
    params["executor"] = {"kind": "kubernetes"}
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("executor")
    assert code == 2 and "executor.kind" in err


def test_malloc_keeps_freed_memory_on_glibc():
    """The CLI's malloc setting applies here (glibc); the dask test above compares its bytes with
    workers that never had it (distributed starts them fresh)."""
    import platform

    from fclab.framework.executor import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory() is True
