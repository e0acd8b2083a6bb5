"""`metaaug`: the command-line interface, a thin layer over the metaaugment library."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typing_extensions import Annotated

from metaaugment.errors import UserError

app = typer.Typer(
    name="metaaug",
    help="Learned data augmentation: run one policy on a benchmark, or compare several.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out_console = Console()
INTERRUPTED = 130
err_console = Console(stderr=True)

# Options shared by `run` and `compare`.
LearnerOpt = Annotated[Optional[str], typer.Option(help="Learner name (default: the benchmark's); see `metaaug list`.")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model name (default: the benchmark's); see `metaaug list`.")]
EpochsOpt = Annotated[Optional[int], typer.Option(help="Training epochs (default: the benchmark's).")]
BatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Mini-batch size; tasks per meta-batch on few-shot benchmarks (default: the benchmark's).")]
LrOpt = Annotated[Optional[float], typer.Option(
    "--lr", help="Learning rate; the outer (meta) rate for meta-learners (default: the benchmark's).")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]
DataRootOpt = Annotated[Path, typer.Option("--data-root", envvar="METAAUG_DATA_ROOT",
                                           help="Folder holding on-disk datasets (CIFAR, ...).")]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Validate every N epochs.")]
CheckpointOpt = Annotated[int, typer.Option("--checkpoint-every",
                                             help="Checkpoint every N steps (and every epoch end).")]
LearnerSetOpt = Annotated[Optional[List[str]], typer.Option("--learner-set",
                                                             help="Learner option key=value (repeatable).")]
ModelSetOpt = Annotated[Optional[List[str]], typer.Option("--model-set", help="Model option key=value (repeatable).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
# Few-shot benchmarks only (defaults: the benchmark's).
WaysOpt = Annotated[Optional[int], typer.Option("--ways", help="Few-shot: N classes per task.")]
ShotsOpt = Annotated[Optional[int], typer.Option("--shots", help="Few-shot: K support samples per class.")]
QueryOpt = Annotated[Optional[int], typer.Option("--query-shots", help="Few-shot: query samples per class.")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Few-shot: meta-steps per epoch.")]
ValTasksOpt = Annotated[Optional[int], typer.Option("--val-tasks",
                                                     help="Few-shot: validation tasks per evaluation (100).")]
TestTasksOpt = Annotated[Optional[int], typer.Option("--test-tasks", help="Few-shot: meta-test tasks (600).")]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size",
                                                      help="image-folder: resize images to this square size (84).")]
ValSizeOpt = Annotated[Optional[int], typer.Option(
    "--val-size", help="CIFAR: images held out of train for validation (5000; MetaAugment's paper: 1000).")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="Mini-batch benchmarks: 32, bf16 or 16 (autocast; 16 with loss scaling).")]
ChannelsLastOpt = Annotated[bool, typer.Option(
    "--channels-last", help="Mini-batch benchmarks: the task network in channels-last memory format.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Mini-batch benchmarks: torch.compile the task network.")]
WorkersOpt = Annotated[int, typer.Option(
    "--workers", help="Streamed benchmarks (imagenet, image-classification-folder): processes decoding images; "
    "the results do not depend on it.")]


def _base_config(benchmark: str, learner: Optional[str], model: Optional[str], epochs: Optional[int],
                 batch_size: Optional[int], lr: Optional[float], device: str, data_root: Path,
                 eval_every: int, checkpoint_every: int, learner_set: Optional[List[str]],
                 model_set: Optional[List[str]], **episodic: Optional[int]) -> Any:
    from metaaugment.learners import LEARNERS, EpisodicLearner
    from metaaugment.registry import MODELS, parse_options
    from metaaugment.run.config import RunConfig

    config = RunConfig(benchmark=benchmark, learner=learner, model=model, epochs=epochs,
                       batch_size=batch_size, device=device, data_root=str(data_root),
                       eval_every=eval_every, checkpoint_every=checkpoint_every, **episodic)
    config = config.resolve()  # validates values, checks the benchmark name, fills defaults
    config.learner_options.update(parse_options(LEARNERS.get(config.learner).factory, learner_set or []))
    if lr is not None:
        # the outer (meta) learning rate for meta-learners, the SGD rate otherwise
        episodic = issubclass(LEARNERS.get(config.learner).factory, EpisodicLearner)
        config.learner_options["meta_lr" if episodic else "lr"] = lr
    config.model_options.update(parse_options(MODELS.get(config.model).factory, model_set or []))
    return config


def _results_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command("list")
def list_command() -> None:
    """List benchmarks, policies, learners and models with one line each."""
    from metaaugment.learners import list_learners
    from metaaugment.registry import list_models, list_policies
    from metaaugment.tasks import list_benchmarks

    for title, entries in (("benchmarks", list_benchmarks()), ("policies", list_policies()),
                           ("learners", list_learners()), ("models", list_models())):
        table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for entry in entries:
            table.add_row(entry.name, entry.summary)
        out_console.print(table)
        out_console.print()


@app.command()
def run(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name; see `metaaug list`.")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="Augmentation policy; see `metaaug list`.")] = "none",
    policy_set: Annotated[Optional[List[str]], typer.Option("--set", "-s",
                                                            help="Policy option key=value (repeatable).")] = None,
    learner: LearnerOpt = None,
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same results.")] = 0,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = Path("data"),
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/BENCHMARK/POLICY/seedSEED).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run in --out, or reuse a finished one.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder in --out.")] = False,
    eval_every: EvalEveryOpt = 1,
    checkpoint_every: CheckpointOpt = 100,
    learner_set: LearnerSetOpt = None,
    model_set: ModelSetOpt = None,
    ways: WaysOpt = None,
    shots: ShotsOpt = None,
    query_shots: QueryOpt = None,
    steps_per_epoch: StepsOpt = None,
    val_tasks: ValTasksOpt = None,
    test_tasks: TestTasksOpt = None,
    image_size: ImageSizeOpt = None,
    val_size: ValSizeOpt = None,
    workers: WorkersOpt = 0,
    precision: PrecisionOpt = "32",
    channels_last: ChannelsLastOpt = False,
    compile: CompileOpt = False,
    policy_from: Annotated[Optional[Path], typer.Option("--policy-from", help="metaaugment: reuse the policy network, "
                           "sampler and task network of this finished run (frozen) to train a new network.")] = None,
    quiet: QuietOpt = False,
    nproc_per_node: Annotated[int, typer.Option(
        "--nproc-per-node", help="Train one run on N processes of this machine (torchrun; NCCL on CUDA, one GPU "
        "each, gloo on CPU). --batch-size stays the global batch. Several machines: docs/scale.md.")] = 1,
) -> None:
    """Train with one policy on a benchmark; writes config.json, metrics.jsonl, results.json."""
    import dataclasses

    from metaaugment.registry import POLICIES, parse_options
    from metaaugment.run import distributed
    from metaaugment.run.loop import train

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be a positive integer (got {nproc_per_node})")
    launch = nproc_per_node > 1 and not distributed.launched_by_torchrun()
    config = _base_config(benchmark, learner, model, epochs, batch_size, lr, device, data_root,
                          eval_every, checkpoint_every, learner_set, model_set, ways=ways, shots=shots,
                          query_shots=query_shots, steps_per_epoch=steps_per_epoch, val_tasks=val_tasks,
                          test_tasks=test_tasks, image_size=image_size, val_size=val_size,
                          workers=workers, precision=precision, channels_last=channels_last, compile=compile)
    options = parse_options(POLICIES.get(policy).factory, policy_set or [])
    config = dataclasses.replace(config, policy=policy, policy_options=options, seed=seed,
                                 policy_from=None if policy_from is None else str(policy_from))
    out = out or Path("runs") / benchmark / policy / f"seed{seed}"
    if launch:  # bad options and folders are reported here, before any process starts
        check_launch(config, out, nproc_per_node, resume=resume, overwrite=overwrite)
        raise typer.Exit(launch_processes(nproc_per_node))
    results = train(config, out, resume=resume, overwrite=overwrite, console=err_console, show_progress=not quiet)
    if not distributed.is_main():  # under torchrun rank 0 reports
        return
    out_console.print(_results_table(f"{benchmark} · {policy} · seed {seed}", _result_rows(results, out)))


def check_launch(config: Any, out: Path, count: int, *, resume: bool, overwrite: bool) -> None:
    """The checks of a run that need no data, made once before `count` processes start."""
    from metaaugment.run.folder import RunDirectory
    from metaaugment.run.loop import check_global_batch, policy_and_learner

    config = config.resolve()
    policy_and_learner(config)
    check_global_batch(config, count)
    RunDirectory(out).check(config.to_dict(), resume=resume, overwrite=overwrite)


def launch_processes(count: int) -> int:
    """Rerun this command on `count` local processes through torch.distributed's launcher
    (torchrun --standalone, in this process); returns the processes' exit code."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    args, skip = [], False
    for arg in ARGV:  # this command's arguments without --nproc-per-node
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            args.append(arg)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # rank 0 reports errors itself
    try:
        torchrun(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={count}", "-m", "metaaugment.cli",
                                               *args]))
    except ChildFailedError as failure:
        return failure.get_first_failure()[1].exitcode or 1
    return 0


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
def compare(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name; see `metaaug list`.")],
    policies: Annotated[str, typer.Option("--policies",
                                          help="Comma-separated policy names, e.g. none,randaugment,mixup.")],
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    policy_set: Annotated[Optional[List[str]], typer.Option("--set", "-s",
                                                            help="POLICY.key=value (repeatable).")] = None,
    learner: LearnerOpt = None,
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = Path("data"),
    out: Annotated[Optional[Path], typer.Option(help="Comparison folder (default: runs/compare/BENCHMARK).")] = None,
    eval_every: EvalEveryOpt = 1,
    checkpoint_every: CheckpointOpt = 100,
    learner_set: LearnerSetOpt = None,
    model_set: ModelSetOpt = None,
    ways: WaysOpt = None,
    shots: ShotsOpt = None,
    query_shots: QueryOpt = None,
    steps_per_epoch: StepsOpt = None,
    val_tasks: ValTasksOpt = None,
    test_tasks: TestTasksOpt = None,
    image_size: ImageSizeOpt = None,
    val_size: ValSizeOpt = None,
    workers: WorkersOpt = 0,
    precision: PrecisionOpt = "32",
    channels_last: ChannelsLastOpt = False,
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run (or reuse finished) runs of several policies over seeds; print and save a table and plot."""
    from metaaugment.registry import POLICIES
    from metaaugment.run.compare import format_stat, run_comparison, summarize, write_comparison

    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--policies must be distinct comma-separated names (got {policies!r})")
    for name in names:
        POLICIES.get(name)  # fail before any training on a misspelt name
    seed_list = _parse_seeds(seeds)
    options = _parse_policy_sets(names, policy_set or [])
    config = _base_config(benchmark, learner, model, epochs, batch_size, lr, device, data_root,
                          eval_every, checkpoint_every, learner_set, model_set, ways=ways, shots=shots,
                          query_shots=query_shots, steps_per_epoch=steps_per_epoch, val_tasks=val_tasks,
                          test_tasks=test_tasks, image_size=image_size, val_size=val_size,
                          workers=workers, precision=precision, channels_last=channels_last, compile=compile)
    out = out or Path("runs") / "compare" / benchmark
    records = run_comparison(config, names, seed_list, out, options, console=err_console, show_progress=not quiet)
    paths = write_comparison(out, benchmark, records)
    table = Table(title=f"{benchmark}: mean ± std over seeds {', '.join(map(str, seed_list))}")
    table.add_column("policy", style="bold")
    summaries = summarize(records)
    for _, title, percent in summaries[0].metrics:
        table.add_column(title + (" (%)" if percent else ""), justify="right")
    for summary in summaries:
        table.add_row(summary.policy, *(format_stat(*summary.stat(m), p) for m, _, p in summary.metrics))
    out_console.print(table)
    out_console.print("wrote " + ", ".join(str(p) for p in paths.values()))


ARGV: list[str] = []  # the arguments `main` was called with (--nproc-per-node relaunches them)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: one line and exit code 2 for any user error."""
    from typer.exceptions import TyperException

    from metaaugment.run.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # training processes reuse freed host memory (no page fault per step)
    ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, prog_name="metaaug", standalone_mode=False)
    except UserError as error:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank raises the same error
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TyperException as error:  # click usage errors: unknown option, missing argument...
        err_console.print(f"[red]error:[/red] {error.format_message()} (see metaaug --help)", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        code = INTERRUPTED
    if code == INTERRUPTED:  # Typer turns Ctrl-C into a silent exit code 130
        err_console.print("interrupted: rerun the same command (`run`: with --resume) to continue from the last "
                          "checkpoint; a run stopped before its first checkpoint starts over", soft_wrap=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
