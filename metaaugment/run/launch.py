"""Where the runs of a comparison train: in this process, as local jobs, or as SLURM jobs.

`inline` trains them one after another here. `local` and `slurm` hand each unfinished
(variant, seed) run to submitit (pip install 'metaaugment[cluster]'), the field's launcher
for this (DeiT, DINO, DETR, ConvNeXt): `local` runs jobs as subprocesses of this machine,
at most `jobs` at a time; `slurm` submits one job array whose tasks train one run each.
Every job trains with `resume=True`, so a job that is interrupted, or a comparison
launched again, continues each run from its last checkpoint, and finished runs are reused.

The submitted jobs are listed in the comparison folder's jobs.json (run -> job id), so
launching the same comparison again waits for jobs still queued or running instead of
submitting them twice, and `compare --status` shows each run with its job's state.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console

from metaaugment.errors import UserError
from metaaugment.files import write_json
from metaaugment.run.config import RunConfig
from metaaugment.run.folder import RunDirectory

LAUNCHERS = ("inline", "local", "slurm")
JOBS_FILE, SUBMITIT_DIR = "jobs.json", ".submitit"
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN")


@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) run of a comparison: its name in the table, seed, config and folder."""

    name: str
    seed: int
    config: RunConfig
    path: Path

    @property
    def key(self) -> str:
        return f"{self.name}/seed{self.seed}"


@dataclass
class LaunchOptions:
    """How `local` and `slurm` jobs are sized. nproc_per_node > 1: one run on that many
    processes of a node (one GPU each on SLURM), through the torchrun environment."""

    launcher: str = "inline"
    jobs: int = 1  # local: jobs running at once
    nproc_per_node: int = 1
    wait: bool = True  # False: submit and return; launch again when the jobs are done
    poll_seconds: float | None = None  # how often job states are read; None: 0.2 s local, 5 s on SLURM
    slurm: dict[str, Any] = field(default_factory=dict)  # partition, gpus, cpus, time_min, account, parallelism

    def poll_interval(self) -> float:
        """Seconds between reads of the jobs' states: a local job's state is its process's (free
        to read, and a finished job frees its slot at once); SLURM's comes from sacct."""
        if self.poll_seconds is not None:
            return self.poll_seconds
        return 0.2 if self.launcher == "local" else 5.0


def train_job(config: dict[str, Any], path: str, threads: int | None = None) -> dict[str, Any]:
    """The body of one job: train (or resume, or reuse) one run, on `threads` CPU threads
    when given. Under SLURM with several tasks per job, the tasks form the run's process
    group through the torchrun variables."""
    import submitit
    import torch

    from metaaugment.run.host_memory import keep_freed_host_memory
    from metaaugment.run.loop import train

    if threads is not None:  # jobs sharing a machine: every job spinning on every core slowed all 10-50x
        torch.set_num_threads(threads)
    if submitit.JobEnvironment().num_tasks > 1:
        # every rank chooses its GPU from LOCAL_RANK, so all of them stay visible
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    keep_freed_host_memory()
    return train(RunConfig.from_dict(config), Path(path), resume=True, show_progress=False)


