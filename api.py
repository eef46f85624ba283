"""fclab's public plugin API: everything a third-party plugin, and every built-in one, imports.

    from fclab.api import Metric, PluginParams, hookimpl

Stability promise (docs/plugins.md, "The API and its versions"): the names in ``__all__`` keep their
meaning and signatures for every fclab release with the same ``API_VERSION``; a release that removes or
changes one raises it. While fclab is 0.x the API version is its minor version, so a plugin declares
``fclab>=0.2,<0.3``. New names may be added within a version. Anything imported from elsewhere in
fclab (``fclab.framework.*``, ``fclab.plugins.*``) is internal and may change in any release.
"""

from typing import TYPE_CHECKING

from fclab import __version__
from fclab.framework import references as refs
from fclab.framework.extraction.anatomy import (
    ANDREWS_HANNA_2010_MPFC,
    BUNDLED_ATLASES,
    atlas_labels,
    labels_weights,
    match_labels,
    read_label_table,
    resample_to_grid,
    sphere_masks,
    voxel_centres,
)
from fclab.framework.conformance import (
    Conformance,
    check_metric,
    check_plugin,
    check_roi_set,
    check_stat_test,
    fake_design,
    fake_edges,
)
from fclab.framework.pluginhost.contracts import (
    RESULT_COLUMNS,
    SCALES,
    Design,
    Metric,
    Plugin,
    PluginParams,
    RoiSet,
    RoiWeights,
    Scale,
    StatTest,
)
from fclab.framework.connectome.edgestore import Edges, read_edges
from fclab.framework.errors import DataError, FclabError, ParamsError, PluginError
from fclab.framework.params import capped
from fclab.framework.extraction.engine import load_nifti
from fclab.framework.extraction.surface import (
    Grayordinates,
    HemisphereLabels,
    element_coordinates,
    mesh,
    package_file,
    read_surface_labels,
    surface_rois,
)
from fclab.framework.pluginhost.hookspecs import hookimpl
from fclab.framework.connectome.spd import (
    COVARIANCE_ESTIMATORS,
    correlation,
    geometric_mean,
    inverse_spd,
    precision_to_partial,
    spd_function,
)
from fclab.framework.stats.lmm import fit_reml
from fclab.framework.stats.mmrm import fit_mmrm
from fclab.framework.stats.design import (
    Contrast,
    contrast_table,
    contrasts,
    group_moments,
    hedges_g,
    hedges_g_moments,
    subject_design,
    welch_change,
)
from fclab.framework.errors import did_you_mean
from fclab.framework.stats.permutation import (SignFlipBatch, WelchBatch, block_size, max_t_pvalues, max_t_signflip,
                                               relabelings, signflips)
from fclab.framework.stats.cubes import change_cube, edge_cube, long_rows
from fclab.framework.stats import crossover

if TYPE_CHECKING:  # imported on first use, by __getattr__ below
    from fclab.framework.connectome.kernels import window_correlations

API_VERSION = ".".join(__version__.split(".")[:2])


def __getattr__(name: str):
    """Names whose modules are costly to import, imported when first asked for (PEP 562):
    ``window_correlations``'s compiled kernels import numba (~0.4 s)."""
    if name == "window_correlations":
        from fclab.framework.connectome.kernels import window_correlations

        return window_correlations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "API_VERSION",
    # the contract
    "hookimpl", "Plugin", "PluginParams", "RoiSet", "RoiWeights", "Metric", "Scale", "SCALES", "StatTest",
    "Design", "RESULT_COLUMNS",
    # formatted references of common methods, for Plugin.references
    "refs",
    # errors (one line each; the CLI maps them to exit codes)
    "FclabError", "ParamsError", "PluginError", "DataError", "did_you_mean",
    # a count option's cap (a mistyped 10⁹ must not run for days; FCLAB_UNCAPPED=1 lifts it)
    "capped",
    # ROI sets
    "load_nifti", "resample_to_grid", "labels_weights", "sphere_masks", "voxel_centres", "atlas_labels",
    "BUNDLED_ATLASES", "ANDREWS_HANNA_2010_MPFC", "match_labels", "read_label_table",
    # surface and CIFTI ROI sets
    "Grayordinates", "HemisphereLabels", "read_surface_labels", "surface_rois", "mesh", "element_coordinates",
    "package_file",
    # metrics
    "correlation", "window_correlations", "COVARIANCE_ESTIMATORS", "inverse_spd", "precision_to_partial",
    "geometric_mean", "spd_function",
    # statistical tests
    "Edges", "read_edges", "edge_cube", "change_cube", "long_rows", "subject_design", "contrasts", "Contrast", "contrast_table",
    "group_moments", "hedges_g", "hedges_g_moments", "welch_change", "fit_reml", "fit_mmrm", "max_t_pvalues",
    "WelchBatch", "block_size", "relabelings", "crossover", "SignFlipBatch", "signflips", "max_t_signflip",
    # the conformance kit
    "check_plugin", "check_roi_set", "check_metric", "check_stat_test", "Conformance", "fake_design", "fake_edges",
]
