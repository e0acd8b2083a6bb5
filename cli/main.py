"""`metaaug`: the command-line interface, a thin layer over the metaaugment library."""
from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from metaaugment.cli.settings_options import given_on_command_line, with_run_settings
from metaaugment.infra.errors import UserError
from metaaugment.infra.interrupt import INTERRUPTED, finishing, stop_within
from metaaugment.infra.trust import refuse_code_references
from metaaugment.run.config import COMPARE, RUN
from metaaugment.run.settings import CommandLine, build_run_config, layer_settings

app = typer.Typer(
    name="metaaug",
    help="Learned data augmentation: run one policy on a benchmark, or compare several.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # help text is plain: `pip install 'metaaugment[tensorboard]'` keeps its brackets
)
out_console = Console()
err_console = Console(stderr=True)

def _print_version(asked: bool) -> None:
    if asked:
        from metaaugment import __version__

        out_console.print(f"metaaug {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    pass


TrustOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Import code that a file names (a module:Name policy, learner, model or benchmark in a "
    "--config or --sweep file, a run folder's config.json, a --policy-from folder). Without it such a file is "
    "refused: a file is data. Pass it only for files you would run as code.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
DownloadOpt = Annotated[bool, typer.Option(
    "--download", help="First fetch the benchmark's data into --data-root (cifar10, cifar100, omniglot: "
    "torchvision's URLs and checksums); data already there is kept. Only on the command line, never from a file.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]


def _results_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold", overflow="fold")  # narrow terminals: folded, never cut
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


KINDS = {"benchmarks": "BENCHMARKS", "policies": "POLICIES", "learners": "LEARNERS", "models": "MODELS"}
SINGULAR = {"benchmark": "benchmarks", "policy": "policies", "learner": "learners", "model": "models"}


@app.command("list")
def list_command(
    kind: Annotated[Optional[str], typer.Argument(
        help="benchmarks, policies, learners or models: list only those.")] = None,
    name: Annotated[Optional[str], typer.Argument(
        help="One entry (or a module.path:Name plug-in): its options with type, default and meaning; "
        "a benchmark's defaults.")] = None,
) -> None:
    """List benchmarks, policies, learners and models.

    Plug-ins are listed with their origin; with KIND NAME, show one entry's options or a
    benchmark's defaults."""
    from metaaugment import registry

    kinds = list(KINDS)
    if kind is not None:
        chosen = SINGULAR.get(kind, kind)
        if chosen not in KINDS:
            raise UserError(f"unknown kind '{kind}'; choose from: {', '.join(KINDS)}")
        kinds = [chosen]
    if name is not None:
        _show_entry(kinds[0], getattr(registry, KINDS[kinds[0]]).get(name))
        return
    for title in kinds:
        table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")  # wrapped whole, never cut with an ellipsis
        for entry in getattr(registry, KINDS[title]).listing():  # built-ins read from source: no torch import
            origin = "" if entry.origin == "built-in" else f"  [dim]plug-in: {escape(entry.origin)}[/dim]"
            table.add_row(entry.name, escape(entry.summary) + origin)
        out_console.print(table)
        out_console.print()
    out_console.print("One entry's options: metaaug list KIND NAME, e.g. metaaug list policies mixup", highlight=False)


def _show_entry(kind: str, entry: Any) -> None:
    """Print one entry's summary, origin and options (a benchmark: its run defaults)."""
    from metaaugment.registry import describe_options

    out_console.print(f"[bold cyan]{escape(entry.name)}[/bold cyan] ({kind[:-1] if kind != 'policies' else 'policy'}, "
                      f"{escape(entry.origin)}): {escape(entry.summary)}", highlight=False)
    factory = entry.factory
    if kind == "benchmarks":
        from metaaugment.registry import BENCHMARKS

        bench = BENCHMARKS.create(entry.name)
        _show_benchmark(bench)
        if bench.options is None:
            return
        factory = bench.options
    options = describe_options(factory)
    if not options:
        out_console.print("no options")
        return
    table = Table(show_header=True, box=None, padding=(0, 2))
    for column in ("option", "type", "default", "meaning"):
        table.add_column(column, style="bold" if column == "option" else None, overflow="fold")
    for option in options:
        default = "(required)" if option.default is inspect.Parameter.empty else repr(option.default)
        table.add_row(option.name, escape(option.type), escape(default), escape(option.meaning))
    out_console.print(table)
    flag = {"policies": "--set", "learners": "--learner-set", "models": "--model-set",
            "benchmarks": "--benchmark-set"}[kind]
    out_console.print(f"change one with {flag} key=value (or in a --config / --sweep file)", highlight=False)


def _show_benchmark(bench: Any) -> None:
    from metaaugment.spec import benchmark_kind

    rows = [("kind", bench.kind), ("model", f"{bench.default_model} {bench.default_model_options or ''}".strip()),
            ("learner", f"{bench.default_learner} {bench.default_learner_options or ''}".strip()),
            ("epochs", str(bench.default_epochs)),
            ("batch size", str(bench.default_batch_size) + (" tasks" if benchmark_kind(bench.kind).episodic else ""))]
    if benchmark_kind(bench.kind).episodic:
        rows += [("ways / shots / query shots", f"{bench.default_ways} / {bench.default_shots} / "
                  f"{bench.default_query_shots}"), ("meta-steps per epoch", str(bench.default_steps_per_epoch))]
    rows += [(f"{policy} options", str(options)) for policy, options in bench.default_policy_options.items()]
    rows.append(("data", "--download fetches it" if bench.download is not None else
                 bench.download_instead or "embedded: nothing to download"))
    for key, value in rows:
        out_console.print(f"  {key:<28}{escape(value)}", highlight=False)


@app.command()
@with_run_settings(RUN)
def run(
    ctx: typer.Context,
    settings: CommandLine,
    config_file: Annotated[Optional[Path], typer.Option(
        "--config", help="A JSON or YAML file of run settings (a run's config.json replays it); options given "
        "here override it. See docs/workflow.md.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/BENCHMARK/POLICY/seedSEED).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run in --out, or reuse a finished one.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder in --out.")] = False,
    trust_code: TrustOpt = False,
    quiet: QuietOpt = False,
    download: DownloadOpt = False,
    nproc_per_node: Annotated[int, typer.Option(
        "--nproc-per-node", help="Train one run on N processes of this machine (torchrun; NCCL on CUDA, one GPU "
        "each, gloo on CPU). --batch-size stays the global batch. Several machines: docs/scale.md.")] = 1,
) -> None:
    """Train with one policy on a benchmark.

    Writes config.json, metrics.jsonl, checkpoints and results.json in the run folder."""
    from metaaugment.run.config_file import run_settings

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be a positive integer (got {nproc_per_node})")
    layered = layer_settings(run_settings(config_file) if config_file is not None else {}, settings,
                             f"config file {config_file}", trust_code)
    config = build_run_config(layered, settings)  # names checked before torch is imported
    from metaaugment.parallel.process_group import is_main_process, launched_by_torchrun
    from metaaugment.run.folder import RunDirectory
    from metaaugment.run.loop import train
    from metaaugment.run.naming import run_folder

    launch = nproc_per_node > 1 and not launched_by_torchrun()
    if download:
        _download(config.benchmark, config.data_root)
    out = out or run_folder(config)  # runs/BENCHMARK/POLICY[-what differs from the defaults]/seedK
    if resume and not RunDirectory(out).holds_anything():  # a misspelt --out would silently start afresh
        raise UserError(f"--resume: {out} holds no run, nothing to resume; run without --resume to start one there")
    if launch:  # bad options and folders are reported here, before any process starts
        check_launch(config, out, nproc_per_node, resume=resume, overwrite=overwrite)
        raise typer.Exit(launch_processes(nproc_per_node))
    if AS_PROGRAM:  # not when a test or a notebook calls main(): the watchdog may end the process
        stop_within(_print_interrupted)  # Ctrl-C ends a run in ~2 s, even inside a long C call
    results = train(config, out, resume=resume, overwrite=overwrite, console=err_console, show_progress=not quiet,
                    trust_code=trust_code)
    if not is_main_process():  # under torchrun rank 0 reports
        return
    out_console.print(_results_table(f"{config.benchmark} · {config.policy} · seed {config.seed}",
                                     _result_rows(results, out)))


@app.command()
def download(
    benchmark: Annotated[str, typer.Argument(help="cifar10, cifar100, omniglot or omniglot-classification.")],
    data_root: Annotated[Path, typer.Option("--data-root", envvar="METAAUG_DATA_ROOT",
                                            help="Folder to fetch the data into.")] = Path("data"),
) -> None:
    """Fetch a benchmark's data into --data-root (what `run --download` does first).

    torchvision's official URLs, checksums and extraction; a failed or damaged download is one
    line and leaves nothing behind."""
    from metaaugment.registry import BENCHMARKS

    BENCHMARKS.check_name(benchmark)
    _download(benchmark, str(data_root))


def _download(benchmark: str, data_root: str) -> None:
    """Fetch `benchmark`'s data into `data_root` before anything trains (under torchrun: refused,
    the ranks would fetch into one folder at once)."""
    from metaaugment.parallel.process_group import launched_by_torchrun
    from metaaugment.tasks.download import download_benchmark

    if launched_by_torchrun():
        raise UserError(f"--download under torchrun: fetch the data once first (metaaug download {benchmark} "
                        f"--data-root {data_root}), then start torchrun without --download")
    fetched = download_benchmark(benchmark, data_root)
    note = f"downloaded {', '.join(fetched)} into {data_root}" if fetched else f"{benchmark} data is already in " \
        f"{data_root}; nothing downloaded"
    err_console.print(note, markup=False, highlight=False, soft_wrap=True)


def check_launch(config: Any, out: Path, count: int, *, resume: bool, overwrite: bool) -> None:
    """The checks of a run that need no data, made once before `count` processes start."""
    from metaaugment.run.folder import RunDirectory
    from metaaugment.run.loop import check_global_batch, policy_and_learner

    config = config.resolve()
    policy_and_learner(config)
    check_global_batch(config, count)
    RunDirectory(out).check(config.to_dict(), resume=resume, overwrite=overwrite)


def launch_processes(count: int) -> int:
    """Rerun this command on `count` local processes (torchrun --standalone, in this process);
    returns the processes' exit code."""
    from metaaugment.parallel.launcher import run_on_local_processes

    args, skip = [], False
    for arg in ARGV:  # this command's arguments without --nproc-per-node
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            args.append(arg)
    return run_on_local_processes(count, "metaaugment.cli", args)


def _result_rows(results: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """The summary columns of the run's benchmark kind (metaaugment.spec.KINDS), one row each;
    a confidence-interval column joins the row before it."""
    from metaaugment.spec import benchmark_kind

    metrics = results["metrics"]
    kind = benchmark_kind(results.get("kind", "classification"))

    def text(value: float, percent: bool) -> str:
        return f"{100 * value:.2f}" if percent else f"{value:.4f}"

    rows: list[tuple[str, str]] = []
    for column in kind.columns:
        value = metrics.get(column.metric)
        if value is None:
            continue
        if column.metric.endswith("_ci95") and rows:
            tasks = f", {metrics['test_tasks']} tasks" if "test_tasks" in metrics else ""
            rows[-1] = (rows[-1][0], f"{rows[-1][1]} ± {text(value, column.percent)} (95% CI{tasks})")
            continue
        shown = text(value, column.percent) + ("%" if column.percent else "")
        if column.metric == kind.best_metric and metrics.get("best_step") is not None:
            shown += f" (step {metrics['best_step']})"
        rows.append((column.title, shown))
    rows += [("epochs / steps", f"{metrics['epochs']} / {metrics['steps']}"),
             ("wall time", f"{results['wall_time_s']:.1f} s"), ("run folder", str(out))]
    return rows


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated non-negative integers (got {text!r})") from None
    if not seeds or any(not 0 <= s < 2**32 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct integers in [0, 2**32), e.g. 0,1,2 (got {text!r})")
    return seeds


def _parse_policy_sets(policies: list[str], assignments: list[str]) -> dict[str, dict[str, Any]]:
    from metaaugment.registry import POLICIES, parse_options

    grouped: dict[str, list[str]] = {p: [] for p in policies}
    for item in assignments:
        name, dot, rest = item.partition(".")
        if not dot or name not in grouped:
            raise UserError(f"--set {item!r} must look like POLICY.key=value with POLICY one of {', '.join(policies)}")
        grouped[name].append(rest)
    return {p: parse_options(POLICIES.get(p).factory, items) for p, items in grouped.items()}


@app.command()
@with_run_settings(COMPARE)
def compare(
    ctx: typer.Context,
    settings: CommandLine,
    policies: Annotated[Optional[str], typer.Option(
        "--policies", help="Comma-separated policy names, e.g. none,randaugment,mixup (the short form of "
        "--sweep).")] = None,
    sweep: Annotated[Optional[Path], typer.Option(
        "--sweep", help="A JSON or YAML file of named variants (policy + options, learner and model options) and "
        "shared settings; see docs/workflow.md.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds (default: the sweep file's, else "
                                                 "0,1,2).")] = None,
    policy_set: Annotated[Optional[List[str]], typer.Option("--set", "-s",
                                                            help="POLICY.key=value (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Comparison folder (default: runs/compare/BENCHMARK).")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Train every run again from the start, replacing its folder (default: reuse finished runs and "
        "resume unfinished ones).")] = False,
    launcher: Annotated[str, typer.Option(
        help="Where the runs train: inline (here, one after another), local (jobs of their own on this machine) "
        "or slurm (a submitit job array); see docs/workflow.md.")] = "inline",
    jobs: Annotated[int, typer.Option(help="--launcher local: runs training at once.")] = 1,
    nproc_per_node: Annotated[int, typer.Option(
        "--nproc-per-node", help="Processes (GPUs) per run, one node each: each run trains on N processes (torchrun; "
        "--batch-size stays the global batch).")] = 1,
    slurm_partition: Annotated[Optional[str], typer.Option(help="slurm: partition.")] = None,
    slurm_gpus: Annotated[Optional[int], typer.Option(help="slurm: GPUs per job (default: none).")] = None,
    slurm_cpus: Annotated[Optional[int], typer.Option(help="slurm: CPUs per process.")] = None,
    slurm_time: Annotated[int, typer.Option(help="slurm: time limit per job, minutes.")] = 24 * 60,
    slurm_account: Annotated[Optional[str], typer.Option(help="slurm: account.")] = None,
    slurm_parallelism: Annotated[int, typer.Option(help="slurm: array jobs running at once.")] = 64,
    wait: Annotated[bool, typer.Option(
        help="slurm: wait for the jobs and print the table (--no-wait: submit and return; run the same command "
        "again later).")] = True,
    status: Annotated[bool, typer.Option(
        help="Show each run's state, its job and the job's last progress line, and train nothing.")] = False,
    progress_every: Annotated[float, typer.Option(
        "--progress-every", help="local and slurm: show each running job's last progress line every this many "
        "seconds.")] = 30.0,
    trust_code: TrustOpt = False,
    quiet: QuietOpt = False,
    download: DownloadOpt = False,
) -> None:
    """Compare policies or sweep variants over seeds: table and plot.

    Runs (or reuses finished) runs of each variant and seed; prints and saves the table and plot."""
    from metaaugment.comparison.sweep_file import Variant, read_sweep
    from metaaugment.registry import POLICIES

    if (policies is None) == (sweep is None):
        raise UserError("give --policies a,b,... or a --sweep file (one of them)")
    if sweep is not None:
        if policy_set:
            raise UserError("--set applies to --policies; a sweep file sets each variant's policy_options")
        plan = read_sweep(sweep, trust_code=trust_code)
        variants: list[Any] = plan.variants
        file_settings, file_seeds = plan.settings, plan.seeds
        options: dict[str, dict[str, Any]] = {}
    else:
        names = [p.strip() for p in (policies or "").split(",") if p.strip()]
        if not names or len(set(names)) != len(names):
            raise UserError(f"--policies must be distinct comma-separated names (got {policies!r}); to compare "
                            f"variants of one policy, use a --sweep file")
        for name in names:
            POLICIES.check_name(name)  # a misspelt name fails at once, before torch is imported
        variants, file_settings, file_seeds = names, {}, None
    seed_list = _parse_seeds(seeds) if seeds is not None else (
        file_seeds if file_seeds is not None else [0, 1, 2])
    if seeds is None and file_seeds is not None:
        _parse_seeds(",".join(map(str, file_seeds)))  # the same checks as --seeds
    config = build_run_config(layer_settings(file_settings, settings, f"sweep file {sweep}", trust_code), settings)
    if sweep is None:
        options = _parse_policy_sets(variants, policy_set or [])
    from metaaugment.comparison.compare import plan_comparison, run_comparison, write_comparison
    from metaaugment.run.naming import comparison_folder, policy_variant_name

    if sweep is None:  # each row named after its policy and the options that differ from the defaults
        variants = [Variant(policy_variant_name(dataclasses.replace(config, policy=name, policy_options=options[name])),
                            name, options[name]) for name in variants]
        options = {}
    out = out or comparison_folder(config, [v.name for v in variants], sweep)
    launch_options = _launch_options(ctx, launcher, jobs, nproc_per_node, wait, {
        "partition": slurm_partition, "gpus": slurm_gpus, "cpus": slurm_cpus, "time_min": slurm_time,
        "account": slurm_account, "parallelism": slurm_parallelism})
    if not 0 < progress_every < math.inf:
        raise UserError(f"--progress-every must be a positive finite number of seconds (got {progress_every})")
    launch_options.progress_seconds = progress_every
    if status:
        _print_status(plan_comparison(config, variants, seed_list, out, options), out)
        return
    if download:  # once, before any run or job starts
        _download(config.benchmark, config.data_root)
    records = run_comparison(config, variants, seed_list, out, options, console=err_console,
                             show_progress=not quiet, overwrite=overwrite, launch_options=launch_options,
                             trust_code=trust_code)
    if len(records) < len(variants) * len(seed_list):  # submitted without waiting
        return
    paths = write_comparison(out, config.benchmark, records)
    first_column = "variant" if sweep is not None else "policy"
    out_console.print(comparison_table(config.benchmark, seed_list, records, first_column))
    out_console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def comparison_table(benchmark: str, seeds: list[int], records: list[Any], first_column: str) -> Table:
    """The comparison's table as printed: a row per variant, a column per metric; every cell
    folds onto more lines in a narrow terminal, never cut with an ellipsis."""
    from metaaugment.comparison.compare import format_stat, summarize

    table = Table(title=f"{benchmark}: " + (f"mean ± std over seeds {', '.join(map(str, seeds))}"
                                            if len(seeds) > 1 else f"seed {seeds[0]}"))
    table.add_column(first_column, style="bold", overflow="fold")
    summaries = summarize(records)
    for _, title, percent in summaries[0].metrics:
        table.add_column(title + (" (%)" if percent else ""), justify="right", overflow="fold")
    for summary in summaries:
        table.add_row(escape(summary.policy), *(format_stat(*summary.stat(m), p, len(summary.seeds))
                                                for m, _, p in summary.metrics))
    return table


@app.command("eval")
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    split: Annotated[str, typer.Option(help="test or val.")] = "test",
    benchmark: Annotated[Optional[str], typer.Option(
        help="Evaluate on another benchmark whose inputs and classes fit the model.")] = None,
    device: DeviceOpt = "auto",
    data_root: Annotated[Optional[Path], typer.Option("--data-root", envvar="METAAUG_DATA_ROOT",
                                                       help="Folder of on-disk datasets (default: the run's).")] = None,
    trust_code: TrustOpt = False,
) -> None:
    """Evaluate a finished run's tested model again.

    On test, the same metrics as its results.json."""
    from metaaugment.run.evaluate import evaluate_run

    metrics = evaluate_run(run_dir, split, benchmark=benchmark, device=device,
                           data_root=None if data_root is None else str(data_root), trust_code=trust_code)
    results = {"metrics": metrics, "wall_time_s": float("nan"), "kind": _run_kind(run_dir, benchmark, trust_code)}
    rows = [row for row in _result_rows(results, run_dir) if row[0] != "wall time"] if split == "test" else \
        [(key, f"{value:.4f}") for key, value in metrics.items()]
    title = f"{run_dir} on {benchmark or 'its benchmark'}, {split} split"
    out_console.print(_results_table(title, rows))


def _run_kind(run_dir: Path, benchmark: Optional[str], trust_code: bool) -> str:
    from metaaugment.registry import create_benchmark
    from metaaugment.run.folder import RunDirectory

    config = RunDirectory(run_dir).read_config()
    refuse_code_references(config, f"eval {run_dir}: its config.json", trust_code=trust_code, keys=("benchmark",))
    return create_benchmark(benchmark or config["benchmark"]).kind


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for model.pt and policy.pt (default: RUN_DIR/export).")]
    = None,
    overwrite: Annotated[bool, typer.Option(help="Replace model.pt and policy.pt in --out.")] = False,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", envvar="METAAUG_DATA_ROOT",
                                                       help="Folder of on-disk datasets (default: the run's).")] = None,
    trust_code: TrustOpt = False,
) -> None:
    """Export a finished run's task network and learned policy.

    Writes model.pt and policy.pt, loadable with torch.load(weights_only=True); load them with
    metaaugment.export (docs/workflow.md)."""
    from metaaugment.run.export import export_run

    paths = export_run(run_dir, out, overwrite=overwrite, data_root=None if data_root is None else str(data_root),
                       trust_code=trust_code)
    out_console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)


def _launch_options(ctx: typer.Context, launcher: str, jobs: int, nproc_per_node: int, wait: bool,
                    slurm: dict[str, Any]) -> Any:
    """compare's launcher options, checked: SLURM settings only with --launcher slurm."""
    from metaaugment.comparison.launch import LAUNCHERS, LaunchOptions

    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)} (got {launcher!r})")
    given = [f"--{name.replace('_', '-')}" for name in ctx.params
             if name.startswith("slurm_") and given_on_command_line(ctx, name)]
    if given and launcher != "slurm":
        raise UserError(f"{given[0]} applies to --launcher slurm")
    if not wait and launcher != "slurm":
        raise UserError("--no-wait applies to --launcher slurm (local jobs end with this command)")
    if jobs < 1 or nproc_per_node < 1:
        raise UserError("--jobs and --nproc-per-node must be positive integers")
    return LaunchOptions(launcher=launcher, jobs=jobs, nproc_per_node=nproc_per_node, wait=wait, slurm=slurm)


