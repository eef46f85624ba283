"""params.yaml validation: key paths in messages, exit code 2, before any work."""

from pathlib import Path

import pytest

from conftest import default_params, run_cli, write_params


def _run_with(tmp_path: Path, in_dir, mutate) -> tuple[int, str]:
    params = default_params()
    mutate(params)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    return code, err


def test_default_params_are_valid(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: None)
    assert code == 0, err


def test_missing_params_file(tmp_path, in_dir):
    in_dir(tmp_path)
    code, _, err = run_cli("--params", "nope.yaml", "extract")
    assert code == 2
    assert "nope.yaml" in err and "not found" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_key_gives_its_path(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: p["stats"].update(corection="holm"))
    assert code == 2
    assert "stats.corection: unknown key; did you mean 'correction'?" in err


@pytest.mark.parametrize("change, message", [
    (lambda p: p["connectivity"]["windows"][1].update(start_mn=0),
     "connectivity.windows[1].start_mn: unknown key; did you mean 'start_min'?"),
    (lambda p: p["stats"]["tests"].__setitem__(3, {"name": "permutation", "n_prem": 5}),
     "stats.tests[3].n_prem: unknown key; did you mean 'n_perm'?"),
    (lambda p: p["extract"]["denoise"].update(zzz=1), "extract.denoise.zzz: unknown key"),
])
def test_unknown_keys_get_a_suggestion(tmp_path, in_dir, change, message):
    code, err = _run_with(tmp_path, in_dir, change)
    assert code == 2 and message in err, err


def test_wrong_type_gives_its_path(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: p["simulate"].update(n_ketamine="twelve"))
    assert code == 2
    assert err.startswith("fclab: error: simulate.n_ketamine:")


def test_nested_list_key_path(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: p["connectivity"]["windows"][2].update(end_min="x"))
    assert code == 2
    assert "connectivity.windows[2].end_min" in err


def test_unknown_plugin_lists_available(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: p["connectivity"]["metrics"].append("pearsn"))
    assert code == 2
    assert "connectivity.metrics[1]" in err and "'pearsn'" in err
    assert "available: coherence, covariance, lagged, mtd, partial, pearson, precision, spearman, tangent" in err


def test_unknown_plugin_option(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: p["extract"]["rois"][1].update(radius=8))
    assert code == 2
    assert "extract.rois[1].radius: unknown key" in err


def test_window_on_undeclared_run(tmp_path, in_dir):
    code, err = _run_with(tmp_path, in_dir, lambda p: p["connectivity"]["windows"][1].update(run="post"))
    assert code == 2
    assert "connectivity.windows[1].run" in err


def test_invalid_yaml(tmp_path, in_dir):
    (tmp_path / "params.yaml").write_text("stats: [unclosed\n")
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    assert code == 2 and "params.yaml" in err


def test_verbose_shows_traceback(tmp_path, in_dir):
    in_dir(tmp_path)
    code, _, err = run_cli("-v", "--params", "nope.yaml", "validate", "--params-only")
    assert code == 2 and "Traceback" in err


@pytest.mark.parametrize("given,expected", [
    (["validate", "-p", "x.yaml"], ["-p", "x.yaml", "validate"]),
    (["-v", "stats", "--params=x.yaml", "-j", "2"], ["-v", "--params=x.yaml", "-j", "2", "stats"]),
    (["-p", "a.yaml", "plugins", "check", "pearson", "--kind", "metric", "-v"],
     ["-p", "a.yaml", "-v", "plugins", "check", "pearson", "--kind", "metric"]),
    (["report", "--open"], ["report", "--open"]),
    (["power", "--", "-p"], ["power", "--", "-p"]),
])
def test_global_options_after_the_subcommand_move_before_it(given, expected):
    from fclab.cli import hoist_global_options

    assert hoist_global_options(given) == expected


def test_params_option_after_the_subcommand_is_used(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "fclab.cli", "validate", "--params-only", "-p",
                          str(tmp_path / "none.yaml")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "none.yaml: params file not found" in out.stderr
