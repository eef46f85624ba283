"""The three plugin kinds: ROI sets, connectivity metrics and statistical tests.

A plugin class declares ``name``, a pydantic ``Params`` model (its parameter schema, unknown keys
forbidden) and the method of its kind. ``__init__`` only stores the validated params; work happens
in ``build``/``compute``/``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from fclab.framework.section import Section


class PluginParams(Section):
    """Base of every plugin's parameter schema: unknown keys are errors, YAML booleans are not numbers."""


class Plugin:
    """Common base. Subclasses set ``name`` and, if they take options, ``Params``."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    version: ClassVar[str | None] = None  # defaults to the version of the distribution shipping it
    Params: ClassVar[type[PluginParams]] = PluginParams
    # Works to cite for the method, one formatted reference each; the report's reference list shows them.
    references: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: PluginParams | None = None):
        self.params = params if params is not None else self.Params()

    def input_files(self) -> list[str]:
        """Files the plugin reads besides the study's data (a label image, a TSV, a mask). fclab hashes
        them into the outputs' provenance and the DVC plugin manifest, so editing one reruns the
        stages that use the plugin, and `fclab validate` checks that they exist."""
        return []

    def describe(self) -> str:
        """One sentence for the methods paragraph; plugins override it to state their settings."""
        opts = ", ".join(f"{k}={v}" for k, v in self.params.model_dump().items())
        return f"{self.name} ({opts})" if opts else self.name


@dataclass(frozen=True)
class RoiWeights:
    """ROIs on one voxel grid: row r of ``weights`` maps the grid's flattened voxels to ROI r.

    Voxels are flattened in C order over the grid's (x, y, z) shape, so for BOLD data ``D`` of
    shape (x, y, z, t) the ROI signals are ``weights @ D.reshape(-1, t)``. A labels-style ROI has
    weights 1/n on its n voxels (the mean); a maps-style ROI may carry any linear weights.
    """

    names: list[str]
    weights: sp.csr_matrix
    support: sp.csr_matrix = field(init=False)

    def __post_init__(self):
        if self.weights.shape[0] != len(self.names):
            raise ValueError(f"{len(self.names)} ROI names for {self.weights.shape[0]} weight rows")
        object.__setattr__(self, "support", (self.weights != 0).astype(np.int8).tocsr())


class RoiSet(Plugin):
    """Defines ROIs. ``build`` places them on the grid of ``reference``: a 3D or 4D NIfTI image for
    volume data, a ``Grayordinates`` (``fclab.framework.extraction.surface``) for CIFTI and GIfTI surface data.
    ``data`` names which of the two the plugin handles; the runner gives it only those."""

    kind = "roi"
    data: tuple[str, ...] = ("volume",)
    space: str = "MNI"
    """Where a volume ROI set's positions are defined: ``"MNI"`` (MNI coordinates, or images in an MNI
    template: the runner refuses it for runs in any other space) or ``"run"`` (images the user gives in
    the runs' own space, placed by each run's world coordinates: any space)."""

    def build(self, reference) -> RoiWeights:  # pragma: no cover - interface
        raise NotImplementedError

    def for_subject(self, subject: str) -> "RoiSet":
        """The ROI set for one subject's runs: ``self`` unless the set differs by subject (a label image
        per subject, as native-space studies need). The runner builds each subject's set on its grid."""
        return self


@dataclass(frozen=True)
class Scale:
    """What a metric output's values are. ``label`` names them on axes and in tables; ``signed`` says
    whether they can be negative (a diverging colour map centred on 0) or not (a sequential map from 0),
    None when unknown (judged from the values); ``low``/``high`` bound them (None: unbounded)."""

    name: str
    label: str = ""
    signed: bool | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"scale {self.name!r}: low ({self.low}) must be below high ({self.high})")
        if self.signed is False and self.low is not None and self.low < 0:
            raise ValueError(f"scale {self.name!r}: a non-negative scale cannot have low {self.low} < 0")


# The scales of fclab's built-in metrics; a metric with another scale declares it in ``scales``.
SCALES: dict[str, Scale] = {s.name: s for s in (
    Scale("fisher_z", "Fisher z", True),
    Scale("r", "Pearson r", True, -1.0, 1.0),
    Scale("rho", "Spearman ρ", True, -1.0, 1.0),
    Scale("partial_r", "partial r", True, -1.0, 1.0),
    Scale("covariance", "covariance", True),
    Scale("precision", "precision", True),
    Scale("tangent", "tangent-space value", True),
    Scale("coherence", "coherence", False, 0.0, 1.0),
    Scale("mtd", "MTD", True),
    Scale("seconds", "seconds", True),
)}


def as_scale(scale) -> Scale:
    """A ``Scale`` for a scale name (a built-in one, or a bare one fclab knows nothing about)."""
    return scale if isinstance(scale, Scale) else SCALES.get(scale) or Scale(str(scale))