def executor_for(options: LaunchOptions, folder: Path) -> Any:
    """A submitit executor for `options.launcher` ("local" or "slurm"), sized by `options`."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"--launcher {options.launcher} needs submitit: pip install 'metaaugment[cluster]'") from None
    if options.launcher == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=int(options.slurm.get("time_min", 60 * 24 * 7)),
                                   tasks_per_node=options.nproc_per_node)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=str(folder))
    except RuntimeError as error:  # no srun on PATH: not a SLURM login node
        raise UserError(f"--launcher slurm: {' '.join(str(error).split())} (submitit needs srun and sbatch on "
                        f"PATH); --launcher local runs the jobs on this machine") from None
    s = options.slurm
    parameters: dict[str, Any] = {"time": int(s.get("time_min", 60 * 24)), "ntasks_per_node": options.nproc_per_node,
                                  "nodes": 1, "array_parallelism": int(s.get("parallelism", 64)),
                                  "job_name": "metaaug", "signal_delay_s": 120}
    if s.get("partition"):
        parameters["partition"] = s["partition"]
    if s.get("account"):
        parameters["account"] = s["account"]
    if s.get("gpus"):
        parameters["gpus_per_node"] = int(s["gpus"])
    if s.get("cpus"):
        parameters["cpus_per_task"] = int(s["cpus"])
    executor.update_parameters(**parameters)
    return executor


def read_jobs(out: Path) -> dict[str, dict[str, Any]]:
    """jobs.json of a comparison folder: run key -> {"job_id", "launcher"}."""
    path = Path(out) / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def job_state(out: Path, entry: dict[str, Any]) -> str:
    """The state of a recorded job as submitit sees it (SLURM's states; local jobs: RUNNING,
    FINISHED...), or "UNKNOWN" when it cannot be asked."""
    try:
        import submitit

        job_class = submitit.SlurmJob if entry["launcher"] == "slurm" else submitit.LocalJob
        return str(job_class(Path(out) / SUBMITIT_DIR, entry["job_id"]).state)
    except Exception:  # no submitit, no sacct, a job folder removed
        return "UNKNOWN"


def launch(runs: Sequence[PlannedRun], out: Path, options: LaunchOptions, console: Console,
           show_progress: bool = True) -> dict[str, dict[str, Any] | None]:
    """Train the unfinished `runs` with `options.launcher`; returns run key -> results (None
    for runs still training when `options.wait` is False)."""
    from metaaugment.run.loop import train

    results: dict[str, dict[str, Any] | None] = {}
    pending = []
    for run in runs:
        if RunDirectory(run.path).finished and options.launcher != "inline":
            results[run.key] = RunDirectory(run.path).read_results()
        else:
            pending.append(run)
    if options.launcher == "inline":
        for index, run in enumerate(pending, start=1):
            state = "reusing" if RunDirectory(run.path).finished else "running"
            console.print(f"[{index}/{len(pending)}] {state} {run.name} seed {run.seed} -> {run.path}")
            results[run.key] = train(run.config, run.path, resume=True, console=console, show_progress=show_progress)
        return results
    folder = Path(out) / SUBMITIT_DIR
    executor = executor_for(options, folder)
    recorded = read_jobs(out)
    # SLURM jobs outlive this command: one still queued or running is waited for, not
    # submitted twice. Local jobs end with it (Ctrl-C and SIGTERM cancel them).
    active = {run.key: recorded[run.key] for run in pending
              if options.launcher == "slurm" and recorded.get(run.key, {}).get("launcher") == "slurm"
              and job_state(out, recorded[run.key]) in ACTIVE_STATES}
    to_submit = [run for run in pending if run.key not in active]
    if active:
        console.print(f"waiting for {len(active)} job(s) still queued or running: {', '.join(sorted(active))}")
    jobs = _submit(executor, to_submit, options, out, console) if to_submit else {}
    jobs.update({key: _job(out, entry) for key, entry in active.items()})
    if not options.wait:
        console.print("submitted; run the same command again (or `compare --status`) when the jobs are done")
        return {**results, **{key: None for key in jobs}}
    return {**results, **_wait(jobs, console, options.poll_interval())}


def _job(out: Path, entry: dict[str, Any]) -> Any:
    import submitit

    job_class = submitit.SlurmJob if entry["launcher"] == "slurm" else submitit.LocalJob
    return job_class(Path(out) / SUBMITIT_DIR, entry["job_id"])


def _submit(executor: Any, runs: Sequence[PlannedRun], options: LaunchOptions, out: Path,
            console: Console) -> dict[str, Any]:
    """Submit one job per run (SLURM: one job array; local: `options.jobs` at a time, the
    rest as jobs finish) and record each job's id in jobs.json; returns run key -> job."""
    recorded = read_jobs(out)

    def record(key: str, job: Any) -> None:
        recorded[key] = {"job_id": str(job.job_id), "launcher": options.launcher}
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / JOBS_FILE, recorded)

    if options.launcher == "slurm":
        with executor.batch():
            submitted = [executor.submit(train_job, run.config.to_dict(), str(run.path)) for run in runs]
        jobs: dict[str, Any] = dict(zip((run.key for run in runs), submitted))
        for key, job in jobs.items():
            record(key, job)
    else:
        jobs = LocalJobs(executor, runs, options.jobs, record)
    console.print(f"submitting {len(runs)} {options.launcher} job(s); their logs: {Path(out) / SUBMITIT_DIR}")
    return jobs


class LocalJobs(dict):
    """Run key -> local job, started `limit` at a time: `fill` starts queued runs as slots free up."""

    def __init__(self, executor: Any, runs: Sequence[PlannedRun], limit: int, on_submit: Callable[[str, Any], None]):
        super().__init__()
        self.executor, self.limit, self.on_submit = executor, max(1, limit), on_submit
        # one job at a time keeps torch's own thread count, and with it inline's exact numbers
        self.threads = None if self.limit == 1 else max(1, (os.cpu_count() or 1) // self.limit)
        self.queued = list(runs)
        self.fill()

    def fill(self) -> None:
        running = sum(1 for job in self.values() if not job.done())
        while self.queued and running < self.limit:
            run = self.queued.pop(0)
            self[run.key] = self.executor.submit(train_job, run.config.to_dict(), str(run.path), self.threads)
            self.on_submit(run.key, self[run.key])
            running += 1


def _wait(jobs: dict[str, Any], console: Console, poll_seconds: float) -> dict[str, dict[str, Any]]:
    """Each job's results as it finishes; a failed job is one UserError naming its log. Ctrl-C
    (or SIGTERM) cancels the jobs still running: the same command resumes them."""
    results: dict[str, dict[str, Any]] = {}
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            for key, job in list(jobs.items()):
                if key not in results and job.done():
                    try:
                        results[key] = job.result()
                    except Exception as error:
                        raise UserError(f"the job of {key} failed ({type(error).__name__}); its log: "
                                        f"{job.paths.stderr}") from None
                    console.print(f"finished {key} (job {job.job_id}) [{len(results)}/{_total(jobs)}]")
            if isinstance(jobs, LocalJobs):
                jobs.fill()
            if len(results) == _total(jobs):
                return results
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        for key, job in jobs.items():
            if key not in results and not job.done():
                job.cancel(check=False)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _total(jobs: dict[str, Any]) -> int:
    return len(jobs) + len(getattr(jobs, "queued", []))


def status_rows(runs: Sequence[PlannedRun], out: Path) -> list[tuple[str, str, str]]:
    """(run, its folder's state, its job) for `compare --status`."""
    recorded = read_jobs(out)
    rows = []
    for run in runs:
        folder = RunDirectory(run.path)
        if folder.finished:
            state = "finished"
        elif folder.checkpoint_path.is_file():
            steps = [r.get("step", 0) for r in folder.read_metrics()]
            state = f"unfinished (step {max(steps, default=0)})"
        elif folder.config_path.is_file():
            state = "started"
        else:
            state = "not started"
        entry = recorded.get(run.key)
        job = f"{entry['launcher']} job {entry['job_id']}: {job_state(out, entry)}" if entry else "-"
        rows.append((run.key, state, job))
    return rows

