"""Where the runs of a comparison train: in this process, as local jobs, or as SLURM jobs.

`inline` trains them one after another here (on `--nproc-per-node` N > 1, each as a run of N
processes started here, one after another: a local job at a time). `local` starts each unfinished (variant, seed)
run as a child process of this command (`python -m metaaugment.comparison.job`, through torchrun
for `--nproc-per-node` > 1), at most `jobs` at a time, each in its own session with its
output in a log of its own (`.jobs/VARIANT-seedK.log` in the comparison folder): Ctrl-C
reaches this command alone, which then stops its jobs (SIGINT, then SIGKILL after a grace
period) and prints one line. `slurm` submits one job array through submitit (pip install
'metaaugment[cluster]'), the field's SLURM launcher (DeiT, DINO, DETR, ConvNeXt), whose
tasks train one run each. Every job trains with `resume=True`, so a job that is
interrupted, or a comparison launched again, continues each run from its last checkpoint,
and finished runs are reused.

The submitted jobs are listed in the comparison folder's jobs.json (run -> job id), so
launching the same comparison again waits for SLURM jobs still queued or running instead of
submitting them twice, and `compare --status` shows each run with its job's state.

Nothing is unpickled from a job's folder: a job's outcome is its run folder's results.json
(our own JSON, checked), and its state is its process's (local jobs, children of this
command) or SLURM's accounting (`sacct`, through submitit's public `state`); jobs.json is
checked against its schema before any id in it is used.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console

from metaaugment.infra.dependencies import require
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import load_json, open_regular, refuse_linked_folders, write_json
from metaaugment.infra.schema import short
from metaaugment.parallel.launcher import start_job
from metaaugment.run.config import RunConfig
from metaaugment.run.folder import RunDirectory, folder_name
from metaaugment.run.progress import duration

LAUNCHERS = ("inline", "local", "slurm")
JOBS_FILE, SUBMITIT_DIR, LOCAL_JOBS_DIR = "jobs.json", ".submitit", ".jobs"
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN")
JOB_ID = re.compile(r"^[0-9]{1,20}(_[0-9]{1,10})?$")  # a SLURM job (array task) id or a local job's PID
STOP_GRACE_SECONDS = 30.0  # a stopped local job's time to write its checkpoint and exit before SIGKILL


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
    progress_seconds: float = 30.0  # how often each running job's last progress line is shown
    slurm: dict[str, Any] = field(default_factory=dict)  # partition, gpus, cpus, time_min, account, parallelism

    def poll_interval(self) -> float:
        """Seconds between reads of the jobs' states: a local job's state is its process's (free
        to read, and a finished job frees its slot at once); SLURM's comes from sacct."""
        if self.poll_seconds is not None:
            return self.poll_seconds
        return 0.2 if self.launcher == "local" else 5.0


def train_job(config: dict[str, Any], path: str, threads: int | None = None, trust_code: bool = False) -> None:
    """The body of one SLURM job: train (or resume, or reuse) one run, on `threads` CPU threads
    when given. With several tasks per job, the tasks form the run's process group through the
    torchrun variables. Its outcome is the run folder's results.json (nothing is returned
    through submitit's result pickle)."""
    import submitit

    from metaaugment.comparison.job import run_job

    if submitit.JobEnvironment().num_tasks > 1:
        # every rank chooses its GPU from LOCAL_RANK, so all of them stay visible
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    run_job(config, path, threads=threads, trust_code=trust_code, show_progress=True)


def job_file_stem(key: str) -> str:
    """The name (without suffix) of a local job's spec and log files for run `key` (VARIANT/seedK)."""
    return folder_name(key.replace("/", "-"))


