"""The one module that starts processes: a run on N local processes through torchrun, in this
process (`run_on_local_processes`, `metaaug run --nproc-per-node N`), or a job of a comparison
as a child process with its output in a log (`start_job`, through torchrun when N > 1).
SLURM jobs are submitit's (metaaugment.comparison.launch)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from metaaugment.infra.files import open_for_append


def torchrun_arguments(count: int, module: str, args: list[str]) -> list[str]:
    """torchrun's arguments that run `python -m module ARGS` on `count` local processes."""
    return ["--standalone", f"--nproc-per-node={count}", "-m", module, *args]


def run_on_local_processes(count: int, module: str, args: list[str]) -> int:
    """Run `python -m module ARGS` on `count` local processes through torch.distributed's
    launcher (torchrun --standalone, in this process); returns the processes' exit code.
    Each process gets an equal share of the cores unless OMP_NUM_THREADS says otherwise."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # rank 0 reports errors itself
    try:
        torchrun(get_args_parser().parse_args(torchrun_arguments(count, module, args)))
    except ChildFailedError as failure:
        return failure.get_first_failure()[1].exitcode or 1
    return 0


def start_job(module: str, args: list[str], log: Path, processes: int = 1) -> subprocess.Popen:
    """`python -m module ARGS` as a child process (on `processes` local processes through
    torchrun when more than one), in a session of its own so that the terminal's Ctrl-C
    reaches only its parent, with stdout and stderr appended to `log`."""
    command = ["-m", module, *args]
    if processes > 1:  # the run's processes, as `metaaug run --nproc-per-node` starts them
        command = ["-m", "torch.distributed.run", *torchrun_arguments(processes, module, args)]
    with os.fdopen(open_for_append(log, "job log"), "ab") as output:  # never through a link
        return subprocess.Popen([sys.executable, *command], stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
