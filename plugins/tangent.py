"""Metric plugin ``tangent``: group-referenced tangent-space connectivity (Varoquaux et al., 2010).

Each window's covariance C (Ledoit-Wolf by default) is mapped to logm(G^-1/2 C G^-1/2), where G is the
geometric (Riemannian) mean of the covariances of the **reference windows**: by default every
subject's ``baseline`` window (option ``reference_windows``), except those where an ROI is missing or
flat (the connectivity stage leaves them out of the fit). Values are therefore deviations from
the group's baseline connectivity. This matches nilearn's ConnectivityMeasure(kind="tangent") fitted
on those windows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fclab.api import COVARIANCE_ESTIMATORS, Metric, PluginParams, geometric_mean, hookimpl, refs, spd_function


class Tangent(Metric):
    name = "tangent"
    scale = "tangent"
    references = (refs.TANGENT,)
    group_fit = True

    class Params(PluginParams):
        estimator: Literal["ledoit_wolf", "empirical"] = "ledoit_wolf"
        reference_windows: list[str] = Field(default_factory=lambda: ["baseline"], min_length=1)

    def fit(self, windows: list[np.ndarray], tr: float) -> None:
        covs = np.stack([COVARIANCE_ESTIMATORS[self.params.estimator](w) for w in windows])
        self.mean_ = geometric_mean(covs)
        self.whitening_ = spd_function(self.mean_, lambda v: 1.0 / np.sqrt(v))

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        covs = COVARIANCE_ESTIMATORS[self.params.estimator](ts)
        return spd_function(self.whitening_ @ covs @ self.whitening_, np.log)

    def describe(self) -> str:
        return (f"tangent-space connectivity ({self.params.estimator.replace('_', '-')} covariances, referenced "
                f"to the geometric mean over the {', '.join(self.params.reference_windows)} windows in which "
                "every ROI has a signal)")


@hookimpl
def register_metrics(register):
    register(Tangent)
