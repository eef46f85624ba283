"""Metric plugin ``spearman``: Spearman rank correlation (Pearson correlation of average ranks)."""

from __future__ import annotations

import numpy as np
import scipy  # scipy.stats loads on first use

from fclab.api import Metric, PluginParams, correlation, hookimpl, refs


class Spearman(Metric):
    name = "spearman"
    scale = "rho"
    affine_invariant = True

    class Params(PluginParams):
        fisher_z: bool = False

    def __init__(self, params=None):
        super().__init__(params)
        self.scale = "fisher_z" if self.params.fisher_z else "rho"
        self.references = (refs.SPEARMAN,) + ((refs.FISHER_Z,) if self.params.fisher_z else ())

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        rho = correlation(scipy.stats.rankdata(ts, axis=-2))
        with np.errstate(divide="ignore"):
            return np.arctanh(rho) if self.params.fisher_z else rho

    def describe(self) -> str:
        return "Spearman rank correlation" + (", Fisher z-transformed" if self.params.fisher_z else "")


@hookimpl
def register_metrics(register):
    register(Spearman)
