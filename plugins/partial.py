"""Metric plugin ``partial``: partial correlation from a shrinkage covariance (Ledoit-Wolf by default).

partial_ij = -P_ij / sqrt(P_ii P_jj) with P the inverse covariance, as nilearn's
ConnectivityMeasure(kind="partial correlation"). With the empirical estimator the values do not
depend on the scale or offset of each ROI signal; Ledoit-Wolf shrinks towards a multiple of the
identity, so with it they do (slightly).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fclab.api import COVARIANCE_ESTIMATORS, Metric, PluginParams, hookimpl, inverse_spd, precision_to_partial, refs


class Partial(Metric):
    name = "partial"
    scale = "partial_r"

    class Params(PluginParams):
        estimator: Literal["ledoit_wolf", "empirical"] = "ledoit_wolf"

    def __init__(self, params=None):
        super().__init__(params)
        self.affine_invariant = self.params.estimator == "empirical"
        self.references = (refs.PARTIAL,) + ((refs.LEDOIT_WOLF,) if self.params.estimator == "ledoit_wolf" else ())

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        return precision_to_partial(inverse_spd(COVARIANCE_ESTIMATORS[self.params.estimator](ts)))

    def describe(self) -> str:
        return f"partial correlation (from the {self.params.estimator.replace('_', '-')} covariance)"


@hookimpl
def register_metrics(register):
    register(Partial)