def _print_status(runs: Any, out: Path) -> None:
    from metaaugment.comparison.launch import status_rows

    table = Table(title=f"{out}: runs and jobs")
    for column in ("run", "folder", "job", "last progress line"):
        table.add_column(column, overflow="fold")
    for row in status_rows(runs, out):
        table.add_row(*(escape(cell) for cell in row))
    out_console.print(table)


ARGV: list[str] = []  # the arguments `main` was called with (--nproc-per-node relaunches them)
AS_PROGRAM = False  # main() was called as the program (the console script, python -m), not from Python


def one_line(message: str) -> str:
    """An error message as one line: a line break or other control character inside a name
    the user gave (a file name, a value) is shown escaped, as Python writes it."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: one line and exit code 2 for any user error."""
    from typer.exceptions import TyperException

    from metaaugment.parallel.process_group import leave as leave_process_group
    from metaaugment.run.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # training processes reuse freed host memory (no page fault per step)
    ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    global AS_PROGRAM
    AS_PROGRAM = argv is None
    try:
        code = app(args=argv, prog_name="metaaug", standalone_mode=False)
        leave_process_group()
    except UserError as error:
        from metaaugment.parallel.process_group import is_main_process

        if is_main_process():  # under torchrun every rank raises the same error
            err_console.print(f"[red]error:[/red] {escape(one_line(str(error)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TyperException as error:  # click usage errors: unknown option, missing argument...
        err_console.print(f"[red]error:[/red] {escape(one_line(error.format_message()))} (see metaaug --help)",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except RuntimeError as error:  # under torchrun: another rank died; one line, not gloo's traceback
        from metaaugment.parallel.process_group import peer_failure

        message = peer_failure(error)
        if message is None:
            raise
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    if code == INTERRUPTED and finishing():  # Typer turns Ctrl-C into a silent exit code 130
        _print_interrupted()
    sys.exit(code if isinstance(code, int) else 0)


def _print_interrupted() -> None:
    from metaaugment.parallel.process_group import is_main_process

    if is_main_process():
        if err_console.is_terminal:
            err_console.show_cursor(True)  # a progress bar cut by the watchdog hid it
        err_console.print("interrupted: rerun the same command (`run`: with --resume) to continue from the last "
                          "checkpoint; a run stopped before its first checkpoint starts over", soft_wrap=True)


if __name__ == "__main__":
    main()
