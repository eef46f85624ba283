"""The example plugins pass fclab's conformance kit and agree with closed forms."""

import numpy as np

from fclab.api import check_metric, check_stat_test, fake_design, fake_edges
from fclab_example import BootstrapDiff, GaussianCopulaMI


def test_gc_mi_conforms():
    check_metric(GaussianCopulaMI()).assert_ok()


def test_bootstrap_diff_conforms():
    check_stat_test(BootstrapDiff(BootstrapDiff.Params(n_boot=200))).assert_ok()


def test_bootstrap_diff_conforms_on_gc_mi_values():
    check_stat_test(BootstrapDiff(BootstrapDiff.Params(n_boot=200)), metric=GaussianCopulaMI()).assert_ok()


def test_gc_mi_matches_the_gaussian_closed_form():
    # For Gaussian signals with correlation r, I = -1/2 log2(1 - r^2) bits.
    rng = np.random.default_rng(1)
    r = 0.6
    x = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=20000)
    mi = GaussianCopulaMI().compute(x, 2.0)[0, 1]
    assert abs(mi - (-0.5 * np.log2(1 - r**2))) < 0.02


def test_bootstrap_interval_is_near_the_t_interval():
    edges = fake_edges(n_per_group=(30, 30), seed=3)
    design = fake_design(edges)
    res = BootstrapDiff().run(edges, design)
    width = (res["ci_high"] - res["ci_low"]).to_numpy()
    t_width = 2 * 2.0 * res["se"].to_numpy()  # ~ a normal interval from the bootstrap SE
    assert np.allclose(width, t_width, rtol=0.25)
