"""Metric plugin ``pearson``: Pearson correlation, by default as Fisher z = artanh(r)."""

from __future__ import annotations

import numpy as np

from framework.contracts import Metric, PluginParams
from framework.hookspecs import hookimpl


class Pearson(Metric):
    name = "pearson"
    scale = "fisher_z"

    class Params(PluginParams):
        fisher_z: bool = True

    def __init__(self, params=None):
        super().__init__(params)
        self.scale = "fisher_z" if self.params.fisher_z else "r"

    def compute(self, ts: np.ndarray) -> np.ndarray:
        x = ts - ts.mean(axis=-2, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = x / np.linalg.norm(x, axis=-2, keepdims=True)  # a constant ROI gives NaN, not 0
            r = np.clip(np.swapaxes(x, -1, -2) @ x, -1.0, 1.0)
            out = np.arctanh(r) if self.params.fisher_z else r
        idx = np.arange(r.shape[-1])
        out[..., idx, idx] = np.nan  # the diagonal carries no information
        return out

    def describe(self) -> str:
        return "Pearson correlation" + (", Fisher z-transformed" if self.params.fisher_z else "")


@hookimpl
def register_metrics(register):
    register(Pearson)
