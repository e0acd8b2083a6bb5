"""One job of `metaaug compare --launcher local|slurm`: one run trained (or resumed, or
reused) in a process of its own, its progress written as plain lines to the job's log.

A local job is `python -m metaaugment.comparison.job SPEC [--trust-code] [--threads N]`, started by
the comparison (`run.launch.LocalJob`), which wrote SPEC, {"config": RunConfig fields, "out":
the run folder}, just before; under torchrun every rank runs it. A SLURM job calls `run_job`
(`run.launch.train_job`). Errors are one line in the log and exit code 2, as `metaaug run`'s.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def run_job(config: dict[str, Any], out: str, *, threads: int | None = None, trust_code: bool = False,
            show_progress: bool = True) -> None:
    """Train the run `config` (RunConfig fields) into `out` with resume=True, on `threads` CPU
    threads when given, its progress lines on stderr."""
    import torch
    from rich.console import Console

    from metaaugment.run.config import RunConfig
    from metaaugment.run.host_memory import keep_freed_host_memory
    from metaaugment.run.loop import train

    if threads is not None:  # jobs sharing a machine: every job spinning on every core slowed all 10-50x
        torch.set_num_threads(threads)
    keep_freed_host_memory()
    train(RunConfig.from_dict(config), Path(out), resume=True, console=Console(stderr=True),
          show_progress=show_progress, trust_code=trust_code)


def main(argv: list[str] | None = None) -> None:
    """The entry point of a local job: exit code 0 once the run is finished, 2 with one line for
    a user error, 130 when stopped."""
    from metaaugment.infra.errors import UserError
    from metaaugment.infra.files import load_json
    from metaaugment.infra.interrupt import finishing, stop_within
    from metaaugment.parallel.process_group import leave

    parser = argparse.ArgumentParser(prog="python -m metaaugment.comparison.job",
                                     description="Train one run of a comparison (started by metaaug compare).")
    parser.add_argument("spec", type=Path, help="the job's JSON file: {config, out}")
    parser.add_argument("--trust-code", action="store_true", help="as metaaug run --trust-code")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of this job")
    args = parser.parse_args(argv)
    if argv is None:  # the job's own process: Ctrl-C (compare's SIGINT) ends it in ~2 s
        stop_within(_print_stopped)
    try:
        spec = load_json(args.spec, "job file")
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict) or not isinstance(
                spec.get("out"), str):
            raise UserError(f"{args.spec} is not a job file of metaaug compare")
        run_job(spec["config"], spec["out"], threads=args.threads, trust_code=args.trust_code)
        leave()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if finishing():
            _print_stopped()
        sys.exit(130)


def _print_stopped() -> None:
    print("stopped: the comparison's next launch resumes this run from its last checkpoint", file=sys.stderr,
          flush=True)


if __name__ == "__main__":
    main()