class LocalJob:
    """One run trained by a child process of this command, in a session of its own (the
    terminal's Ctrl-C reaches only this command, which stops the job), its stdout and stderr
    in `log`. `done`, `state`, `cancel` and `job_id` as submitit's jobs have them."""

    def __init__(self, run: PlannedRun, folder: Path, nproc_per_node: int, threads: int | None, trust_code: bool):
        refuse_linked_folders(folder.parent, folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = job_file_stem(run.key)
        self.log = folder / f"{stem}.log"
        spec = folder / f"{stem}.json"
        write_json(spec, {"config": run.config.to_dict(), "out": str(run.path)})
        args = [str(spec), *(["--trust-code"] if trust_code else []), *(["--threads", str(threads)] if threads else [])]
        self.process = start_job("metaaugment.comparison.job", args, self.log, nproc_per_node)
        self.job_id = str(self.process.pid)

    def done(self) -> bool:
        return self.process.poll() is not None

    @property
    def state(self) -> str:
        code = self.process.poll()
        return "RUNNING" if code is None else "FINISHED" if code == 0 else f"FAILED (exit code {code})"

    def cancel(self, check: bool = False) -> None:
        """Stop the job's processes with SIGINT: each exits as after Ctrl-C, its last checkpoint kept."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def log_path(job: Any) -> Path:
    """Where a job's output goes: a local job's log, a SLURM job's stderr file."""
    return job.log if isinstance(job, LocalJob) else Path(job.paths.stderr)


def slurm_executor(options: LaunchOptions, folder: Path) -> Any:
    """A submitit SLURM executor sized by `options`."""
    submitit = require("submitit", "--launcher slurm")
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


def read_jobs(out: Path) -> dict[str, dict[str, str]]:
    """jobs.json of a comparison folder: run key -> {"job_id", "launcher"}, checked (a
    UserError naming the file when it is damaged)."""
    path = Path(out) / JOBS_FILE
    if not os.path.lexists(path):
        return {}
    jobs = load_json(path, "record of the comparison's jobs")
    valid = isinstance(jobs, dict) and all(
        isinstance(key, str) and isinstance(entry, dict) and set(entry) == {"job_id", "launcher"}
        and isinstance(entry["job_id"], str) and JOB_ID.match(entry["job_id"]) is not None
        and entry["launcher"] in ("local", "slurm") for key, entry in jobs.items())
    if not valid:
        raise UserError(f"{path} is damaged (it must map each run to {{\"job_id\": digits, \"launcher\": local or "
                        f"slurm}}; got {short(jobs)}); remove it and launch the comparison again")
    return jobs


def job_state(out: Path, entry: dict[str, str]) -> str:
    """The state of a recorded job: SLURM's (from sacct, through submitit), or for a local job
    of an earlier command "ended" (local jobs end with the command that started them);
    "UNKNOWN" when it cannot be asked."""
    if entry["launcher"] != "slurm":
        return "ended"
    try:
        import submitit

        return str(submitit.SlurmJob(Path(out) / SUBMITIT_DIR, entry["job_id"]).state)
    except Exception:  # no submitit, no sacct
        return "UNKNOWN"


def launch(runs: Sequence[PlannedRun], out: Path, options: LaunchOptions, console: Console,
           show_progress: bool = True, trust_code: bool = False) -> dict[str, dict[str, Any] | None]:
    """Train the unfinished `runs` with `options.launcher`; returns run key -> results (None
    for runs still training when `options.wait` is False). `trust_code` reaches `train`
    (a --policy-from folder naming code)."""
    from metaaugment.run.loop import train

    results: dict[str, dict[str, Any] | None] = {}
    pending = []
    for run in runs:  # a finished run is reused here, whatever the launcher: no job starts for it
        if RunDirectory(run.path).finished:
            results[run.key] = RunDirectory(run.path).read_results()
            console.print(f"reusing {run.name} seed {run.seed} (finished) -> {run.path}", highlight=False)
        else:
            pending.append(run)
    if options.launcher == "inline" and options.nproc_per_node == 1:
        overall = OverallProgress(planned_costs(pending))
        for index, run in enumerate(pending, start=1):
            console.print(f"[{index}/{len(pending)}] running {run.name} seed {run.seed} -> {run.path}"
                          f"{overall.summary()}", highlight=False)
            started = time.monotonic()
            results[run.key] = train(run.config, run.path, resume=True, console=console, show_progress=show_progress,
                                     trust_code=trust_code)
            overall.finished(run.key, time.monotonic() - started)
        return results
    recorded = read_jobs(out)
    if not pending:
        return results
    if options.launcher in ("local", "inline"):  # inline on N processes: each run a local job, one at a time
        if options.launcher == "inline":
            options = dataclasses.replace(options, jobs=1)
        jobs: dict[str, Any] = LocalJobs(pending, Path(out) / LOCAL_JOBS_DIR, options,
                                         lambda key, job: _record(out, recorded, key, job, "local"), trust_code)
        console.print(f"starting {len(pending)} local job(s), {jobs.limit} at a time, {options.nproc_per_node} "
                      f"process(es) each; their logs: {Path(out) / LOCAL_JOBS_DIR}")
    else:
        executor = slurm_executor(options, Path(out) / SUBMITIT_DIR)
        # SLURM jobs outlive this command: one still queued or running is waited for, not submitted twice
        active = {run.key: recorded[run.key] for run in pending if recorded.get(run.key, {}).get("launcher") == "slurm"
                  and job_state(out, recorded[run.key]) in ACTIVE_STATES}
        to_submit = [run for run in pending if run.key not in active]
        if active:
            console.print(f"waiting for {len(active)} job(s) still queued or running: {', '.join(sorted(active))}")
        jobs = _submit_slurm(executor, to_submit, out, recorded, trust_code) if to_submit else {}
        if to_submit:
            console.print(f"submitted {len(to_submit)} SLURM job(s); their logs: {Path(out) / SUBMITIT_DIR}")
        jobs.update({key: _slurm_job(out, entry) for key, entry in active.items()})
    if not options.wait:
        console.print("submitted; run the same command again (or `compare --status`) when the jobs are done")
        return {**results, **{key: None for key in jobs}}
    folders = {run.key: RunDirectory(run.path) for run in pending}
    overall = OverallProgress(planned_costs(pending), parallel=getattr(jobs, "limit", len(jobs)))
    return {**results, **_wait(jobs, folders, console, overall, options.poll_interval(), options.progress_seconds)}


def planned_costs(runs: Sequence[PlannedRun]) -> dict[str, tuple[str, float]]:
    """Run key -> (variant name, expected cost) for `OverallProgress`."""
    return {run.key: (run.name, expected_cost(run.config)) for run in runs}


def _record(out: Path, recorded: dict[str, dict[str, str]], key: str, job: Any, launcher: str) -> None:
    """Add a submitted job to jobs.json."""
    recorded[key] = {"job_id": str(job.job_id), "launcher": launcher}
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / JOBS_FILE, recorded)