class Metric(Plugin):
    """A connectivity metric over the ROI signals of one or more equal-length windows.

    ``compute(ts, tr)`` takes an array of shape (..., T, R) and the repetition time in seconds, and
    returns (..., R, R); a metric with more than one output returns a dict mapping output names to
    such arrays ("" for the main output, e.g. ``{"": peak_r, "lag_s": lag}``), with the extra outputs'
    scales in ``extra_scales``. Values that cannot be computed are NaN.

    ``scale`` names what the values are (``fisher_z``, ``r``, ...) so statistics and plots can label
    them; a scale fclab does not know (not in ``SCALES``) is described by a ``Scale`` in ``scales``
    (its label, sign and range), which figures use and the conformance kit checks.

    ``symmetric`` promises M[i, j] == M[j, i] (an extra output may instead be antisymmetric, which
    ``antisymmetric_outputs`` lists); only i < j is stored. ``affine_invariant`` promises the
    values do not change when an ROI signal is multiplied by a positive constant or shifted.
    A metric with ``group_fit`` is fitted once, by ``fit``, on the windows ``reference_windows``
    names before ``compute`` runs.
    """

    kind = "metric"
    scale: ClassVar[str] = ""
    extra_scales: ClassVar[dict[str, str]] = {}
    scales: ClassVar[tuple[Scale, ...]] = ()  # descriptions of scales not in SCALES
    antisymmetric_outputs: ClassVar[tuple[str, ...]] = ()
    symmetric: ClassVar[bool] = True
    affine_invariant: ClassVar[bool] = False
    group_fit: ClassVar[bool] = False

    def problem(self, n_volumes: int, tr: float) -> str | None:
        """Why a window of ``n_volumes`` cannot be computed (it then gets a missing value and this
        reason), or None when it can."""
        return None if n_volumes >= 3 else f"{self.name} needs at least 3 volumes"

    def fit(self, windows: list[np.ndarray], tr: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def compute(self, ts: np.ndarray, tr: float):  # pragma: no cover - interface
        raise NotImplementedError

    def compute_ranges(self, ts: np.ndarray, starts: np.ndarray, stops: np.ndarray, tr: float):
        """Values for the windows ``ts[starts[k]:stops[k]]`` of one run's (T × R) series.

        The default stacks windows of equal length and calls ``compute``; a metric with a faster
        route over many overlapping windows (running sums, say) overrides it.
        """
        lengths = stops - starts
        out = None
        for n in np.unique(lengths):
            idx = np.flatnonzero(lengths == n)
            res = self.compute(ts[starts[idx, None] + np.arange(n)], tr)
            res = res if isinstance(res, dict) else {"": res}
            if out is None:
                out = {k: np.full((len(starts),) + v.shape[1:], np.nan) for k, v in res.items()}
            for k, v in res.items():
                out[k][idx] = v
        return out

    def compute_edges(self, ts: np.ndarray, starts: np.ndarray, stops: np.ndarray, tr: float) -> dict[str, np.ndarray]:
        """``compute_ranges`` as the stage stores it: {output name: (K, R(R-1)/2)}, the upper
        triangle of each window's matrix in ``np.triu_indices(R, 1)`` order.

        The default takes the triangle of ``compute_ranges``; a metric that can compute the triangle
        alone (running sums over sliding windows, say) overrides it and skips the full matrices.
        """
        res = self.compute_ranges(ts, starts, stops, tr)
        res = res if isinstance(res, dict) else {"": res}
        iu = np.triu_indices(ts.shape[1], 1)
        return {k: np.asarray(v)[:, iu[0], iu[1]] for k, v in res.items()}

    def outputs(self) -> dict[str, str]:
        """Output name ("" for the main one) -> scale."""
        return {"": self.scale, **self.extra_scales}

    def scale_info(self) -> dict[str, Scale]:
        """Output name -> the ``Scale`` its values are on (the metric's own description first)."""
        own = {s.name: s for s in self.scales}
        return {k: own.get(v) or as_scale(v) for k, v in self.outputs().items()}


@dataclass(frozen=True)
class Design:
    """What a test needs to know about the study beyond the edge values."""

    groups: tuple[str, str]  # (reference, target): estimates are target minus reference
    baseline_window: str
    windows: tuple[str, ...]  # every window in analysis order, baseline first
    subjects: pd.DataFrame  # one row per subject: subject, group and any covariates
    alpha: float = 0.05  # for confidence intervals
    covariates: tuple[str, ...] = ()  # columns of ``subjects`` that enter models as covariates
    confirmatory: frozenset = frozenset()  # frozensets of ROI-name pairs: the confirmatory family
    family_by: tuple[str, ...] = ("test", "metric", "term")  # what else splits adjustment families
    # Given only to a test that names them in ``StatTest.uses``:
    sliding: pd.DataFrame | None = None  # the sliding-window edge rows (edges.parquet's other windows)
    run_qc: pd.DataFrame | None = None  # run_qc.parquet: one row per run (mean FD, censoring, exclusions)
    # "parallel": each subject is in one group; "crossover": each subject has one session per condition,
    # ``groups`` are then the conditions (reference, target) and ``sessions`` says which session is which.
    kind: str = "parallel"
    sessions: pd.DataFrame | None = None  # crossover: subject, session, condition, period (1 or 2)

    def family(self, roi_a, roi_b) -> np.ndarray:
        """'confirmatory' or 'exploratory' for each edge (the adjustment families)."""
        return np.array(["confirmatory" if frozenset(x) in self.confirmatory else "exploratory"
                         for x in zip(roi_a, roi_b)], dtype=object)

    @property
    def effect_windows(self) -> list[str]:
        return [w for w in self.windows if w != self.baseline_window]

    def check(self, test: str, min_per_group: int = 2) -> None:
        """Raise a one-line DataError naming ``test`` when the design cannot be estimated."""
        from fclab.framework.errors import DataError

        if self.kind == "crossover":
            if len(self.subjects) < min_per_group:
                raise DataError(f"stats.tests: {test}: {len(self.subjects)} subject(s) with both conditions; "
                                f"at least {min_per_group} are needed")
            return
        counts = self.subjects["group"].value_counts()
        for g in self.groups:
            if counts.get(g, 0) < min_per_group:
                raise DataError(f"stats.tests: {test}: group {g!r} has {counts.get(g, 0)} subject(s); "
                                f"at least {min_per_group} are needed")

    def covariate_matrix(self, test: str) -> tuple[np.ndarray, list[str]]:
        """Centred subject-level covariates (dummy-coded when categorical) and their names."""
        from fclab.framework.errors import DataError

        cols, names = [], []
        for c in self.covariates:
            x = self.subjects[c]
            if x.isna().all():
                raise DataError(f"stats.tests: {test}: covariate {c!r} is missing for every subject")
            if x.isna().any():
                bad = ", ".join(self.subjects.loc[x.isna(), "subject"].astype(str))
                raise DataError(f"stats.tests: {test}: covariate {c!r} is missing for subject(s) {bad}")
            if x.nunique() < 2:
                raise DataError(f"stats.tests: {test}: covariate {c!r} is constant ({x.iloc[0]!r})")
            if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
                cols.append(x.to_numpy(float) - x.to_numpy(float).mean())
                names.append(c)
            else:
                levels = sorted(x.astype(str).unique())
                for lev in levels[1:]:
                    d = (x.astype(str) == lev).to_numpy(float)
                    cols.append(d - d.mean())
                    names.append(f"{c}[{lev}]")
        S = len(self.subjects)
        return (np.column_stack(cols) if cols else np.zeros((S, 0))), names


TEST_INPUTS = ("sliding", "run_qc")


class StatTest(Plugin):
    """A group-level test. ``run`` returns rows with the columns of ``RESULT_COLUMNS``.

    ``design.subjects`` has one row per subject with every participants.tsv column and ``mean_fd``;
    ``requires`` names the columns (of the edges or of the subjects) the test cannot do without.
    ``uses`` asks for more inputs: ``"sliding"`` (``design.sliding``, the sliding-window edge rows) and
    ``"run_qc"`` (``design.run_qc``); they are read only for a test that asks.

    ``edges`` is the long table (one row per subject, window, metric and edge) unless the test sets
    ``packed_edges``: then it may get the packed ``Edges`` (fclab.api), which ``edge_cube`` and
    ``change_cube`` read directly into arrays; the long table of a connectome-scale study is too
    big to build.
    """

    kind = "test"
    requires: ClassVar[tuple[str, ...]] = ("subject", "group", "window")
    uses: ClassVar[tuple[str, ...]] = ()
    packed_edges: ClassVar[bool] = False  # True: run() may get the packed ``Edges`` instead of the long table
    # The study designs the test handles (Design.kind); the stage refuses it for any other.
    designs: ClassVar[tuple[str, ...]] = ("parallel",)
    # A known limit of the test's calibration, shown beside its results in the report.
    caveat: ClassVar[str | None] = None
    # The terms the test can produce (checked against report.primary_term); empty: not declared.
    terms: ClassVar[tuple[str, ...]] = ()
    # The same for a crossover design (within-subject terms, e.g. condition:window).
    crossover_terms: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def terms_for(cls, kind: str) -> tuple[str, ...]:
        """The terms the test can produce for a design of this kind (Design.kind)."""
        return cls.crossover_terms if kind == "crossover" else cls.terms

    def run(self, edges: pd.DataFrame, design: Design) -> pd.DataFrame:  # pragma: no cover
        raise NotImplementedError

    def caveat_for(self, n_per_group: dict[str, int]) -> str | None:
        """The caveat for a study of these group sizes (subjects analysed); by default ``caveat``. A test
        whose calibration depends on the design overrides it."""
        return self.caveat


RESULT_COLUMNS = [
    "test", "metric", "roi_a", "roi_b", "window", "term", "estimate", "se", "stat", "df", "p",
    "p_adj", "adj_method", "ci_low", "ci_high", "n", "effect_size", "effect_size_kind",
    "effect_size_ci_low", "effect_size_ci_high", "reason",
]
TEST_COLUMNS = RESULT_COLUMNS + ["family", "scale"]  # tests.parquet: a test's rows, the stage's family and scale
TIMESERIES_KEYS = ["subject", "run", "volume", "time_s"]  # timeseries.parquet's key columns; no ROI may take these names

KINDS: dict[str, type[Plugin]] = {"roi": RoiSet, "metric": Metric, "test": StatTest}
