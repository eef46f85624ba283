"""The fclab command line: parse, call the framework, print. Exit codes: 0 ok, 1 data, 2 usage."""

from __future__ import annotations

import functools
import json
import signal
import sys
import traceback
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from fclab.framework import commands, stages
from fclab.framework.errors import FclabError, ParamsError
from fclab.framework.params import Params, load_params
from fclab.framework.pluginhost.registry import get_registry

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="fclab: ROI-to-ROI resting-state connectivity studies, from fMRIPrep to report.")
_state = {"params": Path("params.yaml"), "verbose": False, "jobs": None}


def _fail(message: str, code: int) -> None:
    typer.echo(f"fclab: error: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn):
    """Turn fclab errors into a one-line message and exit code; -v adds the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FclabError as exc:
            if _state["verbose"]:
                traceback.print_exc()
            _fail(str(exc), exc.exit_code)

    return wrapper


def _load_problems(label: str) -> bool:
    """Print the plugins that failed to load (with their tracebacks under -v); whether there were any."""
    registry = get_registry()
    for problem in registry.load_errors:
        typer.echo(f"fclab: {label}: {problem}", err=True)
    if _state["verbose"]:
        for tb in registry.load_tracebacks:
            typer.echo(tb.rstrip(), err=True)
    return bool(registry.load_errors)


def _params() -> Params:
    registry = get_registry()
    if registry.selection_error:
        raise ParamsError(registry.selection_error)
    _load_problems("warning")  # a study that does not select a broken plugin runs; one that does is told why
    return load_params(_state["params"])


def _version(value: bool) -> None:
    if value:
        from fclab import __version__
        from fclab.api import API_VERSION

        typer.echo(f"fclab {__version__} (plugin API {API_VERSION})")
        raise typer.Exit()


@app.callback()
def main(
    params: Annotated[Path, typer.Option("--params", "-p", help="The experiment's params file.")] = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Worker processes (default: up to 2).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print fclab's version and its plugin API version.")] = False,
):
    _state.update(params=params, verbose=verbose, jobs=jobs)


@app.command()
@guarded
def simulate():
    """Write the embedded simulated study (fMRIPrep layout) to simulate.output_dir."""
    out = stages.stage_simulate(_params(), _state["jobs"])
    typer.echo(f"simulated study written to {out}")


@app.command()
@guarded
def manifest():
    """Write results/plugins/: the code hash, version and input files of every plugin params selects."""
    stages.stage_plugins(_params())
    typer.echo(f"wrote {stages.PLUGINS_DIR}/")


@app.command()
@guarded
def extract():
    """Denoise each run and extract ROI time series and QC to results/extract/."""
    stages.stage_extract(_params(), _state["jobs"])
    typer.echo(f"wrote {stages.EXTRACT_DIR}/")


@app.command()
@guarded
def connectivity():
    """Compute windowed connectivity per subject to results/connectivity/edges.parquet."""
    stages.stage_connectivity(_params())
    typer.echo(f"wrote {stages.CONNECTIVITY_DIR}/edges.parquet")


@app.command()
@guarded
def truth():
    """For the simulated study: the planted effects on the measured scale, to results/truth/."""
    if stages.stage_truth(_params(), _state["jobs"]):
        typer.echo(f"wrote {stages.TRUTH_DIR}/")
    else:
        typer.echo(f"wrote {stages.TRUTH_DIR}/ (empty: the data are not the simulated study)")


@app.command()
@guarded
def stats():
    """Run the group-level tests to results/stats/tests.parquet."""
    stages.stage_stats(_params())
    typer.echo(f"wrote {stages.STATS_DIR}/tests.parquet")


@app.command()
@guarded
def report(open_: Annotated[bool, typer.Option("--open", help="Open the report in a browser.")] = False):
    """Write reports/index.html, figures, metrics.json and plot series."""
    path = stages.stage_report(_params(), _state["jobs"])
    _show(path, open_)


def _show(path: Path, open_: bool) -> None:
    typer.echo(f"report: {path.resolve()}")
    if open_ and not webbrowser.open(path.resolve().as_uri()):
        typer.echo("no browser available; open the file above by hand", err=True)


@app.command()
@guarded
def run(open_: Annotated[bool, typer.Option("--open", help="Open the report in a browser.")] = False):
    """Run every stage in this process, without DVC."""
    path = commands.run_all(_params(), _state["jobs"])
    _show(path, open_)
    for line in commands.headline_lines():
        typer.echo(line)


@app.command()
@guarded
def power(
    delta_z: Annotated[list[float] | None, typer.Option("--delta-z", help="Planted Δz values (repeat the option).")] = None,
    n_sims: Annotated[int, typer.Option("--n-sims", min=10, help="Simulated studies per Δz.")] = 200,
    edge: Annotated[tuple[str, str] | None, typer.Option("--edge", help="The planted edge (default: first confirmatory).")] = None,
    window: Annotated[str | None, typer.Option("--window", help="The planted window (default: first after baseline).")] = None,
    n_ref: Annotated[int | None, typer.Option("--n-ref", min=2, help="Reference-group size.")] = None,
    n_target: Annotated[int | None, typer.Option("--n-target", min=2, help="Target-group size.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    planted: Annotated[bool, typer.Option("--planted", help="Plant simulate.effects (the study's own effect "
                                          "description), scaled by each --delta-z value.")] = False,
):
    """Simulation-based power of every test in params for a planted effect; CSV and PNG under reports/power/."""
    deltas = delta_z or ([0.0, 0.25, 0.5, 0.75, 1.0, 1.25] if planted else [round(0.05 * k, 2) for k in range(13)])
    _, found, study = commands.power(_params(), deltas, n_sims, edge, window, n_ref, n_target, seed,
                                         _state["jobs"], planted=planted)
    typer.echo(f"wrote {stages.REPORT_DIR / 'power'}/power.csv and power.png "
               f"({study.n_target} target vs {study.n_ref} reference subjects)")
    for r in found.itertuples():
        dz = "not reached in the grid" if r.delta_z != r.delta_z else f"Δz = {r.delta_z:.3f}"
        typer.echo(f"80% power: {r.test} ({r.term}): {dz}")


@app.command()
@guarded
def calibrate(
    kind: Annotated[str, typer.Option("--kind", help="relabel: relabel the groups on this study's own "
                                      "connectivity values; roi: simulate realistic ROI-level null studies.")] = "relabel",
    n: Annotated[int, typer.Option("--n", min=10, help="Relabellings or simulated studies.")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
):
    """Null calibration of every test in params: false-positive rate and FWER with exact 95% CIs."""
    if kind not in ("relabel", "roi"):
        raise typer.BadParameter("--kind must be relabel or roi")
    r = commands.calibrate(_params(), kind, n, seed, _state["jobs"])
    lo, hi = commands.CALIBRATION_BAND
    typer.echo(f"wrote {stages.REPORT_DIR / 'calibration' / (kind + '.csv')}; target band [{lo}, {hi}]")
    typer.echo(r.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


@app.command()
@guarded
def validate(
    params_only: Annotated[bool, typer.Option("--params-only", help="Check params.yaml only, not the inputs.")] = False,
):
    """Check params.yaml and every input file (headers, tables, events) without computing anything."""
    params = _params()
    typer.echo(f"{_state['params']}: ok")
    if params_only:
        return
    lines, problems = commands.validate_inputs(params)
    for line in lines:
        typer.echo(line)
    if problems:
        typer.echo(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}:", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    typer.echo("inputs: ok")


@app.command()
@guarded
def cache(
    prune_unused: Annotated[bool, typer.Option("--prune-unused", help="Delete the runs the last extract did not use.")] = False,
    older_than: Annotated[float | None, typer.Option("--older-than", min=0, metavar="DAYS",
                                                     help="Delete the runs not used for DAYS days.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Delete every cached run (and the simulator's anatomy and atlas labels).")] = False,
    warm: Annotated[bool, typer.Option("--warm", help=(
        "Compile the numba kernels and build the simulator's anatomy for params.yaml now (make does this "
        "after installing), so the first run does not."))] = False,
):
    """Show the per-run extraction cache (.fclab-cache/, or $FCLAB_CACHE), or prune it."""
    from fclab.framework.extraction import cache as runcache

    if warm:
        typer.echo(commands.warm_caches(_params()))
    if prune_unused or older_than is not None or clear:
        gone = runcache.prune(unused=prune_unused, older_than_days=older_than, everything=clear)
        typer.echo(f"{runcache.cache_dir()}: deleted {len(gone)} cached run{'' if len(gone) == 1 else 's'}")
    typer.echo(runcache.summary())


@app.command()
@guarded
def edges(
    out: Annotated[Path | None, typer.Option("--long", metavar="FILE", help=(
        "Write the long view (one row per subject, window, metric and edge) to FILE: .parquet, .csv or .tsv."))] = None,
    window: Annotated[list[str] | None, typer.Option("--window", help="Only this window (repeatable).")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Only this metric output (repeatable).")] = None,
):
    """Describe results/connectivity/edges.parquet (packed: one row per subject, window and metric),
    or write its long view."""
    typer.echo(commands.export_edges(out, window or None, metric or None))


@app.command("executor")
@guarded
def executor_cmd():
    """Show where jobs run (params executor); for SLURM, print the batch job script without submitting."""
    params = _params()
    p = params.executor
    if p.kind == "local":
        typer.echo(f"executor: local, {_state['jobs'] or stages.default_jobs()} worker processes")
    elif p.kind == "dask":
        typer.echo(f"executor: dask, {'scheduler ' + p.address if p.address else f'a local cluster of {p.workers or stages.default_jobs()} workers'}")
    else:
        from fclab.framework.executor import slurm_cluster

        typer.echo(f"executor: slurm, {p.workers or stages.default_jobs()} jobs of this script:")
        with slurm_cluster(p.slurm, 0) as cluster:
            typer.echo(cluster.job_script())


@app.command("params-doc")
def params_doc():
    """Print the reference of every params.yaml key (docs/params.md) from the schema."""
    from fclab.framework.params.docs import params_markdown

    typer.echo(params_markdown(), nl=False)


plugins_app = typer.Typer(help="List the installed plugins, or check one against the contract.")
app.add_typer(plugins_app, name="plugins")


@plugins_app.callback(invoke_without_command=True)
def plugins_cmd(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include the built-in plugins.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """List the installed plugins: name, kind, version, entry point (the name FCLAB_LOAD_PLUGINS takes)
    and distribution; exit 1 when one failed to load (listed first, with -v its traceback)."""
    if ctx.invoked_subcommand is not None:
        return
    registry = get_registry()
    if registry.selection_error:
        typer.echo(f"fclab: error: {registry.selection_error}", err=True)
    broken = _load_problems("error") or bool(registry.selection_error)
    _list_plugins(registry, all_, as_json)
    if broken:
        raise typer.Exit(1)


def _list_plugins(registry, all_: bool, as_json: bool) -> None:
    infos = registry.infos(include_all=all_)
    if as_json:
        typer.echo(json.dumps([{"name": i.name, "kind": i.kind, "version": i.version, "distribution": i.distribution,
                                "module": i.module, "entry_point": i.entry_point} for i in infos], indent=2))
        return
    if not infos:
        typer.echo("no third-party plugins installed (use --all to list the built-ins)")
        return
    width = max(len(i.name) for i in infos)
    ep_width = max(len("entry point"), *(len(i.entry_point) for i in infos))
    typer.echo(f"{'name':<{width}}  {'kind':<6}  {'version':<10}  {'entry point':<{ep_width}}  distribution")
    for i in infos:
        typer.echo(f"{i.name:<{width}}  {i.kind:<6}  {i.version:<10}  {i.entry_point:<{ep_width}}  {i.distribution}")


@plugins_app.command("check")
@guarded
def plugins_check(
    name: Annotated[str, typer.Argument(help="The plugin's name (as params.yaml gives it).")],
    kind: Annotated[str | None, typer.Option("--kind", help="roi, metric or test, when the name is ambiguous.")] = None,
):
    """Run the conformance kit on one installed plugin (with its options from params.yaml, if the study
    uses it); exit 1 if it breaks the contract."""
    from fclab.framework.conformance import check_named

    if kind not in (None, "roi", "metric", "test"):
        raise ParamsError(f"plugins check: --kind must be roi, metric or test, not {kind!r}")
    report = check_named(name, kind, _state["params"])
    typer.echo(f"{report.kind} plugin {report.plugin!r}:")
    for line in report.lines():
        typer.echo(f"  {line}")
    failed = len(report.failures)
    typer.echo(f"{len(report.checks) - failed} of {len(report.checks)} checks passed")
    if failed:
        raise typer.Exit(1)


try:
    get_registry().add_commands(app)
except Exception as exc:  # a plugin's extra commands must not break the built-in ones
    print(f"fclab: warning: a plugin's register_commands failed: {exc}", file=sys.stderr)


GLOBAL_OPTIONS = {"-p": 1, "--params": 1, "-j": 1, "--jobs": 1, "-v": 0, "--verbose": 0}  # name -> values


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options given after the subcommand (``fclab validate -p other.yaml``) before it,
    where the parser expects them; everything else keeps its order."""
    head, rest = [], list(args)
    while rest and rest[0].startswith("-") and rest[0] != "--":  # options already before the subcommand
        n = 0 if "=" in rest[0] else GLOBAL_OPTIONS.get(rest[0], 0)
        head += rest[:1 + n]
        rest = rest[1 + n:]
    moved, kept = [], []
    while rest:
        name = rest[0].split("=", 1)[0]
        if rest[0] == "--":
            kept += rest
            break
        if name in GLOBAL_OPTIONS:
            n = 0 if "=" in rest[0] else GLOBAL_OPTIONS[name]
            moved += rest[:1 + n]
            rest = rest[1 + n:]
        else:
            kept.append(rest.pop(0))
    return head + moved + kept


def _terminated(signum, frame):
    """SIGTERM: unwind (staged outputs and temporaries are removed on the way, workers are stopped)
    and exit 143 with one line."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one while unwinding changes nothing
    typer.echo("fclab: terminated (SIGTERM); nothing half-written was kept", err=True)
    raise SystemExit(143)


def entry() -> None:
    """Run the CLI; a usage error (unknown command or option, bad value) is one line and exit 2."""
    from typer.exceptions import TyperException

    from fclab.framework.executor import keep_freed_memory

    keep_freed_memory()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(args=hoist_global_options(sys.argv[1:]), prog_name="fclab", standalone_mode=False)
    except typer.Abort:
        typer.echo("fclab: aborted", err=True)
        sys.exit(130)
    except TyperException as exc:  # typer's click usage errors (typer does not export the class)
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"fclab: error: {where}{message}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    entry()