def _slurm_job(out: Path, entry: dict[str, str]) -> Any:
    import submitit

    return submitit.SlurmJob(Path(out) / SUBMITIT_DIR, entry["job_id"])


def _submit_slurm(executor: Any, runs: Sequence[PlannedRun], out: Path, recorded: dict[str, dict[str, str]],
                  trust_code: bool) -> dict[str, Any]:
    """Submit one job array, a task per run, and record each task's id in jobs.json."""
    with executor.batch():
        submitted = [executor.submit(train_job, run.config.to_dict(), str(run.path), None, trust_code)
                     for run in runs]
    jobs: dict[str, Any] = dict(zip((run.key for run in runs), submitted))
    for key, job in jobs.items():
        _record(out, recorded, key, job, "slurm")
    return jobs


class LocalJobs(dict):
    """Run key -> LocalJob, started `options.jobs` at a time: `fill` starts queued runs as slots
    free up."""

    def __init__(self, runs: Sequence[PlannedRun], folder: Path, options: LaunchOptions,
                 on_start: Callable[[str, Any], None], trust_code: bool = False):
        super().__init__()
        self.folder, self.options, self.on_start, self.trust_code = folder, options, on_start, trust_code
        self.limit = max(1, options.jobs)
        # one job at a time keeps torch's own thread count, and with it inline's exact numbers;
        # jobs sharing a machine each take their share (every job spinning on every core slowed all 10-50x)
        cores = os.cpu_count() or 1
        self.threads = None if self.limit == 1 and options.nproc_per_node == 1 else max(
            1, cores // (self.limit * options.nproc_per_node))
        self.queued = list(runs)
        self.fill()

    def fill(self) -> None:
        running = sum(1 for job in self.values() if not job.done())
        while self.queued and running < self.limit:
            run = self.queued.pop(0)
            self[run.key] = LocalJob(run, self.folder, self.options.nproc_per_node, self.threads, self.trust_code)
            self.on_start(run.key, self[run.key])
            running += 1


class OverallProgress:
    """A comparison's progress over the runs it trains: runs done of the total, elapsed, and an
    ETA that weighs each remaining run by its cost. A run's cost is measured once a run of the
    same variant has finished (its seconds per epoch), else expected: the seconds per unit of
    expected cost (`expected_cost`: epochs x the policy's relative cost) of the runs done so
    far. `parallel` runs train at a time."""

    def __init__(self, runs: dict[str, tuple[str, float]], parallel: int = 1):
        self.remaining = dict(runs)  # run key -> (variant name, expected cost)
        self.total, self.done, self.parallel, self.started = len(runs), 0, max(1, parallel), time.monotonic()
        self.seconds_per_cost: dict[str, list[float]] = {}  # variant -> its finished runs' seconds per cost

    def finished(self, key: str, seconds: float) -> None:
        """Count run `key` done, which trained for `seconds`."""
        variant, cost = self.remaining.pop(key)
        self.done += 1
        self.seconds_per_cost.setdefault(variant, []).append(seconds / max(cost, 1e-9))

    def eta_s(self) -> float | None:
        """Seconds until the remaining runs are done; None before any run finished."""
        if not self.seconds_per_cost:
            return None
        measured = [rate for rates in self.seconds_per_cost.values() for rate in rates]
        overall = sum(measured) / len(measured)
        total = 0.0
        for variant, cost in self.remaining.values():
            rates = self.seconds_per_cost.get(variant)
            total += cost * (sum(rates) / len(rates) if rates else overall)
        return total / self.parallel

    def summary(self) -> str:
        """' · comparison 3/9 runs done, 0:04:10 elapsed, eta 0:08:20' ('' before any run ends)."""
        if not self.done:
            return ""
        line = f" · comparison {self.done}/{self.total} runs done, {duration(time.monotonic() - self.started)} elapsed"
        eta = self.eta_s()
        if eta is not None and self.remaining:
            line += f", eta {duration(eta)}"
        return line


def expected_cost(config: Any) -> float:
    """A run's expected training time in relative units: its epochs x its policy's
    `relative_cost` (a step's time against no augmentation's; 1 when the policy says nothing)."""
    from metaaugment.registry import POLICIES

    try:
        factory = POLICIES.get(config.policy).factory  # checked by plan_comparison already
    except UserError:
        factory = None
    relative = getattr(factory, "relative_cost", 1.0)
    return float(config.epochs or 1) * (float(relative) if isinstance(relative, (int, float)) and relative > 0 else 1.0)


def last_line(path: Path, tail_bytes: int = 8192) -> str | None:
    """The last non-empty line of a log file (progress lines end in newlines; a bar's carriage
    returns split lines too), or None when it has none or cannot be read."""
    try:
        with os.fdopen(open_regular(path, "job log"), "rb") as log:  # a FIFO in its place never blocks
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - tail_bytes))
            text = log.read().decode("utf-8", errors="replace")
    except (OSError, UserError):
        return None
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _show_progress(jobs: dict[str, Any], results: dict[str, Any], console: Console) -> None:
    """Each running job's last log line."""
    for key, job in jobs.items():
        if key not in results and not job.done():
            line = last_line(log_path(job))
            if line:
                console.print(f"  {key} (job {job.job_id}): {line}", highlight=False, markup=False, soft_wrap=True)


