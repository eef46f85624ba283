"""The public plugin API (fclab.api) and the conformance kit: built-in plugins use only the API and
pass the kit; the kit fails plugins that break each promise; fclab installs one import name."""

from __future__ import annotations

import ast
import importlib.metadata as md
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import fclab.api as api
from conftest import ROOT, run_cli
from fclab.framework.pluginhost.registry import get_registry

PLUGIN_FILES = sorted(p for p in (ROOT / "plugins").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=[p.stem for p in PLUGIN_FILES])
def test_builtin_plugins_import_only_the_public_api(path):
    """Built-in plugins are written as a third party would write them: fclab.api and nothing else of fclab."""
    tree = ast.parse(path.read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            used.add(node.module)
        elif isinstance(node, ast.Import):
            used.update(a.name for a in node.names)
    inside = {m for m in used if m == "fclab" or m.startswith("fclab.")}
    assert inside == {"fclab.api"}, inside


def test_api_exports_what_it_lists_and_its_version_follows_the_distribution():
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing
    assert len(set(api.__all__)) == len(api.__all__)
    major, minor = md.version("fclab").split(".")[:2]
    assert api.API_VERSION == f"{major}.{minor}"
    # the example distribution declares the range the stability promise gives
    for example in (ROOT / "examples").glob("*/pyproject.toml"):
        assert f'"fclab>={major}.{minor},<{major}.{int(minor) + 1}"' in example.read_text(), example


def test_importing_the_directories_under_their_bare_names_is_refused():
    out = subprocess.run([sys.executable, "-c", "import framework"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "import fclab.framework, not framework" in out.stderr


def test_the_wheel_installs_one_import_name(tmp_path):
    """Built from the tracked files: only fclab/ (and its dist-info), templates included, no tests."""
    src = tmp_path / "src"
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split():
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wheel, = (tmp_path / "dist").glob("fclab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"fclab", f"fclab-{md.version('fclab')}.dist-info"}
    tracked = [rel for rel in subprocess.run(["git", "ls-files", "framework", "plugins"], cwd=ROOT,
                                             capture_output=True, text=True).stdout.split() if rel.endswith(".py")]
    for must in ["fclab/api.py", "fclab/cli.py", "fclab/framework/report/templates/report.html.j2",
                 "fclab/framework/report/templates/subject.html.j2", *(f"fclab/{rel}" for rel in tracked)]:
        assert must in names, must  # every module of every package of framework/, and the templates
    eps = zipfile.ZipFile(wheel).read(f"fclab-{md.version('fclab')}.dist-info/entry_points.txt").decode()
    assert "fclab = fclab.cli:entry" in eps and "pearson = fclab.plugins.pearson" in eps


# ---------------------------------------------------------------------------- every built-in passes the kit

def _mni_image(data, tmp_path, name):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-90, -126, -72)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _roi_options(name, tmp_path):
    """Options for the ROI sets that read files: two boxes around the amygdalae and a vmPFC box."""
    shape = (91, 109, 91)
    labels = np.zeros(shape, np.int16)
    labels[25:30, 55:60, 25:30] = 1
    labels[60:65, 55:60, 25:30] = 2
    if name == "labels_file":
        (tmp_path / "labels.tsv").write_text("index\tname\n1\tL\n2\tR\n")
        return {"path": str(_mni_image(labels, tmp_path, "labels.nii.gz")), "labels": str(tmp_path / "labels.tsv")}
    if name == "masks":
        one = (labels == 1).astype(np.uint8)
        return {"masks": {"left": str(_mni_image(one, tmp_path, "left.nii.gz"))}}
    if name == "surface_labels":
        import surface_data as sd

        files = {}
        for hemi, lab in sd.study_labels("fsLR", 6, seed=1).items():
            sd.write_label_gifti(lab, tmp_path / f"{hemi}.label.gii")
            files["left" if hemi == "L" else "right"] = str(tmp_path / f"{hemi}.label.gii")
        return files
    if name == "maps":
        maps = np.stack([(labels == k).astype(np.float32) * 0.5 for k in (1, 2)], axis=-1)
        return {"path": str(_mni_image(maps, tmp_path, "maps.nii.gz")), "names": ["L", "R"]}
    return {}


KINDS = ("roi", "metric", "test")


@pytest.mark.parametrize("kind,name", [(k, n) for k in KINDS for n in sorted(get_registry().get_all(k))])
def test_every_builtin_plugin_passes_the_kit(kind, name, tmp_path):
    cls = get_registry().get_all(kind)[name]
    opts = _roi_options(name, tmp_path) if kind == "roi" else {}
    if name in ("permutation", "nbs"):
        opts = {"n_perm": 500}
    report = api.check_plugin(cls(cls.Params.model_validate(opts)))
    report.assert_ok()
    assert len(report.checks) >= 5


def test_stat_tests_pass_the_kit_on_another_metrics_values():
    from fclab.plugins.coherence import Coherence
    from fclab.plugins.mmrm import Mmrm

    api.check_stat_test(Mmrm(), metric=Coherence()).assert_ok()


# ---------------------------------------------------------------------------- the kit catches breaches

class _Pearson(api.Metric):
    name = "mutant"
    scale = "r"
    affine_invariant = True

    def compute(self, ts, tr):
        return api.correlation(ts)


class Asymmetric(_Pearson):
    def compute(self, ts, tr):
        r = api.correlation(ts)
        return r + np.triu(np.full(r.shape[-2:], 0.01), 1)


class WrongRanges(_Pearson):
    def compute_ranges(self, ts, starts, stops, tr):
        return {"": np.stack([api.correlation(ts) for _ in starts])}  # ignores the windows


class WrongTriangle(_Pearson):
    def compute_edges(self, ts, starts, stops, tr):
        full = self.compute_ranges(ts, starts, stops, tr)[""]
        il = np.tril_indices(ts.shape[1], -1)  # the lower triangle: other edges' order
        return {"": full[:, il[0], il[1]] * 0.5}


class NegativeOnANonNegativeScale(_Pearson):
    scale = "mi"
    scales = (api.Scale("mi", "MI", signed=False, low=0.0),)

    def compute(self, ts, tr):
        return -api.correlation(ts)


class FalselyAffineInvariant(_Pearson):
    def compute(self, ts, tr):
        x = ts - ts.mean(axis=-2, keepdims=True)
        return np.swapaxes(x, -1, -2) @ x / ts.shape[-2]


class NoBatch(_Pearson):
    def compute(self, ts, tr):
        return np.corrcoef(ts.reshape(-1, ts.shape[-1]).T)


class InfOnConstant(_Pearson):
    def compute(self, ts, tr):
        x = ts - ts.mean(axis=-2, keepdims=True)
        sd = np.sqrt((x**2).sum(axis=-2, keepdims=True))
        with np.errstate(all="ignore"):
            r = np.swapaxes(x / sd, -1, -2) @ (x / sd)
        return np.nan_to_num(r, nan=np.inf)


class ReasonlessProblem(_Pearson):
    def problem(self, n_volumes, tr):
        return None if n_volumes >= 10 else ""


@pytest.mark.parametrize("cls,check", [
    (Asymmetric, "symmetry as declared"),
    (WrongRanges, "compute_ranges equals compute"),
    (WrongTriangle, "compute_edges equals the upper triangle"),
    (NegativeOnANonNegativeScale, "values within the declared scale"),
    (FalselyAffineInvariant, "affine invariance"),
    (NoBatch, "leading batch dimensions"),
    (InfOnConstant, "constant ROI signal"),
    (ReasonlessProblem, "problem() gives a minimum length"),
])
def test_the_kit_fails_a_metric_that_breaks_a_promise(cls, check):
    report = api.check_metric(cls())
    failed = [c.name for c in report.failures]
    assert any(check in f for f in failed), (check, report.lines())
    with pytest.raises(AssertionError, match="breaks the contract"):
        report.assert_ok()


class _Welch(api.StatTest):
    name = "mutant_test"
    terms = ("group:window",)

    def run(self, edges, design):
        design.check(self.name)
        return api.welch_change(edges, design)


class PAboveOne(_Welch):
    def run(self, edges, design):
        out = super().run(edges, design)
        out["p"] = out["p"] * 3
        return out


class IntervalMissesEstimate(_Welch):
    def run(self, edges, design):
        out = super().run(edges, design)
        out["estimate"] = out["ci_high"] + 1
        return out


class NoN(_Welch):
    def run(self, edges, design):
        return super().run(edges, design).drop(columns="n")


class Unseeded(_Welch):
    def run(self, edges, design):
        out = super().run(edges, design)
        out["stat"] = out["stat"] + np.random.default_rng().normal(size=len(out))
        return out


class ReversedSign(_Welch):
    def run(self, edges, design):
        out = super().run(edges, design)
        out[["estimate", "ci_low", "ci_high"]] = -out[["estimate", "ci_high", "ci_low"]].to_numpy()
        return out


class NoGroupCheck(_Welch):
    def run(self, edges, design):
        return api.welch_change(edges, design).assign(reason=None, p=0.5)


class UndeclaredTerm(_Welch):
    def run(self, edges, design):
        return super().run(edges, design).assign(term="group")


@pytest.mark.parametrize("cls,check", [
    (PAboveOne, "p in [0, 1]"),
    (IntervalMissesEstimate, "ci_low ≤ estimate ≤ ci_high"),
    (NoN, "documented columns"),
    (Unseeded, "deterministic"),
    (ReversedSign, "sign of the planted group difference"),
    (NoGroupCheck, "a group of one subject"),
    (UndeclaredTerm, "declared terms"),
])
def test_the_kit_fails_a_test_that_breaks_a_promise(cls, check):
    report = api.check_stat_test(cls())
    failed = [c.name for c in report.failures]
    assert any(check in f for f in failed), (check, report.lines())


class _Box(api.RoiSet):
    name = "mutant_roi"

    def build(self, reference):
        n = int(np.prod(reference.shape[:3]))
        w = np.zeros((2, n))
        w[0, n // 2] = 1.0
        w[1, n // 2 + 1] = 1.0
        import scipy.sparse as sp

        return api.RoiWeights(["a", "b"], sp.csr_matrix(w))


class EmptyRoi(_Box):
    def build(self, reference):
        w = super().build(reference)
        return api.RoiWeights(w.names, w.weights.multiply(np.array([[1.0], [0.0]])).tocsr())


class DuplicateNames(_Box):
    def build(self, reference):
        return api.RoiWeights(["a", "a"], super().build(reference).weights)


class MissingInput(_Box):
    def input_files(self):
        return ["/nonexistent/atlas.nii.gz"]


@pytest.mark.parametrize("cls,check", [
    (EmptyRoi, "no empty ROI"),
    (DuplicateNames, "unique names"),
    (MissingInput, "declared input files exist"),
])
def test_the_kit_fails_an_roi_set_that_breaks_a_promise(cls, check):
    report = api.check_roi_set(cls())
    failed = [c.name for c in report.failures]
    assert any(check in f for f in failed), (check, report.lines())


def test_version_names_the_api_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"fclab {md.version('fclab')} (plugin API {api.API_VERSION})"


def test_plugins_check_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("plugins", "check", "pearson")
    assert code == 0, err
    assert "metric plugin 'pearson'" in out and "13 of 13 checks passed" in out
    code, _, err = run_cli("plugins", "check", "pearsn")
    assert code == 2 and "did you mean 'pearson'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("plugins", "check", "labels_file")  # needs options params.yaml does not give
    assert code == 2 and "labels_file.path: Field required" in err
    (tmp_path / "params.yaml").write_text("extract:\n  rois:\n    - name: labels_file\n"
                                          f"      path: {tmp_path / 'none.nii.gz'}\n      labels: {tmp_path / 'x.tsv'}\n")
    code, out, _ = run_cli("plugins", "check", "labels_file")
    assert code == 1 and "FAIL  declared input files exist" in out


def test_fake_study_carries_the_planted_effect():
    """The kit's study is what its docstring says: an increase of A–B in the target group after baseline."""
    edges = api.fake_edges(n_per_group=(40, 40), seed=2)
    design = api.fake_design(edges)
    res = api.welch_change(edges, design)
    ab = res[(res["roi_a"] == "A") & (res["roi_b"] == "B")]
    others = res[~((res["roi_a"] == "A") & (res["roi_b"] == "B"))]
    assert (ab["estimate"] > 0.2).all() and (ab["p"] < 1e-3).all()  # Δz = atanh(.6) − atanh(.3) ≈ 0.38
    assert (others["estimate"].abs() < 0.2).all()
    assert set(design.subjects.columns) >= {"subject", "group", "age", "sex", "mean_fd"}
    assert isinstance(edges, pd.DataFrame) and edges["value"].notna().all()


@pytest.mark.parametrize("plugin", [
    "pearson", "tangent", Asymmetric, WrongRanges, InfOnConstant, ReasonlessProblem,  # metrics
    "mmrm", PAboveOne, Unseeded, ReversedSign,  # tests
    "spheres", DuplicateNames, MissingInput,  # ROI sets (surface ones: the whole-run kit test)
])
def test_each_check_runs_on_its_own_with_the_outcome_of_the_whole_run(plugin):
    """The kit is one function per check (framework/conformance/): run alone (``only=``), each check of
    a plugin passes or fails with the same reason as in the whole run, on plugins that keep the contract
    and on ones that break one promise."""
    from fclab.framework.conformance import plugin_checks
    from fclab.framework.pluginhost.registry import get_registry

    def make():
        if isinstance(plugin, str):
            return next(cls for k in ("roi", "metric", "test") for n, cls in get_registry().get_all(k).items()
                        if n == plugin)()
        return plugin()

    whole = api.check_plugin(make())
    steps = plugin_checks(make())
    assert [c.name for c in whole.checks] == [s.name for s in steps][:len(whole.checks)]
    for check in whole.checks:
        alone = api.check_plugin(make(), only=check.name)
        assert [(c.name, c.ok, c.detail) for c in alone.checks] == [(check.name, check.ok, check.detail)], check.name
    with pytest.raises(KeyError, match="no check named"):
        api.check_plugin(make(), only="no such check")


def test_the_kit_fails_an_roi_set_that_opens_a_file_it_does_not_declare(tmp_path):
    """The file-open audit: a set that reads a TSV at build time or when constructed without declaring
    it in input_files() fails, naming the file; declaring it passes; built-ins reading their packages'
    shipped atlases pass (test_every_builtin_plugin_passes_the_kit)."""
    table = tmp_path / "weights.tsv"
    table.write_text("roi\tweight\na\t1\n")

    class AtBuild(_Box):
        def build(self, reference):
            table.read_text()
            return super().build(reference)

    class AtInit(_Box):
        def __init__(self, params=None):
            super().__init__(params)
            self.rows = table.read_bytes()

    class Declared(AtBuild):
        def input_files(self):
            return [str(table)]

    for cls in (AtBuild, AtInit):
        report = api.check_roi_set(cls())
        failed = {c.name: c.detail for c in report.failures}
        assert list(failed) == ["opens only the input files it declares (file-open audit)"], report.lines()
        assert str(table.resolve()) in failed["opens only the input files it declares (file-open audit)"]
    assert api.check_roi_set(Declared()).ok


def test_the_kit_fails_a_metric_or_test_that_opens_a_file_it_does_not_declare(tmp_path):
    """The same audit for metrics (at compute) and statistical tests (at run): an undeclared read
    fails, naming the file; declaring it in input_files() passes."""
    table = tmp_path / "prior.tsv"
    table.write_text("edge\tweight\n")
    step = "opens only the input files it declares (file-open audit)"

    class ReadingMetric(_Pearson):
        name = "reading_metric"

        def compute(self, ts, tr):
            table.read_text()
            return super().compute(ts, tr)

    class ReadingTest(_Welch):
        name = "reading_test"

        def run(self, edges, design):
            table.read_bytes()
            return super().run(edges, design)

    for undeclared, check in ((ReadingMetric, api.check_metric), (ReadingTest, api.check_stat_test)):
        report = check(undeclared())
        failed = {c.name: c.detail for c in report.failures}
        assert list(failed) == [step], report.lines()
        assert str(table.resolve()) in failed[step]
        declared = type("Declared", (undeclared,), {"input_files": lambda self: [str(table)]})
        assert check(declared()).ok, check(declared()).lines()
