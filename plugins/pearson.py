"""Metric plugin ``pearson``: Pearson correlation, by default as Fisher z = artanh(r)."""

from __future__ import annotations

import numpy as np

from fclab.api import Metric, PluginParams, correlation, hookimpl, refs


class Pearson(Metric):
    name = "pearson"
    scale = "fisher_z"
    affine_invariant = True

    class Params(PluginParams):
        fisher_z: bool = True

    def __init__(self, params=None):
        super().__init__(params)
        self.scale = "fisher_z" if self.params.fisher_z else "r"
        self.references = (refs.FISHER_Z,) if self.params.fisher_z else ()

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        r = correlation(ts)
        with np.errstate(divide="ignore"):
            return np.arctanh(r) if self.params.fisher_z else r

    def describe(self) -> str:
        return "Pearson correlation" + (", Fisher z-transformed" if self.params.fisher_z else "")


@hookimpl
def register_metrics(register):
    register(Pearson)
