"""The plugin conformance kit: contract checks any ROI set, metric or statistical test can run.

``check_metric``, ``check_stat_test`` and ``check_roi_set`` (exported by ``fclab.api``) each return a
``Conformance``: one ``Check`` per promise of the contract, passed or failed with a one-line reason.
Each promise is a top-level function ``check_<kind>_<promise>(case)`` returning None or why it fails;
``metric_checks``, ``stat_test_checks`` and ``roi_set_checks`` yield them in order as ``Step``s, and
``only=`` runs one of them on its own (the case computes what it builds on when first asked).
``fclab plugins check NAME`` prints it; in a plugin's own test suite::

    from fclab.api import check_metric
    def test_my_metric_conforms():
        check_metric(MyMetric()).assert_ok()

``fake_edges`` is a small simulated study as an edge table (the shape of results/connectivity/
edges.parquet), computed with any metric, and ``fake_design`` the ``Design`` a test receives for it.
Every check is against the contract or an independent computation, never the plugin against itself,
except determinism (two calls agree).
"""

from fclab.framework.conformance.kit import Check, Conformance, Step
from fclab.framework.conformance.metrics import MetricCase, check_metric, metric_checks
from fclab.framework.conformance.roi_sets import RoiCase, check_roi_set, check_surface_roi_set, roi_set_checks
from fclab.framework.conformance.run import check_named, check_plugin, plugin_checks
from fclab.framework.conformance.stat_tests import StatTestCase, check_stat_test, stat_test_checks
from fclab.framework.conformance.study import FAKE_ROIS, FAKE_WINDOWS, fake_design, fake_edges

__all__ = ["Check", "Conformance", "Step", "MetricCase", "check_metric", "metric_checks", "RoiCase", "check_roi_set",
           "check_surface_roi_set", "roi_set_checks", "check_named", "check_plugin", "plugin_checks", "StatTestCase",
           "check_stat_test", "stat_test_checks", "FAKE_ROIS", "FAKE_WINDOWS", "fake_design", "fake_edges"]
