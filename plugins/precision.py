"""Metric plugin ``precision``: the inverse of the (Ledoit-Wolf by default) covariance.

A singular covariance (for example an empirical estimate with fewer volumes than ROIs) gives
missing values rather than numbers from an ill-posed inverse.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fclab.api import COVARIANCE_ESTIMATORS, Metric, PluginParams, hookimpl, inverse_spd, refs


class Precision(Metric):
    name = "precision"
    scale = "precision"

    class Params(PluginParams):
        estimator: Literal["ledoit_wolf", "empirical"] = "ledoit_wolf"

    def __init__(self, params=None):
        super().__init__(params)
        self.references = (refs.PARTIAL,) + ((refs.LEDOIT_WOLF,) if self.params.estimator == "ledoit_wolf" else ())

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        return inverse_spd(COVARIANCE_ESTIMATORS[self.params.estimator](ts))

    def describe(self) -> str:
        return f"precision (inverse {self.params.estimator.replace('_', '-')} covariance)"


@hookimpl
def register_metrics(register):
    register(Precision)
