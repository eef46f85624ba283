"""Metric plugin ``covariance``: Ledoit-Wolf shrunk (default) or maximum-likelihood covariance.

The empirical estimate divides by T, as sklearn's EmpiricalCovariance and nilearn do.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fclab.api import COVARIANCE_ESTIMATORS, Metric, PluginParams, hookimpl, refs


class Covariance(Metric):
    name = "covariance"
    scale = "covariance"

    class Params(PluginParams):
        estimator: Literal["ledoit_wolf", "empirical"] = "ledoit_wolf"

    def __init__(self, params=None):
        super().__init__(params)
        self.references = (refs.LEDOIT_WOLF,) if self.params.estimator == "ledoit_wolf" else ()

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        return COVARIANCE_ESTIMATORS[self.params.estimator](ts)

    def describe(self) -> str:
        return f"covariance ({self.params.estimator.replace('_', '-')} estimator)"


@hookimpl
def register_metrics(register):
    register(Covariance)