def _wait(jobs: dict[str, Any], folders: dict[str, RunDirectory], console: Console, overall: OverallProgress,
          poll_seconds: float, progress_seconds: float = 30.0) -> dict[str, dict[str, Any]]:
    """Each job's results, read from its run folder as the job ends; a job that ends without
    finishing its run is one UserError naming its log. Every `progress_seconds` each running
    job's last progress line (its log's) is shown, and the comparison's progress with each
    finished job. Ctrl-C (or SIGTERM) stops the jobs still running (local jobs: SIGINT, then
    SIGKILL after STOP_GRACE_SECONDS; SLURM jobs: scancel): the same command resumes them."""
    results: dict[str, dict[str, Any]] = {}
    shown = time.monotonic()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            for key, job in list(jobs.items()):
                if key not in results and job.done():
                    if not folders[key].finished:
                        raise UserError(f"the job of {key} ended without finishing its run ({job.state}); its log: "
                                        f"{log_path(job)}")
                    results[key] = folders[key].read_results()
                    overall.finished(key, float(results[key].get("wall_time_s", 0.0)))
                    console.print(f"finished {key} (job {job.job_id}){overall.summary()}", highlight=False)
            if isinstance(jobs, LocalJobs):
                jobs.fill()
            if len(results) == _total(jobs):
                return results
            if time.monotonic() - shown >= progress_seconds:
                _show_progress(jobs, results, console)
                shown = time.monotonic()
            time.sleep(poll_seconds)
    except (KeyboardInterrupt, UserError):
        _stop(jobs, results)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(jobs: dict[str, Any], finished: dict[str, Any]) -> None:
    """Stop every job still running: a signal to each, then (local jobs) SIGKILL to those still
    alive after STOP_GRACE_SECONDS. A second Ctrl-C meanwhile kills them at once."""
    running = [job for key, job in jobs.items() if key not in finished and not job.done()]
    for job in running:
        job.cancel(check=False)
    local = [job for job in running if isinstance(job, LocalJob)]
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    try:
        while any(not job.done() for job in local) and time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    for job in local:
        job.kill()


def _total(jobs: dict[str, Any]) -> int:
    return len(jobs) + len(getattr(jobs, "queued", []))


def _recorded_log(out: Path, key: str, entry: dict[str, str]) -> Path | None:
    """The log of the job recorded for run `key` in jobs.json: a local job's, a SLURM job's stderr."""
    if entry.get("launcher") == "local":
        return Path(out) / LOCAL_JOBS_DIR / f"{job_file_stem(key)}.log"
    try:
        import submitit

        return Path(submitit.SlurmJob(Path(out) / SUBMITIT_DIR, entry["job_id"]).paths.stderr)
    except Exception:  # no submitit
        return None


def status_rows(runs: Sequence[PlannedRun], out: Path) -> list[tuple[str, str, str, str]]:
    """(run, its folder's state, its job, the job log's last line) for `compare --status`."""
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
        log = _recorded_log(out, run.key, entry) if entry else None
        rows.append((run.key, state, job, (last_line(log) if log is not None else None) or "-"))
    return rows

